"""Streamed text in a node's log: one stamped block, masked whole, and shown while it grows
without the beginning of a secret that has arrived only in part."""

from __future__ import annotations

import re

from nexusflow_kernel.masking import Masker
from nexusflow_kernel.nodes import NodeLog

SECRET = "sk-live-0123456789"


def lines(log: NodeLog) -> list[str]:
    return [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in log.text().splitlines()]


def test_pieces_form_one_block_between_lines() -> None:
    log = NodeLog()
    log("asking")
    for piece in ["Hel", "lo", " wor", "ld\nsecond", " line"]:
        log.stream(piece)
    assert lines(log) == ["asking", "Hello world", "second line"]
    log("done")
    assert lines(log) == ["asking", "Hello world", "second line", "done"]


def test_a_secret_cut_across_pieces_is_masked_whole() -> None:
    masker = Masker([SECRET])
    log = NodeLog(mask=masker.text)
    for piece in ["key is sk-li", "ve-01234", "56789 ok"]:
        log.stream(piece)
    assert SECRET not in log.text() and "key is *** ok" in log.text()
    log.end_stream()
    assert lines(log) == ["key is *** ok"]


def test_the_live_hook_is_told_of_each_write() -> None:
    log = NodeLog()
    seen: list[str] = []
    log.live = lambda lg: seen.append(lg.text())
    log("a")
    log.stream("b")
    log.stream("c")
    assert len(seen) == 3
    assert seen[0].endswith(" a") and seen[1].endswith(" b") and seen[2].endswith(" bc")
    assert seen[2].count("\n") == 1  # "a", then the open block "bc"


def test_streamed_text_counts_against_the_log_limit() -> None:
    log = NodeLog(limit=100)
    for _ in range(50):
        log.stream("0123456789")
    log.end_stream()
    assert len(log.text()) <= 130
    log("more")
    assert "[log cut: over the size limit]" in log.text()


def test_settled_holds_back_the_start_of_a_secret() -> None:
    m = Masker([SECRET])
    assert m.settled("token: sk-live-01") == "token: "
    assert m.settled("token: " + SECRET) == "token: ***"
    assert m.settled("token: " + SECRET + " and s") == "token: *** and "
    assert m.settled("nothing secret here") == "nothing secret here"
    # a JSON-escaped or URL-encoded form arriving in part is held back too
    odd = 'tok"en/with space'
    m2 = Masker([odd])
    assert m2.settled('{"v": "tok\\"en/wi') == '{"v": "'
    assert m2.settled("q=tok%22en%2Fwi") == "q="
    assert Masker().settled("plain") == "plain"

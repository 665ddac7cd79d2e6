"""The one masking path (issue #13, finding 4): the forms it catches, and those it cannot."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import httpx

from nexusflow_kernel.masking import Masker, RunSecrets, secret_refs
from nexusflow_kernel.nodes import NodeLog
from nexusflow_kernel.runstate.runplan import RunPlan

VALUE = 'pä"ss\\wörd /&=+~'


def test_every_recorded_form_of_a_value_is_masked() -> None:
    m = Masker([VALUE])
    texts = [
        VALUE,
        json.dumps({"k": VALUE}),                          # JSON, ASCII-escaped
        json.dumps({"k": VALUE}, ensure_ascii=False),      # JSON, raw non-ASCII
        repr({"k": VALUE}),                                # a dict in an error message
        f"invalid literal for int() with base 10: {VALUE!r}",
        ascii(VALUE),
        repr(VALUE.encode()),                              # bytes in a message
        json.dumps(repr(VALUE)), repr(json.dumps(VALUE)),  # escaped twice
        quote(VALUE, safe=""), quote_plus(VALUE), quote(VALUE, safe="").lower(),
        str(httpx.URL("http://h/x").copy_merge_params({"t": VALUE})),
        str(httpx.URL("http://h/x?t=" + VALUE)),           # the partial encoding of a URL
    ]
    for text in texts:
        masked = m.text(text)
        assert "***" in masked, text
        assert "ss" not in masked.replace("***", ""), (text, masked)


def test_values_keys_numbers_and_overlaps() -> None:
    m = Masker(["abc123", "abc123-long", "x", "4242"])
    assert m.value({"abc123": ["1 abc123-long 2"], "n": 4242, "f": 4242.5, "b": True}) == {
        "***": ["1 *** 2"], "n": "***", "f": 4242.5, "b": True}
    assert m.text("x marks the spot") == "x marks the spot"  # too short to mask
    assert Masker().text("abc123") == "abc123" and not Masker()
    assert m.with_values(["abc123"]) is m
    assert m.with_values(["zzz999"]).text("zzz999 abc123") == "*** ***"


def test_what_masking_cannot_catch() -> None:
    """Transformations of a value are not the value: documented in docs/security.md."""
    m = Masker([VALUE])
    for transformed in (base64.b64encode(VALUE.encode()).decode(), VALUE.upper(),
                        VALUE[:5], "\n".join(VALUE)):
        assert m.text(transformed) == transformed


def test_a_multi_line_value_is_masked_whole_in_a_log() -> None:
    pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"
    log = NodeLog(mask=Masker([pem]).text)
    log.write(f"loaded {pem} ok")
    assert "MIIBOgIBAAJBAK" not in log.text() and "***" in log.text()


def test_run_secrets_resolve_each_run_once_and_skip_what_it_may_not_read() -> None:
    calls: list[tuple[str, str]] = []
    values = {"A": "alpha-secret", "B": None}

    def resolve(name: str, run_id: str) -> str | None:
        calls.append((name, run_id))
        return values[name]

    cache = RunSecrets(resolve, ttl_s=60)
    m = cache.masker("r1", {"A", "B"})
    assert m.text("alpha-secret") == "***" and m.values == {"alpha-secret"}
    assert cache.masker("r1", {"A", "B"}) is m
    assert calls == [("A", "r1"), ("B", "r1")]
    assert not cache.masker("r2", set())
    expired = RunSecrets(resolve, ttl_s=0)
    expired.masker("r1", {"A"})
    expired.masker("r1", {"A"})
    assert calls[-2:] == [("A", "r1"), ("A", "r1")]


def test_a_plan_knows_every_secret_its_nodes_may_resolve() -> None:
    graph = {"nodes": [
        {"id": "h", "type": "http", "config": {"url": "http://x/", "headers": {
            "A": {"$secret": "TOKEN"}}, "query": {"k": [{"$secret": "LIST"}]}}},
        {"id": "c", "type": "code", "config": {"language": "python", "source": "1",
                                               "secrets": ["ENV_ONLY"]}},
        {"id": "t", "type": "transform", "config": {"expression": "1"}},
        {"id": "u", "type": "not-installed", "config": {"x": {"$secret": "UNKNOWN_TYPE"}}},
    ]}
    plan = RunPlan.build(graph, {"order": ["h", "c", "t", "u"],
                                 "parents": {n: [] for n in "hctu"},
                                 "children": {n: [] for n in "hctu"}})
    assert plan.secret_names == {"TOKEN", "LIST", "ENV_ONLY", "UNKNOWN_TYPE"}
    assert secret_refs({"$secret": "X", "other": 1}) == set()  # not a reference

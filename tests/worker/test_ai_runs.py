"""The ai node on real workers, PostgreSQL and Redis, against the fake OpenAI-compatible server:
the answer growing in the log while the node runs, Retry-After honoured by the node's retry
policy, a non-retryable 4xx failing at once, the node's timeout, and the API key absent from
every output, error, log, event, Redis key and table row even when the server echoes it."""

from __future__ import annotations

import json
import time

import psycopg
import redis
from aifake import FakeModel, Reply
from nftest import flow, node, wait_run

from nexusflow_kernel.secrets import SecretStore

KEY = "sk-proj-Zq8\"v/9 &x=+41"  # JSON-, repr- and URL-escaped forms all differ


def ai(id: str, base_url: str, **config) -> dict:
    return node(id, "ai", base_url=base_url, model="m", **config)


def test_the_answer_grows_in_the_log_while_the_node_runs(engine, workers) -> None:
    words = [f" w{i}" for i in range(14)]
    with FakeModel() as fake:
        fake.reply(Reply(pieces=["Start:", *words], delay_s=0.25))
        workers.start(1)
        run_id = engine.start_run(flow(ai("ask", fake.url, prompt="Count."), name="stream"))
        partial: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run = engine.get_run(run_id)
            if run["status"] != "running":
                break
            attempts = engine.node_attempts(run_id, "ask")
            if attempts and attempts[-1]["status"] == "running":
                log = attempts[-1]["log"]
                if "Start:" in log and (not partial or log != partial[-1]):
                    partial.append(log)
            time.sleep(0.1)
        run = wait_run(engine, run_id)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["ask"]["output"]["text"] == "Start:" + "".join(words)
    # Several growing views of the answer were readable before the node ended.
    assert len(partial) >= 3, partial
    lengths = [len(p) for p in partial]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert words[-1] not in partial[0]  # seen before the whole answer was there
    (attempt,) = engine.node_attempts(run_id, "ask")
    assert attempt["status"] == "succeeded" and "".join(words).strip() in attempt["log"]


def test_retry_after_is_honoured_and_a_4xx_fails_at_once(engine, workers) -> None:
    with FakeModel() as fake:
        fake.reply(Reply.rate_limited(retry_after=2), Reply("second time lucky"))
        workers.start(1)
        retry = {"max_attempts": 3, "backoff_s": 0.1}
        run_id = engine.start_run(flow(ai("ask", fake.url, prompt="x", stream=False,
                                          retry=retry), name="limited"))
        run = wait_run(engine, run_id)
        assert run["status"] == "succeeded", run
        first, second = fake.requests
        assert second.at - first.at >= 1.9  # Retry-After: 2, not the 0.1 s backoff
        attempts = engine.node_attempts(run_id, "ask")
        assert [a["status"] for a in attempts] == ["failed", "succeeded"]
        assert "HTTP 429" in attempts[0]["error"] and "retry after 2 s" in attempts[0]["error"]

        fake.requests.clear()
        fake.reply(Reply(status=400, body=b'{"error": {"message": "model m does not exist"}}'))
        run_id = engine.start_run(flow(ai("ask", fake.url, prompt="x", stream=False,
                                          retry=retry), name="unknown-model"))
        run = wait_run(engine, run_id)
    assert run["status"] == "failed"
    assert len(fake.requests) == 1 and "model m does not exist" in run["nodes"]["ask"]["error"]


def test_the_nodes_timeout_stops_a_slow_answer(engine, workers) -> None:
    with FakeModel() as fake:
        fake.reply(Reply(pieces=["x"] * 40, delay_s=0.25))
        workers.start(1)
        run_id = engine.start_run(flow(ai("ask", fake.url, prompt="x", timeout_s=1.5),
                                       name="slow"))
        run = wait_run(engine, run_id)
    assert run["status"] == "failed"
    assert "timed out" in run["nodes"]["ask"]["error"]
    assert run["nodes"]["ask"]["duration_ms"] < 5000  # not the 10 s the answer would take


def forms() -> set[str]:
    from urllib.parse import quote, quote_plus

    return {KEY, json.dumps(KEY)[1:-1], repr(KEY)[1:-1], quote(KEY, safe=""), quote_plus(KEY),
            json.dumps(repr(KEY))[1:-1], repr(json.dumps(KEY))[1:-1]}


def leaks(text: str) -> list[str]:
    return sorted(f for f in forms() if f in text)


def test_the_key_never_reaches_the_record(engine, settings, workers, database_url) -> None:
    """The server echoes the key in a 401 body (B), in its streamed answer (A) and in a plain
    answer (C): everything a run records and every read comes out masked."""
    SecretStore(settings).set("AI_KEY", KEY)
    secret = {"$secret": "AI_KEY"}

    def echo(req):
        key = req.headers.get("Authorization", "").removeprefix("Bearer ")
        return Reply(f"I was sent {key} as the key.", pieces=["I was sent ", key[:7], key[7:],
                                                                " as the key."])

    with FakeModel() as fake:
        fake.fallback = echo
        fake.reply(Reply(pieces=["I was sent ", KEY[:9], KEY[9:], "."], delay_s=0.3),
                   Reply(echo_key=True, status=401))
        workers.start(1)
        doc = flow(ai("A", fake.url, prompt="key?", api_key=secret),
                   ai("B", fake.url, prompt="key?", api_key=secret),
                   ai("C", fake.url, prompt="again: {{ inputs['A']['text'] }}", api_key=secret,
                      stream=False),
                   edges=[("A", "B"), ("A", "C")], name="keyleak")
        # B runs second: the scripted 401 goes to it (one worker, document order).
        run_id = engine.start_run(doc)
        run = wait_run(engine, run_id, timeout=90)
        sent = [r.headers.get("Authorization") for r in fake.requests]
    assert sent and all(s == f"Bearer {KEY}" for s in sent), sent  # the key was really sent
    nodes = run["nodes"]
    assert {k: v["state"] for k, v in nodes.items()} == {
        "A": "succeeded", "B": "failed", "C": "succeeded"}, run
    assert nodes["A"]["output"]["text"] == "I was sent ***."
    assert "Incorrect API key provided: Bearer ***" in nodes["B"]["error"]
    assert nodes["C"]["output"]["text"] == "I was sent *** as the key."
    # C's prompt held A's (masked) output: what the server got was masked already
    assert "***" in fake.requests[-1].body["messages"][-1]["content"]

    attempts = {n: engine.node_attempts(run_id, n) for n in nodes}
    reads = json.dumps(engine.get_run(run_id)) + json.dumps(attempts) + json.dumps(
        engine.read_events(run_id)) + json.dumps(engine.list_runs())
    assert leaks(reads) == [], leaks(reads)
    r = redis.Redis.from_url(engine.settings.redis_url)
    keys = list(r.scan_iter())
    live = [k for k in keys if b"live-log" in k]
    assert live, keys  # A's log was published while it streamed: checked like the rest
    for key in keys:
        dump = {"string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1),
                "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1),
                "stream": r.xrange}.get(r.type(key).decode(), lambda k: b"")(key)
        assert leaks(repr(dump)) == [], (key, dump)
    with psycopg.connect(database_url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")]
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                assert leaks(row) == [], (table, row[:300])

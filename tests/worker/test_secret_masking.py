"""Issue #13, finding 4, and reliability-security S9: no secret value reaches the record.

One run on real workers, PostgreSQL and Redis, with a secret that has a quote, a backslash, a
slash, a space, ``&``, ``=`` and ``+`` (so its raw, JSON-escaped, repr and URL-encoded forms all
differ; it must still be a valid HTTP header value, so no non-ASCII letter here: the unit tests
of ``masking`` have those). Each leak seen before is reproduced:

* A: an http node sending the secret as a header and a query parameter: its output (the echoed
  JSON, raw and JSON-escaped in ``text``) and its own ``url`` output (URL-encoded);
* B, after A: ``int(<the secret>)`` — a downstream error in repr form, and A's output in B's
  recorded input;
* C: the server answers 500 quoting the header: a JSON-escaped form in the error;
* D, after A, resolving nothing: a server that echoes the last token it saw — only masking for
  the whole run, not per node, catches it;
* E, F, G: a code node printing the secret (raw, repr, JSON), returning it, and raising with it;
  its base64 form is the documented gap.

Then every REST-facing read, every Redis key (``redis-cli --scan`` and a dump of each) and every
row of every table are searched for every form of the value.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import redis
from nftest import flow, node, wait_run

from nexusflow_kernel.secrets import SecretStore

VALUE = 'tok_"Q\\9x/ &=+AB12~'
SEEN: list[str] = []


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        auth = self.headers.get("Authorization") or ""
        if auth:
            SEEN.append(auth)
        path, _, query = self.path.partition("?")
        status, body = {
            "/echo": (200, {"auth": auth, "query": query}),
            "/fail": (500, {"refused": auth}),
            "/leak": (500, {"last": SEEN[-1] if SEEN else None}),
        }[path]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


CODE = """
import base64, json, os
v = os.environ["S"]
print(v)
print(repr(v))
print(json.dumps({"v": v}))
print(base64.b64encode(v.encode()).decode())
output = {"v": v, "b64": base64.b64encode(v.encode()).decode()}
"""


def leaky_flow(base: str) -> dict:
    secret = {"$secret": "S"}
    return flow(
        node("A", "http", url=f"{base}/echo", headers={"Authorization": secret},
             query={"token": secret}),
        node("B", expression="int(inputs['A']['json']['auth'])"),
        node("C", "http", url=f"{base}/fail", headers={"Authorization": secret}),
        node("D", "http", url=f"{base}/leak", trigger_rule="all_done"),
        node("E", "code", language="python", source=CODE, secrets=["S"]),
        node("F", expression="int(inputs['E']['v'])"),
        node("G", "code", language="python", secrets=["S"],
             source="import os\nraise ValueError('no: ' + os.environ['S'])"),
        edges=[("A", "B"), ("A", "D"), ("E", "F")], name="leaky")


def forms() -> set[str]:
    """The forms the value takes in text (an oracle of this test's own, not masking's)."""
    from urllib.parse import quote, quote_plus

    return {VALUE, json.dumps(VALUE)[1:-1], repr(VALUE)[1:-1], quote(VALUE, safe=""),
            quote_plus(VALUE), json.dumps(repr(VALUE))[1:-1], repr(json.dumps(VALUE))[1:-1]}


def leaks(text: str) -> list[str]:
    return sorted(f for f in forms() if f in text)


def test_no_form_of_a_secret_reaches_the_record(engine, settings, workers, echo,
                                                database_url) -> None:
    assert len(forms()) == 7  # raw, JSON, repr, URL-encoded ... all differ for this value
    SecretStore(settings).set("S", VALUE)
    workers.settings = replace(settings, code_isolation="process")  # no Docker needed
    workers.start(1, "--queues", "default,sandbox")
    run_id = engine.start_run(leaky_flow(echo))
    run = wait_run(engine, run_id, timeout=90)
    nodes = run["nodes"]
    states = {k: v["state"] for k, v in nodes.items()}
    assert states == {"A": "succeeded", "B": "failed", "C": "failed", "D": "failed",
                      "E": "succeeded", "F": "failed", "G": "failed"}, run
    assert SEEN and SEEN[0] == VALUE  # the secret was really sent

    # What each node records says where the secret was, masked.
    a = nodes["A"]["output"]
    assert a["json"]["auth"] == "***" and a["json"]["query"] == "token=***", a
    assert a["url"].endswith("/echo?token=***") and "***" in a["text"], a
    assert nodes["B"]["error"].endswith("invalid literal for int() with base 10: '***'"), nodes
    assert "***" in nodes["C"]["error"] and "***" in nodes["D"]["error"], nodes
    assert nodes["E"]["output"]["v"] == "***" and nodes["F"]["error"].endswith("'***'")
    assert "no: ***" in nodes["G"]["error"], nodes["G"]
    attempts = {n: engine.node_attempts(run_id, n) for n in nodes}
    assert attempts["B"][0]["input"]["inputs"]["A"]["json"]["auth"] == "***"
    e_log = attempts["E"][0]["log"]
    assert e_log.count("***") >= 3, e_log
    # The gap masking cannot close: an encoded value (docs/security.md says so).
    encoded = base64.b64encode(VALUE.encode()).decode()
    assert encoded in e_log and nodes["E"]["output"]["b64"] == encoded

    # Reads (what the REST API answers) ...
    reads = json.dumps(engine.get_run(run_id)) + json.dumps(attempts) + json.dumps(
        engine.read_events(run_id)) + json.dumps(engine.list_runs())
    assert leaks(reads) == [], leaks(reads)

    # ... every Redis key (redis-cli --scan, then each value) ...
    r = redis.Redis.from_url(settings.redis_url)
    keys = list(r.scan_iter())
    assert any(b"events" in k for k in keys), keys  # the event streams are there
    for key in keys:
        dump = {"string": r.get, "hash": r.hgetall, "list": lambda k: r.lrange(k, 0, -1),
                "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1),
                "stream": r.xrange}.get(r.type(key).decode(), lambda k: b"")(key)
        text = repr(dump).encode().decode("unicode_escape", errors="replace")
        assert leaks(repr(dump)) == [] and leaks(text) == [], (key, dump)

    # ... and every row of every table (the secret's own table holds ciphertext only).
    with psycopg.connect(database_url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")]
        assert {"node_logs", "node_runs", "executions", "nexusflow_secrets"} <= set(tables)
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                assert leaks(row) == [], (table, row[:300])

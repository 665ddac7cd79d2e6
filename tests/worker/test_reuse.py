"""Pinned outputs, the result cache and one-node tests, on real workers (issue #15).

The HTTP nodes call a local server that counts its calls: a cache hit or a pinned node must
not call it at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NexusFlowError
from nexusflow_kernel.secrets import SecretStore

CALLS: Counter[str] = Counter()


class Counting(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        CALLS[self.path] += 1
        body = json.dumps({"path": self.path, "n": CALLS[self.path],
                           "auth": self.headers.get("Authorization") or ""}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> str:
    CALLS.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def cached(base: str, name: str, ttl: float = 600, **config) -> dict:
    fetch = node("F", "http", url=base + "/items?q={{ params['q'] }}", **config)
    fetch["cache"] = {"ttl_s": ttl}
    return flow(fetch, node("T", expression="inputs['F']['json']['n']"),
                edges=[("F", "T")], name=name, params={"q": {"type": "string", "default": "a"}})


def reused_events(engine, run_id: str) -> dict:
    """Node -> what its success event says of the cache or a pin (nodes that say nothing are
    left out)."""
    out = {}
    for _sid, ev in engine.read_events(run_id):
        extra = {k: ev[k] for k in ("cached_from", "pinned") if k in ev}
        if extra:
            assert ev["state"] == "succeeded", ev
            out[ev["node"]] = extra
    return out


def test_cache_hit_does_no_work(engine, workers, server, database_url):
    workers.start(1)
    first = wait_run(engine, engine.start_run(cached(server, "cache1")))
    second = wait_run(engine, engine.start_run(cached(server, "cache1")))
    assert first["status"] == second["status"] == "succeeded"
    assert CALLS["/items?q=a"] == 1  # one call for two runs
    assert second["nodes"]["F"]["cached_from"] == {"run_id": first["run_id"], "node_id": "F"}
    assert second["nodes"]["F"]["output"] == first["nodes"]["F"]["output"]
    assert second["nodes"]["F"]["duration_ms"] == 0 and "cached_from" not in first["nodes"]["F"]
    assert second["nodes"]["T"]["output"] == 1 and "cached_from" not in second["nodes"]["T"]
    (attempt,) = engine.node_attempts(second["run_id"], "F")
    assert attempt["cached_from"]["run_id"] == first["run_id"]
    assert "served from the cache" in attempt["log"]
    # The node's success event says so too (canvases badge it live), and so does the history
    # rebuilt from PostgreSQL when Redis lost the stream.
    source = {"run_id": first["run_id"], "node_id": "F"}
    assert reused_events(engine, second["run_id"]) == {"F": {"cached_from": source}}
    assert reused_events(engine, first["run_id"]) == {}
    derived = engine.store.derived_events(second["run_id"])
    assert [ev["cached_from"] for ev in derived if "cached_from" in ev] == [source]
    # Other inputs (params) miss; cache=False bypasses; a served result serves no one.
    other = wait_run(engine, engine.start_run(cached(server, "cache1"), inputs={"q": "b"}))
    assert "cached_from" not in other["nodes"]["F"] and CALLS["/items?q=b"] == 1
    bypass = wait_run(engine, engine.start_run(cached(server, "cache1"), cache=False))
    assert "cached_from" not in bypass["nodes"]["F"] and CALLS["/items?q=a"] == 2
    third = wait_run(engine, engine.start_run(cached(server, "cache1")))
    assert third["nodes"]["F"]["cached_from"]["run_id"] == bypass["run_id"]  # the freshest
    # Another workflow with the same node never gets these results.
    elsewhere = wait_run(engine, engine.start_run(cached(server, "cache2")))
    assert "cached_from" not in elsewhere["nodes"]["F"] and CALLS["/items?q=a"] == 3
    with psycopg.connect(database_url) as conn:
        keys = conn.execute("SELECT e.workflow_id, n.cache_key FROM node_runs n JOIN executions"
                            " e ON e.id=n.execution_id WHERE n.node_id='F'").fetchall()
    assert all(k is None or k.startswith("s:") for _w, k in keys)


def test_cache_expires_and_changed_config_misses(engine, workers, server):
    workers.start(1)
    wait_run(engine, engine.start_run(cached(server, "cache3", ttl=1)))
    time.sleep(1.5)
    late = wait_run(engine, engine.start_run(cached(server, "cache3", ttl=1)))
    assert "cached_from" not in late["nodes"]["F"] and CALLS["/items?q=a"] == 2
    changed = wait_run(engine, engine.start_run(
        cached(server, "cache3", ttl=1, headers={"X-Other": "1"})))
    assert "cached_from" not in changed["nodes"]["F"] and CALLS["/items?q=a"] == 3


def test_cache_key_holds_no_secret_and_a_new_value_misses(engine, workers, server, settings,
                                                          database_url):
    store = SecretStore(settings)
    store.set("TOKEN", "first-secret-value")
    workers.start(1)
    doc = cached(server, "cache4", headers={"Authorization": {"$secret": "TOKEN"}})
    one = wait_run(engine, engine.start_run(doc))
    two = wait_run(engine, engine.start_run(doc))
    assert one["nodes"]["F"]["output"]["json"]["auth"] == "***"
    assert two["nodes"]["F"]["cached_from"]["run_id"] == one["run_id"]
    assert CALLS["/items?q=a"] == 1
    store.set("TOKEN", "second-secret-value")
    time.sleep(0.1)
    three = wait_run(engine, engine.start_run(doc))
    assert "cached_from" not in three["nodes"]["F"] and CALLS["/items?q=a"] == 2
    with psycopg.connect(database_url) as conn:
        (key,) = conn.execute("SELECT cache_key FROM node_runs WHERE execution_id=%s"
                              " AND node_id='F'", (one["run_id"],)).fetchone()
    assert key.startswith("h:") and "secret" not in key  # a keyed hash, no value


def test_pinned_output_stands_in_for_its_node(engine, workers, server):
    workers.start(1)
    doc = cached(server, "pins")
    del doc["nodes"][0]["cache"]
    doc["nodes"][0]["pin"] = {"output": {"json": {"n": 42}}}
    pinned = wait_run(engine, engine.start_run(doc, use_pins=True))
    assert pinned["status"] == "succeeded" and CALLS["/items?q=a"] == 0
    assert pinned["nodes"]["F"]["pinned"] and pinned["nodes"]["T"]["output"] == 42
    assert pinned["options"] == {"use_pins": True}
    assert reused_events(engine, pinned["run_id"]) == {"F": {"pinned": True}}
    assert [ev["node"] for ev in engine.store.derived_events(pinned["run_id"])
            if ev.get("pinned")] == ["F"]
    plain = wait_run(engine, engine.start_run(doc))
    assert "pinned" not in plain["nodes"]["F"] and plain["nodes"]["T"]["output"] == 1
    assert CALLS["/items?q=a"] == 1
    for trigger in ("webhook", "schedule", "queue", "replay"):
        with pytest.raises(NexusFlowError, match=f"a {trigger} run never uses pinned"):
            engine.start_run(doc, use_pins=True, trigger=trigger)
    # A replay of a run with pins is a run without them.
    replay = wait_run(engine, engine.replay_run(pinned["run_id"]))
    assert "pinned" not in replay["nodes"]["F"] and CALLS["/items?q=a"] == 2


def test_node_test_runs_one_node_on_a_worker_masked(engine, workers, server, settings):
    SecretStore(settings).set("TOKEN", "node-test-secret")
    runs_before = len(engine.list_runs(limit=1000))
    workers.start(1)
    http = {"id": "F", "type": "http", "config": {
        "url": server + "/t?q={{ params['q'] }}&a={{ inputs['A'] }}",
        "headers": {"Authorization": {"$secret": "TOKEN"}}}}
    test_id = engine.start_test(http, inputs={"A": 7}, params={"q": "z"})
    done = engine.wait_test(test_id, 30)
    assert done["status"] == "succeeded", done
    assert done["output"]["json"]["auth"] == "***" and done["output"]["json"]["path"] == \
        "/t?q=z&a=7"
    assert CALLS["/t?q=z&a=7"] == 1 and done["worker"] and done["duration_ms"] > 0
    assert "node-test-secret" not in json.dumps(done)
    bad = engine.wait_test(engine.start_test(
        {"id": "X", "type": "transform", "config": {"expression": "inputs['A'] // 0"}},
        inputs={"A": 1}), 30)
    assert bad["status"] == "failed" and "division" in bad["error"]
    with pytest.raises(NexusFlowError, match="cannot be tested"):
        engine.start_test({"id": "Y", "type": "transform", "config": {}})
    # Nothing of a run was made for either.
    assert len(engine.list_runs(limit=1000)) == runs_before

"""I/O-bound nodes wait in threads, not in the worker process (issue #20, Performance).

An http node that waits on its server no longer holds the worker process: the process runs
other nodes (of the same run, of other runs) meanwhile. Each waiting node keeps its own lease,
timeout and cancel: a node past its ``timeout_s`` fails while the others go on waiting, a
canceled run's node ends canceled while another run's node goes on, and a node that waits
longer than a lease keeps it (no lost attempt, one request). Behaviour, not timings: the
bounds below are deadlines for a loaded machine.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nftest import LocalHTTPServer, flow, node, send_json, wait_for, wait_run


class SlowServer(LocalHTTPServer):
    """``/?name=X&delay=S`` answers ``{"name": X}`` after S seconds; counts requests per name,
    the answers sent, and the most requests held at once."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                q = parse_qs(urlsplit(self.path).query)
                name, delay = q["name"][0], float(q["delay"][0])
                with outer.lock:
                    outer.requests[name] = outer.requests.get(name, 0) + 1
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                try:
                    time.sleep(delay)
                    if send_json(self, 200, json.dumps({"name": name}).encode()):
                        with outer.lock:
                            outer.answered[name] = outer.answered.get(name, 0) + 1
                finally:
                    with outer.lock:
                        outer.active -= 1

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, "/")

    def call(self, nid: str, delay: float, **extra: Any) -> dict:
        return node(nid, "http", url=self.url, query={"name": nid, "delay": str(delay)},
                    **extra)




def node_log(engine, run_id: str, node_id: str) -> list[dict]:
    with engine.pool.connection() as conn:
        return conn.execute(
            "SELECT attempt, status, error FROM node_logs WHERE execution_id=%s AND node_id=%s"
            " ORDER BY attempt", (run_id, node_id)).fetchall()


def test_waiting_nodes_leave_the_process_free_for_other_runs(engine, workers) -> None:
    """One worker process: twelve http calls of one run wait at once, and a run of plain
    nodes started meanwhile ends while they still wait."""
    with SlowServer() as server:
        workers.start(1)
        calls = [server.call(f"h{i}", 10.0) for i in range(12)]
        waiting = engine.start_run(flow(node("s", "noop"), *calls, node("e", "noop"),
                                        edges=[("s", c["id"]) for c in calls]
                                        + [(c["id"], "e") for c in calls], name="waiting"))
        wait_for(lambda: server.active >= 12, 30, "all twelve calls waiting at once")
        other = wait_run(engine, engine.start_run(flow(
            node("a", "noop"), node("b", expression="1 + 1"), edges=[("a", "b")],
            name="other")), timeout=30)
        assert other["status"] == "succeeded", other
        assert server.answered == {}, "the other run had to wait for the calls"
        run = wait_run(engine, waiting, timeout=60)
    assert run["status"] == "succeeded", run
    assert server.peak >= 12
    assert all(n == 1 for n in server.requests.values()), server.requests


def test_a_timeout_fails_that_node_alone_while_the_others_wait(engine, workers) -> None:
    with SlowServer() as server:
        workers.start(1)
        doc = flow(node("s", "noop"), server.call("slow", 20.0, timeout_s=1),
                   server.call("a", 8.0), server.call("b", 8.0),
                   node("e", "noop", trigger_rule="all_done"),
                   edges=[("s", "slow"), ("s", "a"), ("s", "b"), ("slow", "e"), ("a", "e"),
                          ("b", "e")], name="timeouts")
        run_id = engine.start_run(doc)
        wait_for(lambda: engine.get_run(run_id)["nodes"]["slow"]["state"] == "failed", 30,
                 "the slow node to fail at its timeout")
        # recorded at its timeout, while its request is still held by the server
        assert "slow" not in server.answered
        assert {engine.get_run(run_id)["nodes"][n]["state"] for n in ("a", "b")} == \
            {"running"}, "the other calls ended with the timed-out one"
        run = wait_run(engine, run_id, timeout=60)
    assert run["nodes"]["a"]["state"] == run["nodes"]["b"]["state"] == "succeeded", run
    assert run["nodes"]["e"]["state"] == "succeeded"
    log = node_log(engine, run_id, "slow")
    assert [(r["attempt"], r["status"]) for r in log] == [(1, "failed")], log
    assert "timed out after 1 s (timeout_s)" in log[0]["error"]


def test_cancel_ends_that_runs_waiting_node_while_another_runs_goes_on(engine,
                                                                       workers) -> None:
    with SlowServer() as server:
        workers.start(1)
        first = engine.start_run(flow(server.call("x", 30.0), name="first"))
        second = engine.start_run(flow(server.call("y", 8.0), node("after", "noop"),
                                       edges=[("y", "after")], name="second"))
        wait_for(lambda: server.active >= 2, 30, "both calls waiting")
        engine.cancel_run(first)
        wait_for(lambda: engine.get_run(first)["nodes"]["x"]["state"] == "canceled", 20,
                 "the first run's waiting node to end canceled")
        assert "x" not in server.answered, "the cancel waited for the call"
        run2 = wait_run(engine, second, timeout=60)
        run1 = engine.get_run(first)
    assert run1["status"] == "canceled"
    assert run2["status"] == "succeeded", run2
    assert [r["status"] for r in node_log(engine, first, "x")] == ["canceled"]
    with engine.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM node_runs WHERE state='running'"
                            " AND execution_id = ANY(%s::uuid[])",
                            ([first, second],)).fetchone()["n"] == 0


def test_a_node_waiting_longer_than_its_lease_keeps_it(engine, workers, settings) -> None:
    """The lease keeper renews a waiting node's lease: no lost attempt, no second request."""
    wait_s = settings.lease_s * 1.5
    with SlowServer() as server:
        workers.start(1)
        run = wait_run(engine, engine.start_run(flow(
            server.call("long", wait_s, timeout_s=int(wait_s * 4)), node("quick", "noop"),
            name="lease")), timeout=90)
    assert run["status"] == "succeeded", run
    assert server.requests == {"long": 1}
    assert [(r["attempt"], r["status"]) for r in node_log(engine, run["run_id"], "long")] == \
        [(1, "succeeded")]

"""The map node with real workers (issue #20, item 1): item order, ``item`` and ``index``,
failures, retries, retry-from-failed, concurrency, cancel, items waiting on I/O, paging."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from nftest import LocalHTTPServer, flow, node, send_json, wait_run

from nexusflow_kernel.errors import NotFoundError


def item_rows(engine, run_id: str) -> list[dict[str, Any]]:
    with engine.pool.connection() as conn:
        return conn.execute(
            "SELECT i.item, i.state, i.attempt, i.output, i.error FROM map_items i"
            " WHERE i.execution_id=%s ORDER BY i.item", (run_id,)).fetchall()


def earlier_attempts(engine, run_id: str) -> list[dict[str, Any]]:
    with engine.pool.connection() as conn:
        return conn.execute(
            "SELECT item, attempt, status, error FROM map_item_attempts WHERE execution_id=%s"
            " ORDER BY item, attempt", (run_id,)).fetchall()


class ItemServer(LocalHTTPServer):
    """A local HTTP server for http items: ``/item?i=N`` answers ``{"i": N}`` after ``delay``
    seconds; ``fail`` maps an item to how many of its first requests get a 503. It counts the
    requests per item and the most requests it held at once."""

    def __init__(self, delay: float = 0.0, fail: dict[int, int] | None = None) -> None:
        self.delay = delay
        self.fail = dict(fail or {})
        self.requests: dict[int, int] = {}
        self.keys: dict[int, set[str]] = {}
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                i = int(parse_qs(urlsplit(self.path).query)["i"][0])
                with outer.lock:
                    outer.requests[i] = outer.requests.get(i, 0) + 1
                    outer.keys.setdefault(i, set()).add(self.headers.get("Idempotency-Key"))
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                    failing = outer.fail.get(i, 0) >= outer.requests[i]
                try:
                    time.sleep(outer.delay)
                    send_json(self, *((503, b"busy") if failing else (
                        200, json.dumps({"i": i}).encode())))
                finally:
                    with outer.lock:
                        outer.active -= 1

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler, "/item")


def http_map(url: str, n: int, **config: Any) -> dict:
    item_node = {"type": "http", "config": {"url": url, "query": {"i": "{{ item }}"}}}
    item_node.update(config.pop("item", {}))
    return flow(node("ids", expression=f"list(range({n}))"),
                node("m", "map", items="inputs['ids']", node=item_node, **config),
                node("after", expression="[r['json']['i'] for r in inputs['m']]"),
                edges=[("ids", "m"), ("m", "after")], name="http-map")


def test_map_outputs_every_item_in_order(engine, workers) -> None:
    workers.start(2)
    doc = flow(
        node("orders", expression="[{'qty': q, 'price': 10 + q} for q in range(700)]"),
        node("price", "map", items="inputs['orders']", node={
            "type": "transform",
            "config": {"expression": "{'n': index, 'total': item['qty'] * item['price']}"}}),
        node("sum", expression="sum(p['total'] for p in inputs['price'])"),
        edges=[("orders", "price"), ("price", "sum")], name="map-order")
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "succeeded", run
    out = run["nodes"]["price"]["output"]
    assert [p["n"] for p in out] == list(range(700))
    assert out[5] == {"n": 5, "total": 5 * 15}
    assert run["nodes"]["sum"]["output"] == sum(q * (10 + q) for q in range(700))
    assert run["nodes"]["price"]["items"] == {
        "total": 700, "done": 700, "running": 0, "succeeded": 700, "failed": 0, "canceled": 0}
    rows = item_rows(engine, run["run_id"])
    assert [r["state"] for r in rows] == ["succeeded"] * 700
    assert all(r["attempt"] == 1 for r in rows)


def test_an_empty_list_succeeds_with_an_empty_output(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("m", "map", items="[]", node={"type": "noop"}),
               node("after", expression="len(inputs['m'])"), edges=[("m", "after")])
    run = wait_run(engine, engine.start_run(doc), timeout=30)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["m"]["output"] == []
    assert run["nodes"]["after"]["output"] == 0


def test_items_that_are_not_a_list_fail_the_node_naming_it_and_the_field(engine,
                                                                        workers) -> None:
    workers.start(1)
    doc = flow(node("src", expression="{'a': 1}"),
               node("m", "map", items="inputs['src']", node={"type": "noop"}),
               node("after", "noop"), edges=[("src", "m"), ("m", "after")])
    run = wait_run(engine, engine.start_run(doc), timeout=30)
    assert run["status"] == "failed"
    assert run["nodes"]["m"]["error"] == (
        "node 'm' /config/items: the expression gave an object, not a list")
    assert run["nodes"]["after"]["state"] == "skipped"
    assert item_rows(engine, run["run_id"]) == []  # nothing half-written


def test_item_and_index_reach_templates_of_an_http_item(engine, workers) -> None:
    with ItemServer() as server:
        workers.start(2)
        doc = http_map(server.url, 40)
        run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "succeeded", run["nodes"]
    assert run["nodes"]["after"]["output"] == list(range(40))
    assert server.requests == dict.fromkeys(range(40), 1)
    # each item keeps its own idempotency key across its attempts
    assert server.keys[7] == {f"{run['run_id']}:m:7"}


def test_on_item_failure_fail_names_the_failed_items_and_starts_no_more(engine,
                                                                       workers) -> None:
    workers.start(2)
    doc = flow(node("m", "map", items="list(range(30))",
                    node={"type": "transform", "config": {"expression": "10 // (item % 7)"}}),
               node("after", "noop"), edges=[("m", "after")], name="map-fail")
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "failed"
    error = run["nodes"]["m"]["error"]
    assert error.startswith("map 'm': "), error
    failed = [r["item"] for r in item_rows(engine, run["run_id"]) if r["state"] == "failed"]
    assert failed and all(i % 7 == 0 for i in failed)
    assert f"(items {', '.join(map(str, failed))}" in error
    assert "ZeroDivisionError" in error
    assert run["nodes"]["after"]["state"] == "skipped"
    counts = run["nodes"]["m"]["items"]
    assert counts["done"] == counts["total"] == 30 and counts["running"] == 0


def test_on_item_failure_continue_puts_the_error_in_the_output(engine, workers) -> None:
    workers.start(2)
    doc = flow(node("m", "map", items="list(range(10))", on_item_failure="continue",
                    node={"type": "transform", "config": {"expression": "10 // (item % 5)"}}),
               node("after", expression="len(inputs['m'])"), edges=[("m", "after")])
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "succeeded", run
    out = run["nodes"]["m"]["output"]
    assert out[1] == 10 and out[2] == 5
    assert set(out[0]) == {"error"} and "ZeroDivisionError" in out[0]["error"]
    assert "ZeroDivisionError" in out[5]["error"]
    assert run["nodes"]["m"]["items"]["failed"] == 2
    assert run["nodes"]["after"]["output"] == 10


def test_items_retry_by_their_own_policy_and_keep_their_attempts(engine, workers) -> None:
    with ItemServer(fail={3: 2, 8: 1}) as server:
        workers.start(2)
        doc = http_map(server.url, 12, item={"retry": {"max_attempts": 3, "backoff_s": 0.2}})
        run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "succeeded", run
    assert server.requests[3] == 3 and server.requests[8] == 2 and server.requests[0] == 1
    rows = {r["item"]: r for r in item_rows(engine, run["run_id"])}
    assert rows[3]["attempt"] == 3 and rows[3]["state"] == "succeeded"
    earlier = [(a["item"], a["attempt"], a["status"]) for a in
               earlier_attempts(engine, run["run_id"])]
    assert earlier == [(3, 1, "failed"), (3, 2, "failed"), (8, 1, "failed")]
    item = engine.map_item(run["run_id"], "m", 3)
    assert [h["status"] for h in item["history"]] == ["failed", "failed", "succeeded"]
    assert "HTTP 503" in item["history"][0]["error"]
    assert item["output"]["json"] == {"i": 3}


def test_retry_of_a_failed_run_reruns_only_the_failed_items(engine, workers) -> None:
    with ItemServer(fail={4: 1, 9: 1}) as server:
        workers.start(2)
        doc = http_map(server.url, 15)
        run_id = engine.start_run(doc)
        run = wait_run(engine, run_id, timeout=60)
        assert run["status"] == "failed"
        assert "items 4, 9" in run["nodes"]["m"]["error"]
        before = dict(server.requests)
        engine.retry_run(run_id)
        run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["after"]["output"] == list(range(15))
    rerun = {i: server.requests[i] - before.get(i, 0) for i in range(15)}
    assert rerun == {i: int(i in (4, 9)) for i in range(15)}
    rows = {r["item"]: r for r in item_rows(engine, run_id)}
    assert rows[4]["attempt"] == 2 and rows[0]["attempt"] == 1


def test_retry_from_the_map_node_runs_every_item_again(engine, workers) -> None:
    with ItemServer(fail={2: 1}) as server:
        workers.start(1)
        run_id = engine.start_run(http_map(server.url, 5))
        assert wait_run(engine, run_id, timeout=60)["status"] == "failed"
        engine.retry_run(run_id, from_node="m")
        run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert server.requests == {0: 2, 1: 2, 2: 2, 3: 2, 4: 2}


def test_concurrency_bounds_the_items_running_at_once(engine, workers) -> None:
    with ItemServer(delay=0.15) as server:
        workers.start(2)
        run = wait_run(engine, engine.start_run(http_map(server.url, 24, concurrency=3)),
                       timeout=60)
    assert run["status"] == "succeeded", run
    assert server.peak == 3


def test_waiting_items_run_concurrently_inside_one_worker(engine, workers) -> None:
    with ItemServer(delay=0.2) as server:
        workers.start(1)
        t0 = time.monotonic()
        run = wait_run(engine, engine.start_run(http_map(server.url, 60)), timeout=60)
        elapsed = time.monotonic() - t0
    assert run["status"] == "succeeded", run
    print(f"\n60 http items of 0.2 s on one worker process: {elapsed:.2f} s, "
          f"{server.peak} requests at once")
    assert server.peak > 10  # one at a time would be 12 s: they overlap in the process


def test_cancel_stops_the_map_and_its_items(engine, workers) -> None:
    with ItemServer(delay=0.3) as server:
        workers.start(2)
        run_id = engine.start_run(http_map(server.url, 400, concurrency=8))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(server.requests.values()) < 10:
            time.sleep(0.05)
        engine.cancel_run(run_id)
        # The run is canceled at once; its running items stop within a heartbeat.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and \
                engine.get_run(run_id)["nodes"]["m"]["state"] == "running":
            time.sleep(0.05)
        run = engine.get_run(run_id)
        time.sleep(1.0)
        seen = sum(server.requests.values())
    assert run["status"] == "canceled"
    assert run["nodes"]["m"]["state"] == "canceled"
    assert run["nodes"]["after"]["state"] == "canceled"
    states = {r["state"] for r in item_rows(engine, run_id)}
    assert states <= {"succeeded", "canceled"}, states
    assert seen < 60  # nothing new started after the cancel
    with engine.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM map_leases WHERE execution_id=%s",
                            (run_id,)).fetchone()["n"] == 0


def test_items_are_read_page_by_page(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("m", "map", items="list(range(25))", on_item_failure="continue",
                    node={"type": "transform", "config": {"expression": "1 // (item - 20)"}}),
               name="map-pages")
    run_id = engine.start_run(doc)
    assert wait_run(engine, run_id, timeout=30)["status"] == "succeeded"
    page = engine.map_items(run_id, "m", offset=10, limit=5)
    assert page["total"] == 25 and page["offset"] == 10
    assert [i["index"] for i in page["items"]] == [10, 11, 12, 13, 14]
    assert page["items"][0]["output"] == 1 // (10 - 20)
    assert page["counts"]["failed"] == 1
    failed = engine.map_items(run_id, "m", state="failed")
    assert failed["total"] == 1 and failed["items"][0]["index"] == 20
    assert "ZeroDivisionError" in failed["items"][0]["error"]
    with pytest.raises(NotFoundError):
        engine.map_items(run_id, "nope")
    with pytest.raises(NotFoundError):
        engine.map_item(run_id, "m", 99)


def test_a_pinned_or_cached_map_runs_no_item(engine, workers) -> None:
    with ItemServer() as server:
        workers.start(1)
        doc = http_map(server.url, 5)
        m = doc["nodes"][1]
        m["cache"] = {"ttl_s": 600}
        first = wait_run(engine, engine.start_run(doc), timeout=60)
        assert first["status"] == "succeeded", first["nodes"]
        assert sum(server.requests.values()) == 5
        second = wait_run(engine, engine.start_run(doc), timeout=60)
        assert second["nodes"]["m"]["cached_from"] == {"run_id": first["run_id"],
                                                        "node_id": "m"}
        assert second["nodes"]["after"]["output"] == list(range(5))
        del m["cache"]
        m["pin"] = {"output": [{"json": {"i": 7}}]}
        pinned = wait_run(engine, engine.start_run(doc, use_pins=True), timeout=60)
        assert pinned["nodes"]["m"]["pinned"] and pinned["nodes"]["after"]["output"] == [7]
        assert sum(server.requests.values()) == 5  # neither ran an item
        assert item_rows(engine, second["run_id"]) == item_rows(engine, pinned["run_id"]) == []

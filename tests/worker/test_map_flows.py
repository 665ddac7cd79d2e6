"""A map of a flow (issue #20, item 1): one child run per item, with real workers — outputs in
item order, params from ``inputs`` templates, concurrency, failures (fail / continue), retry
resuming only the failed items' children in place, cancel, and compile-time checks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import FlowError, NodeConfigError


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def price_doc(**top) -> dict:
    """A child flow: the total of one order (fails for a quantity of 0 until retried)."""
    return flow(node("check", expression="10 // params['qty']"),
                node("total", expression="params['qty'] * params['price']"),
                edges=[("check", "total")], name="price",
                params={"qty": {"type": "integer"}, "price": {"type": "number", "default": 2}},
                **top)


def map_of_flow(ref, **config) -> dict:
    inputs = config.pop("inputs", {"qty": "{{ item['qty'] }}", "price": "{{ item['price'] }}"})
    return flow(node("orders", expression="[{'qty': q + 1, 'price': 10 * q} for q in range(6)]"),
                node("price", "map", items="inputs['orders']", flow=ref, inputs=inputs,
                     **config),
                node("sum", expression="sum(p['total'] for p in inputs['price'])"),
                edges=[("orders", "price"), ("price", "sum")], name="orders")


def children(engine, run_id: str) -> list[dict]:
    return engine.child_runs(run_id)


def test_a_map_of_a_flow_runs_a_child_per_item_in_item_order(engine, workers,
                                                             tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "lib" / "price.nxflow", price_doc())
    parent = write(tmp_path / "orders.nxflow", map_of_flow("lib/price.nxflow"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    out = run["nodes"]["price"]["output"]
    assert out == [{"total": (q + 1) * 10 * q} for q in range(6)]
    assert run["nodes"]["sum"]["output"] == sum((q + 1) * 10 * q for q in range(6))
    assert run["nodes"]["price"]["items"]["succeeded"] == 6
    kids = children(engine, run_id)
    assert sorted(k["item"] for k in kids) == list(range(6))
    assert {k["node_id"] for k in kids} == {"price"}
    page = engine.map_items(run_id, "price")
    by_index = {i["index"]: i for i in page["items"]}
    child = engine.get_run(by_index[3]["child_run"])
    assert child["parent"] == {"run_id": run_id, "node_id": "price", "item": 3}
    assert child["inputs"] == {"qty": 4, "price": 30}
    assert by_index[3]["output"] == {"total": 120} and by_index[3]["duration_ms"] > 0


def test_default_params_are_item_and_index_and_concurrency_bounds_children(
        engine, workers, tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "slow.nxflow", flow(
        node("nap", "sleep", seconds=0.3),
        node("echo", expression="{'item': params['item'], 'index': params['index']}"),
        edges=[("nap", "echo")], name="slow"))
    doc = flow(node("m", "map", items="['a', 'b', 'c', 'd', 'e']", flow="slow.nxflow",
                    concurrency=2), name="bounded")
    run_id = engine.start_run(write(tmp_path / "bounded.nxflow", doc), base_dir=str(tmp_path))
    peak = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = engine.get_run(run_id)
        live = [k for k in children(engine, run_id) if k["status"] == "running"]
        peak = max(peak, len(live))
        if run["status"] != "running":
            break
        time.sleep(0.05)
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["m"]["output"] == [
        {"echo": {"item": v, "index": i}} for i, v in enumerate("abcde")]
    assert 1 <= peak <= 2


def test_failed_items_fail_the_map_and_retry_resumes_only_their_children(
        engine, workers, tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "child.nxflow", flow(
        node("ok", expression="params['item']"),
        node("flaky", "sleep", seconds=0, fail_attempts=1),
        node("end", expression="inputs['ok'] * 100 + inputs['flaky']['attempt']"),
        edges=[("ok", "flaky"), ("ok", "end"), ("flaky", "end")], name="child"))
    doc = flow(node("m", "map", items="[1, 2, 3]", flow="child.nxflow"),
               node("after", "noop"), edges=[("m", "after")], name="parent")
    run_id = engine.start_run(write(tmp_path / "parent.nxflow", doc), base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "failed"
    error = run["nodes"]["m"]["error"]
    assert error.startswith("map 'm': 3 of 3 items failed (items 0, 1, 2)"), error
    assert "failed at node 'flaky'" in error
    first = {k["item"]: k["run_id"] for k in children(engine, run_id)}
    assert len(first) == 3
    engine.retry_run(run_id)
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["m"]["output"] == [{"end": 102}, {"end": 202}, {"end": 302}]
    # The same children, resumed in place: their succeeded node ran once.
    assert {k["item"]: k["run_id"] for k in children(engine, run_id)} == first
    for child_id in first.values():
        assert [a["status"] for a in engine.node_attempts(child_id, "ok")] == ["succeeded"]
    item = engine.map_item(run_id, "m", 1)
    assert item["attempts"] == 2 and item["child_run"] == first[1]
    assert [h["status"] for h in item["history"]] == ["failed", "succeeded"]


def test_on_item_failure_continue_puts_the_childs_error_in_the_output(
        engine, workers, tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "price.nxflow", price_doc())
    doc = flow(node("m", "map", items="[2, 0, 3]", flow="price.nxflow",
                    inputs={"qty": "{{ item }}"}, on_item_failure="continue"),
               name="cont")
    run_id = engine.start_run(write(tmp_path / "cont.nxflow", doc), base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    out = run["nodes"]["m"]["output"]
    assert out[0] == {"total": 4} and out[2] == {"total": 6}
    assert set(out[1]) == {"error"}
    assert "failed at node 'check'" in out[1]["error"] and "ZeroDivisionError" in out[1]["error"]
    assert run["nodes"]["m"]["items"]["failed"] == 1


def test_an_item_whose_inputs_do_not_render_fails_naming_it(engine, workers,
                                                            tmp_path) -> None:
    workers.start(1)
    write(tmp_path / "price.nxflow", price_doc())
    doc = flow(node("m", "map", items="[{'qty': 1}, {}]", flow="price.nxflow",
                    inputs={"qty": "{{ item['qty'] }}"}, on_item_failure="continue"),
               name="bad")
    run_id = engine.start_run(write(tmp_path / "bad.nxflow", doc), base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    out = run["nodes"]["m"]["output"]
    assert out[0] == {"total": 2}
    assert "node 'm' item 1 /config/inputs/qty" in out[1]["error"], out
    assert "item has no key 'qty'" in out[1]["error"]
    assert [k["item"] for k in children(engine, run_id)] == [0]  # no child for item 1


def test_cancel_of_the_parent_cancels_the_items_children(engine, workers, tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "slow.nxflow", flow(node("wait", "delay", seconds=30),
                                         node("never", "noop"), edges=[("wait", "never")],
                                         name="slow"))
    doc = flow(node("m", "map", items="list(range(5))", flow="slow.nxflow", concurrency=3),
               name="parent")
    run_id = engine.start_run(write(tmp_path / "parent.nxflow", doc), base_dir=str(tmp_path))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = children(engine, run_id)
        if len(kids) == 3 and all(engine.get_run(k["run_id"])["nodes"]["wait"]["state"]
                                  == "scheduled" for k in kids):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the children never started waiting: {engine.get_run(run_id)}")
    assert engine.get_run(run_id)["nodes"]["m"]["items"]["running"] == 3
    engine.cancel_run(run_id)
    run = wait_run(engine, run_id, timeout=20)
    assert run["status"] == "canceled" and run["nodes"]["m"]["state"] == "canceled"
    assert run["nodes"]["m"]["items"] == {"total": 5, "done": 5, "running": 0, "succeeded": 0,
                                          "failed": 0, "canceled": 5}
    for k in children(engine, run_id):
        assert wait_run(engine, k["run_id"], timeout=20)["status"] == "canceled"


def test_a_map_of_a_flow_is_checked_when_the_run_starts(engine, tmp_path) -> None:
    write(tmp_path / "self.nxflow", flow(node("m", "map", items="[1]", flow="self.nxflow"),
                                         name="self"))
    with pytest.raises(NodeConfigError, match="calls itself"):
        engine.start_run(tmp_path / "self.nxflow", base_dir=str(tmp_path))
    with pytest.raises(NodeConfigError, match="missing.nxflow"):
        engine.start_run(flow(node("m", "map", items="[1]", flow="missing.nxflow")),
                         base_dir=str(tmp_path))
    both = flow(node("m", "map", items="[1]", flow="x.nxflow", node={"type": "noop"}))
    with pytest.raises(FlowError) as err:
        engine.start_run(both, base_dir=str(tmp_path))
    assert "/nodes/0/config" in str(err.value.pointer)
    stray = flow(node("m", "map", items="[1]", node={"type": "noop"}, inputs={"a": 1}))
    with pytest.raises(FlowError, match="inputs are a sub-flow's params"):
        engine.start_run(stray)


def test_every_worker_killed_mid_map_of_flows_every_item_succeeds_once(
        engine, settings, workers, tmp_path) -> None:
    import os
    import signal

    from nexusflow_worker.chaos import check_invariants, wait_rq_idle

    total = 30
    write(tmp_path / "nap.nxflow", flow(
        node("nap", "sleep", seconds=0.2),
        node("out", expression="params['index'] * 10"), edges=[("nap", "out")], name="nap"))
    doc = flow(node("m", "map", items=f"list(range({total}))", flow="nap.nxflow",
                    concurrency=6),
               node("n", expression="[o['out'] for o in inputs['m']]"), edges=[("m", "n")],
               name="map-flows-kill")
    sup = workers.start(2)
    run_id = engine.start_run(write(tmp_path / "kill.nxflow", doc), base_dir=str(tmp_path))
    deadline = time.monotonic() + 60
    while engine.get_run(run_id)["nodes"]["m"].get("items", {}).get("succeeded", 0) < 8:
        assert time.monotonic() < deadline, engine.get_run(run_id)
        time.sleep(0.05)
    killed_at = time.time()
    try:
        os.killpg(sup.pid, signal.SIGKILL)  # the supervisor, its reconciler, every worker
    except ProcessLookupError:
        pass
    sup.wait(timeout=10)
    workers.start(2)
    run = wait_run(engine, run_id, timeout=120)
    assert run["status"] == "succeeded", run["nodes"]
    assert run["nodes"]["n"]["output"] == [i * 10 for i in range(total)]
    wait_rq_idle(engine.redis, settings, timeout=15)
    with engine.pool.connection() as conn:
        rows = conn.execute("SELECT item, state, attempt, child_run::text AS child, ended_at"
                            " FROM map_items WHERE execution_id=%s ORDER BY item",
                            (run_id,)).fetchall()
        earlier = conn.execute("SELECT count(*) AS n FROM map_item_attempts"
                               " WHERE execution_id=%s", (run_id,)).fetchone()["n"]
    # Every item succeeded once, with one child run each, and no item attempt was lost:
    # a child holds no worker, its own nodes' lost attempts ran again inside it.
    assert [(r["state"], r["attempt"]) for r in rows] == [("succeeded", 1)] * total
    assert earlier == 0
    kids = children(engine, run_id)
    assert sorted(k["item"] for k in kids) == list(range(total))
    assert {r["child"] for r in rows} == {k["run_id"] for k in kids}
    assert {k["status"] for k in kids} == {"succeeded"}
    assert any(r["ended_at"].timestamp() > killed_at for r in rows)
    rep = check_invariants(engine.pool, engine.redis, settings,
                           [run_id, *(k["run_id"] for k in kids)], store=engine.store)
    assert rep.ok, str(rep)

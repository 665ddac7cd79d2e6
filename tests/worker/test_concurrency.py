"""Concurrency limits: a flow's max_active_runs, and pools shared by every run."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NexusFlowError, NodeConfigError, NotFoundError, RunStateError


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pooled(id: str, pool: str, seconds: float = 0.6) -> dict:
    return {**node(id, "sleep", seconds=seconds), "pool": pool}


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = now = 0
    for _t, step in edges:
        now += step
        best = max(best, now)
    return best


def node_intervals(engine, run_ids: list[str], ids: set[str]) -> list[tuple[float, float]]:
    out = []
    for run_id in run_ids:
        for node_id, n in engine.get_run(run_id)["nodes"].items():
            if node_id in ids:
                out.append((ts(n["started_at"]), ts(n["ended_at"])))
    return out


def test_a_pool_bounds_its_nodes_across_runs(engine, workers) -> None:
    engine.set_pool("api", 2, description="the partner API allows 2 calls at once")
    workers.start(4)
    doc = flow(*(pooled(f"p{i}", "api") for i in range(4)), node("free", "sleep", seconds=0.6),
               name="pooled")
    runs = [engine.start_run(doc) for _ in range(2)]
    time.sleep(0.8)
    listed = {p["name"]: p for p in engine.list_pools()}["api"]
    assert listed["size"] == 2 and listed["running"] <= 2
    assert listed["running"] + listed["waiting"] >= 4  # 8 pooled nodes, 2 at a time
    for run_id in runs:
        assert wait_run(engine, run_id, timeout=60)["status"] == "succeeded"
    spans = node_intervals(engine, runs, {f"p{i}" for i in range(4)})
    assert most_at_once(spans) == 2, spans
    # The unpooled node ran beside them, not after them.
    free = node_intervals(engine, runs[:1], {"free"})[0]
    assert free[0] < max(b for _a, b in spans) - 1.0
    assert engine.get_pool("api")["running"] == 0 and engine.get_pool("api")["waiting"] == 0


def test_resizing_a_pool_starts_waiting_nodes_and_bad_pools_are_refused(engine,
                                                                         workers) -> None:
    engine.set_pool("zero", 0)  # a pool of 0 holds its nodes (a pause)
    workers.start(2)
    run_id = engine.start_run(flow(pooled("a", "zero", 0.1), pooled("b", "zero", 0.1),
                                   name="paused"))
    time.sleep(1.5)
    run = engine.get_run(run_id)
    assert {n["state"] for n in run["nodes"].values()} == {"queued"}
    assert engine.get_pool("zero")["waiting"] == 2
    with pytest.raises(RunStateError, match="in use by 2 node"):
        engine.delete_pool("zero")
    engine.set_pool("zero", 5)
    assert wait_run(engine, run_id, timeout=30)["status"] == "succeeded"
    engine.delete_pool("zero")
    with pytest.raises(NotFoundError):
        engine.get_pool("zero")
    before = len(engine.list_runs())
    with pytest.raises(NodeConfigError, match=r"node 'a': pool 'nope' does not exist") as err:
        engine.start_run(flow(pooled("a", "nope"), name="nopool"))
    assert err.value.pointer == "/nodes/0/pool"
    assert len(engine.list_runs()) == before  # nothing half-written
    for name, size in (("bad name!", 1), ("ok", -1), ("ok", 1.5), ("ok", True)):
        with pytest.raises(NexusFlowError):
            engine.set_pool(name, size)


def test_a_slot_held_by_a_killed_worker_comes_back(engine, settings, workers) -> None:
    engine.set_pool("one", 1)
    group = workers.start(1)
    run_id = engine.start_run(flow(pooled("long", "one", 30), pooled("next", "one", 0.1),
                                   name="killed"))
    deadline = time.monotonic() + 20
    while engine.get_run(run_id)["nodes"]["long"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert engine.get_pool("one")["running"] == 1
    os.killpg(group.pid, signal.SIGKILL)
    group.wait()
    killed_at = time.monotonic()
    workers.start(1)
    # The lease expires, the reconciler records the lost attempt and retries it; meanwhile
    # the slot is free again and the other node gets it.
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    assert time.monotonic() - killed_at < 60
    statuses = [a["status"] for a in engine.node_attempts(run_id, "long")]
    assert statuses[0] == "lost" and statuses[-1] == "succeeded"
    assert engine.get_pool("one")["running"] == 0


def test_max_active_runs_queues_runs_and_starts_them_in_order(engine, workers) -> None:
    workers.start(2)
    doc = flow(node("work", "sleep", seconds=1.0), name="limited", max_active_runs=1)
    runs = [engine.start_run(doc, inputs={"i": i}) for i in range(3)]
    statuses = [engine.get_run(r)["status"] for r in runs]
    assert statuses == ["running", "queued", "queued"]
    assert {n["state"] for n in engine.get_run(runs[1])["nodes"].values()} == {"pending"}
    # Cancel a queued run: it never starts; the others still go in order.
    extra = engine.start_run(doc, inputs={"i": 3})
    engine.cancel_run(extra)
    assert engine.get_run(extra)["status"] == "canceled"
    done = [wait_run(engine, r, timeout=60) for r in runs]
    assert [d["status"] for d in done] == ["succeeded"] * 3
    spans = [(ts(d["nodes"]["work"]["started_at"]), ts(d["nodes"]["work"]["ended_at"]))
             for d in done]
    assert most_at_once(spans) == 1
    assert spans[0][0] < spans[1][0] < spans[2][0]  # in the order they were started
    assert engine.get_run(extra)["nodes"]["work"]["state"] == "canceled"


def test_a_retry_waits_for_a_place_too(engine, workers) -> None:
    workers.start(2)
    failing = flow(node("work", "sleep", seconds=0.2, fail_attempts=1), name="lim2",
                   max_active_runs=1)
    first = engine.start_run(failing)
    assert wait_run(engine, first, timeout=30)["status"] == "failed"
    blocker = engine.start_run(flow(node("work", "sleep", seconds=2), name="lim2",
                                    max_active_runs=1))
    engine.retry_run(first)
    assert engine.get_run(first)["status"] == "queued"
    done = wait_run(engine, first, timeout=60)
    assert done["status"] == "succeeded"
    other = wait_run(engine, blocker, timeout=60)
    assert ts(done["nodes"]["work"]["started_at"]) >= ts(other["nodes"]["work"]["ended_at"])

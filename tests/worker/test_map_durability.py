"""A map's items survive killed workers (issue #20): kill every worker mid-map, start new
ones, and every item succeeds exactly once — none lost, none that succeeded runs again."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from nexusflow_worker.chaos import check_invariants, wait_rq_idle
from nftest import flow, node, wait_run
from test_map import ItemServer, http_map


def kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def items_of(engine, run_id: str) -> dict[int, dict[str, Any]]:
    with engine.pool.connection() as conn:
        return {r["item"]: r for r in conn.execute(
            "SELECT item, state, attempt, started_at, ended_at FROM map_items"
            " WHERE execution_id=%s", (run_id,))}


def attempts_of(engine, run_id: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    with engine.pool.connection() as conn:
        for r in conn.execute("SELECT item, attempt, status FROM map_item_attempts"
                              " WHERE execution_id=%s ORDER BY item, attempt", (run_id,)):
            out.setdefault(r["item"], []).append(r)
    return out


def wait_items_done(engine, run_id: str, at_least: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = sum(1 for r in items_of(engine, run_id).values() if r["state"] == "succeeded")
        if done >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} items of run {run_id} done in {timeout}s")


def assert_each_item_succeeded_once(engine, settings, run_id: str, killed_at: float,
                                    total: int) -> int:
    wait_rq_idle(engine.redis, settings, timeout=15)
    items = items_of(engine, run_id)
    earlier = attempts_of(engine, run_id)
    assert len(items) == total
    assert {r["state"] for r in items.values()} == {"succeeded"}
    lost = 0
    for i, row in items.items():
        history = earlier.get(i, [])
        # Earlier attempts of an item are all lost ones (its batch died with the workers):
        # its one success is the item's own row.
        assert [a["status"] for a in history] == ["lost"] * len(history), (i, history)
        assert row["attempt"] == len(history) + 1, (i, row, history)
        lost += len(history)
        if row["ended_at"].timestamp() < killed_at:  # done before the kill: never again
            assert row["attempt"] == 1 and not history, (i, row)
    with engine.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM map_leases WHERE execution_id=%s",
                            (run_id,)).fetchone()["n"] == 0
    rep = check_invariants(engine.pool, engine.redis, settings, [run_id], store=engine.store)
    assert rep.ok, str(rep)
    return lost


def test_every_worker_killed_mid_map_every_item_succeeds_exactly_once(engine, settings,
                                                                     workers) -> None:
    total = 600
    sup = workers.start(2)
    doc = flow(node("m", "map", items=f"list(range({total}))",
                    node={"type": "sleep", "config": {"seconds": 0.01}}),
               node("n", expression="len(inputs['m'])"), edges=[("m", "n")],
               name="map-kill")
    run_id = engine.start_run(doc)
    wait_items_done(engine, run_id, 150)
    killed_at = time.time()
    kill_group(sup)  # the supervisor, its reconciler and every worker process, mid-batch
    before = sum(1 for r in items_of(engine, run_id).values() if r["state"] == "succeeded")
    workers.start(2)
    run = wait_run(engine, run_id, timeout=90)
    recovered = time.time() - killed_at
    assert run["status"] == "succeeded", run["nodes"]
    assert run["nodes"]["n"]["output"] == total
    lost = assert_each_item_succeeded_once(engine, settings, run_id, killed_at, total)
    print(f"\nkilled every worker with {before} of {total} items done: {lost} item attempts "
          f"lost and re-run, run finished {recovered:.1f} s after the kill "
          f"(lease {settings.lease_s:g} s)")
    assert before < total and lost > 0


def test_killed_workers_mid_map_of_http_items(engine, settings, workers) -> None:
    with ItemServer(delay=0.05) as server:
        sup = workers.start(2)
        run_id = engine.start_run(http_map(server.url, 400, concurrency=20))
        wait_items_done(engine, run_id, 60)
        killed_at = time.time()
        kill_group(sup)
        workers.start(2)
        run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run["nodes"]
    assert run["nodes"]["after"]["output"] == list(range(400))
    lost = assert_each_item_succeeded_once(engine, settings, run_id, killed_at, 400)
    assert lost > 0
    # an item sent again after a lost attempt carries the same idempotency key
    assert all(keys == {f"{run_id}:m:{i}"} for i, keys in server.keys.items())

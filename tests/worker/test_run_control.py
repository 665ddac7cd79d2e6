"""Run control: cancel, retry in the same run, retry from a node, replay — via Engine and CLI.

A retry reopens the same run: succeeded nodes keep their outputs and are not run again
(their attempt log shows one attempt); failed, skipped and canceled nodes run again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nexusflow_worker.chaos import check_invariants, wait_rq_idle
from nftest import flow, node, settings_env, wait_run

from nexusflow_kernel.errors import NotFoundError, RunStateError

ROOT = Path(__file__).resolve().parents[2]


def cli(settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def statuses(engine, run_id: str, node_id: str) -> list[str]:
    with engine.pool.connection() as conn:
        return [r["status"] for r in conn.execute(
            "SELECT status FROM node_logs WHERE execution_id=%s AND node_id=%s"
            " ORDER BY attempt", (run_id, node_id))]


def invariants(engine, settings, run_ids: list[str], openings: int = 1) -> None:
    wait_rq_idle(engine.redis, settings)
    rep = check_invariants(engine.pool, engine.redis, settings, run_ids, openings=openings,
                           store=engine.store)
    assert rep.ok, str(rep)


def wait_state(engine, run_id: str, node_id: str, state: str, timeout: float = 20) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = engine.get_run(run_id, outputs=False)["nodes"][node_id]
        if info["state"] == state:
            return info
        time.sleep(0.05)
    raise AssertionError(f"{node_id} never became {state}")


def failing_flow() -> dict:
    # B fails its first attempt on purpose (no retries); D runs beside it and succeeds.
    return flow(node("A", "noop", value=7),
                node("B", "sleep", seconds=0.1, fail_attempts=1),
                node("C", expression="inputs['B']['attempt'] * 10"),
                node("D", expression="inputs['A'] + 1"),
                edges=[("A", "B"), ("B", "C"), ("A", "D")], name="retry-me")


def test_retry_failed_run_in_place_reuses_succeeded_outputs(engine, settings, workers) -> None:
    workers.start(2)
    run_id = engine.start_run(failing_flow())
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "failed"
    assert run["nodes"]["B"]["state"] == "failed"
    assert run["nodes"]["C"]["state"] == "skipped"
    assert engine.retry_run(run_id) == run_id  # the same run
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["C"]["output"] == 20  # B's second attempt fed C
    assert run["nodes"]["D"]["output"] == 8
    assert statuses(engine, run_id, "A") == ["succeeded"]  # not run again
    assert statuses(engine, run_id, "D") == ["succeeded"]
    assert statuses(engine, run_id, "B") == ["failed", "succeeded"]
    assert statuses(engine, run_id, "C") == ["succeeded"]
    invariants(engine, settings, [run_id], openings=2)
    with pytest.raises(RunStateError, match="nothing to retry"):
        engine.retry_run(run_id)


def test_retry_from_a_node_reruns_it_and_its_descendants(engine, settings, workers) -> None:
    workers.start(2)
    run_id = engine.start_run(failing_flow())
    wait_run(engine, run_id, timeout=30)
    engine.retry_run(run_id)
    wait_run(engine, run_id, timeout=30)
    engine.retry_run(run_id, from_node="B")
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert statuses(engine, run_id, "A") == ["succeeded"]
    assert statuses(engine, run_id, "D") == ["succeeded"]
    assert statuses(engine, run_id, "B") == ["failed", "succeeded", "succeeded"]
    assert statuses(engine, run_id, "C") == ["succeeded", "succeeded"]
    assert run["nodes"]["C"]["output"] == 30
    invariants(engine, settings, [run_id], openings=3)
    with pytest.raises(NotFoundError):
        engine.retry_run(run_id, from_node="nope")


def test_retry_of_a_running_run_is_refused(engine, settings, workers) -> None:
    workers.start(1)
    run_id = engine.start_run(flow(node("S", "sleep", seconds=10), name="busy"))
    wait_state(engine, run_id, "S", "running")
    with pytest.raises(RunStateError, match="still running"):
        engine.retry_run(run_id)
    engine.cancel_run(run_id)
    with pytest.raises(RunStateError, match="already canceled"):
        engine.cancel_run(run_id)
    assert wait_run(engine, run_id, timeout=10)["status"] == "canceled"
    # The run reads canceled at once; its running node stops within a heartbeat.
    wait_state(engine, run_id, "S", "canceled", timeout=5)
    # A canceled run can be retried: the canceled node runs again, in the same run.
    engine.retry_run(run_id)
    wait_state(engine, run_id, "S", "running")
    engine.cancel_run(run_id)
    wait_state(engine, run_id, "S", "canceled", timeout=5)
    assert wait_run(engine, run_id, timeout=10)["status"] == "canceled"
    assert statuses(engine, run_id, "S") == ["canceled", "canceled"]


def test_replay_is_a_new_run_with_the_same_version_and_inputs(engine, settings,
                                                              workers) -> None:
    workers.start(2)
    doc = flow(node("A", expression="params['n'] * 2"), name="replay-me")
    first = engine.start_run(doc, inputs={"n": 21})
    wait_run(engine, first, timeout=30)
    second = engine.replay_run(first)
    assert second != first
    a, b = engine.get_run(first), wait_run(engine, second, timeout=30)
    assert b["status"] == "succeeded"
    assert (b["workflow_id"], b["version"], b["inputs"]) == (a["workflow_id"], a["version"],
                                                             a["inputs"])
    assert b["replay_of"] == first and b["trigger"] == "replay"
    assert b["nodes"]["A"]["output"] == 42
    invariants(engine, settings, [first, second])


def test_cli_cancel_retry_replay(engine, settings, workers) -> None:
    workers.start(2)
    # cancel: the running node stops, nothing downstream starts
    slow = engine.start_run(flow(node("S", "sleep", seconds=20), node("T", "noop"),
                                 edges=[("S", "T")], name="cli-cancel"))
    wait_state(engine, slow, "S", "running")
    out = cli(settings, "cancel", slow)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"canceled {slow}"
    run = wait_run(engine, slow, timeout=10)
    assert run["status"] == "canceled"
    assert run["nodes"]["T"]["state"] == "canceled" and statuses(engine, slow, "T") == []
    again = cli(settings, "cancel", slow)
    assert again.returncode == 2 and "already canceled" in again.stderr
    assert again.stderr.count("\n") == 1  # one line, no traceback

    # retry: failed run, in place
    run_id = engine.start_run(failing_flow())
    wait_run(engine, run_id, timeout=30)
    out = cli(settings, "retry", run_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == run_id
    assert wait_run(engine, run_id, timeout=30)["status"] == "succeeded"
    assert statuses(engine, run_id, "A") == ["succeeded"]

    # retry --from NODE
    out = cli(settings, "retry", run_id, "--from", "C")
    assert out.returncode == 0, out.stderr
    assert wait_run(engine, run_id, timeout=30)["status"] == "succeeded"
    assert statuses(engine, run_id, "C") == ["succeeded", "succeeded"]
    assert statuses(engine, run_id, "B") == ["failed", "succeeded"]
    bad = cli(settings, "retry", run_id, "--from", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr

    # replay
    out = cli(settings, "replay", run_id)
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.strip()
    assert new_id != run_id
    replayed = wait_run(engine, new_id, timeout=30)
    assert replayed["replay_of"] == run_id
    # a replay is a fresh run: B fails its first attempt again, as the original did
    assert replayed["status"] == "failed"
    invariants(engine, settings, [slow, new_id])
    invariants(engine, settings, [run_id], openings=3)

    missing = cli(settings, "retry", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2 and "no run" in missing.stderr


def test_cancel_stops_a_running_node_at_once_not_at_the_next_heartbeat(settings) -> None:
    """RQ's stop-job command wakes the worker's lease keeper, which sees the cancel now."""
    from dataclasses import replace

    from nftest import WorkerPool

    from nexusflow_kernel.engine import Engine

    slow = replace(settings, heartbeat_s=20.0, lease_s=60.0)  # a heartbeat would take 20 s
    engine = Engine(slow)
    pool = WorkerPool(slow)
    try:
        pool.start(1)
        run_id = engine.start_run(flow(node("S", "sleep", seconds=30), name="stop-now"))
        wait_state(engine, run_id, "S", "running")
        time.sleep(0.5)  # well inside the node, and the lease keeper's first wait
        t0 = time.monotonic()
        engine.cancel_run(run_id)
        wait_state(engine, run_id, "S", "canceled", timeout=10)
        stopped_s = time.monotonic() - t0
        assert stopped_s < 3.0, f"the node went on for {stopped_s:.1f} s after the cancel"
        assert statuses(engine, run_id, "S") == ["canceled"]
    finally:
        pool.stop()

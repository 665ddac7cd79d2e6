"""The ``nexusflow`` command line on real backends: exit codes, whole errors, what to do."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from nftest import flow, node, settings_env, wait_run

ROOT = Path(__file__).resolve().parents[3]
LONG_KEY = "a_parameter_nobody_passed_" + "x" * 120


def cli(settings, *args: str, timeout: float = 90, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=env or settings_env(settings), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_show_exits_1_for_a_failed_run_and_prints_the_whole_error(engine, workers, settings):
    workers.start(1)
    run_id = engine.start_run(flow(node("A", expression=f"params['{LONG_KEY}']"),
                                   node("B", "noop"), edges=[("A", "B")]))
    assert wait_run(engine, run_id)["status"] == "failed"
    error = engine.get_run(run_id)["nodes"]["A"]["error"]
    assert LONG_KEY in error and len(error) > 150

    shown = cli(settings, "show", run_id)
    assert shown.returncode == 1, shown.stderr
    assert f"\nA: {error}\n" in shown.stdout  # whole, on one line under the table
    as_json = cli(settings, "show", run_id, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["nodes"]["A"]["error"] == error

    ok = engine.start_run(flow(node("A", "noop")))
    assert wait_run(engine, ok)["status"] == "succeeded"
    assert cli(settings, "show", ok).returncode == 0


def test_unreachable_database_says_what_to_do(settings):
    dead = replace(settings, database_url="postgresql://u:hunter2@127.0.0.1:9/x")
    result = cli(dead, "runs")
    assert result.returncode == 3
    message = result.stderr.strip()
    assert message.count("\n") == 0 and "hunter2" not in message
    assert "PostgreSQL at postgresql://u:***@127.0.0.1:9/x is not reachable" in message
    assert "unset NEXUSFLOW_DATABASE_URL to use the PostgreSQL that Nexus-Flow embeds" in message


def test_unreachable_redis_says_what_to_do(settings):
    dead = replace(settings, redis_url="redis://:hunter2@127.0.0.1:9/0")
    result = cli(dead, "run", "examples/diamond.nxflow")
    assert result.returncode == 3
    assert "Redis at redis://:***@127.0.0.1:9/0 is not reachable" in result.stderr
    assert "unset NEXUSFLOW_REDIS_URL to use the Redis that Nexus-Flow embeds" in result.stderr


def test_a_cycle_names_the_edge_that_closes_it(settings, tmp_path):
    bad = tmp_path / "cycle.nxflow"
    bad.write_text(json.dumps(flow(*(node(n, "noop") for n in "ABC"),
                                   edges=[("A", "B"), ("B", "C"), ("C", "A")])))
    result = cli(settings, "validate", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {bad} at /edges/2: cycle A -> B -> C -> A (closed by edge 'C-A')")


# ---------------------------------------------------------------- workers and their queues
CODE_FLOW = flow(node("A", expression="20"),
                 node("B", "code", language="python",
                      source="def main(inputs, params):\n    return inputs['A'] + 1\n"),
                 node("C", expression="inputs['B'] * 2"),
                 edges=[("A", "B"), ("B", "C")], name="with-code")
WAITING = ("waiting: no live worker serves queue 'sandbox' "
           "(start `nexusflow worker --queues sandbox`)")
WAITS = {"kind": "worker", "queue": "sandbox", "message": WAITING}
"""What a queued node nobody serves shows in ``waiting`` (as an approval node shows its own)."""


def _code_flow(tmp_path: Path) -> Path:
    path = tmp_path / "code.nxflow"
    path.write_text(json.dumps(CODE_FLOW))
    return path


def test_temporary_workers_serve_every_queue_the_flow_needs(settings, tmp_path):
    """`run --workers 2` on a flow with a code node used to hang: nobody served 'sandbox'."""
    env = settings_env(settings)
    env["NEXUSFLOW_CODE_ISOLATION"] = "process"
    result = cli(settings, "run", str(_code_flow(tmp_path)), "--workers", "2", "--json",
                 env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded" and run["nodes"]["C"]["output"] == 42


def test_a_queue_nobody_serves_is_reported_within_seconds(engine, workers, settings,
                                                          tmp_path):
    from datetime import UTC, datetime

    workers.start(1)  # the default queue only
    _wait_workers(engine, 1)
    env = settings_env(settings)
    env["NEXUSFLOW_CODE_ISOLATION"] = "process"
    proc = subprocess.Popen([sys.executable, "-m", "nexusflow_kernel.cli", "run",
                             str(_code_flow(tmp_path))], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stderr.readline()
        seen = datetime.now(UTC)
        assert line.strip() == f"B: {WAITING}", line
        rest = proc.communicate(timeout=90)[1]
    finally:
        proc.kill()
    assert proc.returncode == 4, rest  # gave up, the run goes on
    assert "gave up after 15 s: node 'B' is waiting: no live worker serves queue 'sandbox'" \
        in rest
    (run,) = engine.list_runs(limit=1)
    shown = engine.get_run(run["run_id"])
    assert shown["status"] == "running" and shown["nodes"]["B"]["state"] == "queued"
    a_done = datetime.fromisoformat(shown["nodes"]["A"]["ended_at"].replace("Z", "+00:00"))
    assert (seen - a_done).total_seconds() < 4  # B was queued when A ended: said at once
    assert shown["nodes"]["B"]["waiting"] == WAITS  # what a late canvas reads
    said_by_show = cli(settings, "show", run["run_id"])
    assert said_by_show.returncode == 0 and f"\nB: {WAITING}\n" in said_by_show.stdout
    assert "waiting" not in shown["nodes"]["A"]
    events = [ev for _id, ev in engine.read_events(run["run_id"])]
    (said,) = [ev for ev in events if ev.get("waiting")]  # once, however often it was asked
    assert said == {**said, "node": "B", "state": "queued", "waiting": WAITS}

    workers.start(1, "--queues", "sandbox")  # what the message says: the run finishes
    assert wait_run(engine, run["run_id"], timeout=60)["status"] == "succeeded"
    assert "waiting" not in engine.get_run(run["run_id"])["nodes"]["B"]


def test_workers_that_cannot_run_code_are_said_before_the_run_starts(engine, workers,
                                                                    settings, tmp_path):
    env = settings_env(settings)
    # auto isolation and an engine nobody runs: these workers cannot run code
    env.update(NEXUSFLOW_CODE_ISOLATION="auto", DOCKER_HOST="unix:///nonexistent/docker.sock")
    workers.start(1, "--queues", "default,sandbox", env=env)
    _wait_workers(engine, 1)
    before = len(engine.list_runs(limit=1000))
    result = cli(settings, "run", str(_code_flow(tmp_path)))
    assert result.returncode == 2
    assert ("node 'B' runs code, but 1 of the 1 live workers serving queue 'sandbox' cannot "
            "run code: code isolation 'auto' and no Docker engine answers at "
            "unix:///nonexistent/docker.sock") in result.stderr
    assert "NEXUSFLOW_CODE_ISOLATION=process" in result.stderr
    assert len(engine.list_runs(limit=1000)) == before  # nothing was started


def test_an_isolation_choice_that_would_not_apply_is_refused(engine, workers, settings,
                                                            tmp_path):
    env = settings_env(settings)
    env["NEXUSFLOW_CODE_ISOLATION"] = "none"
    workers.start(1, "--queues", "default,sandbox", env=env)
    _wait_workers(engine, 1)
    mine = settings_env(settings)
    mine["NEXUSFLOW_CODE_ISOLATION"] = "process"
    before = len(engine.list_runs(limit=1000))
    result = cli(settings, "run", str(_code_flow(tmp_path)), env=mine)
    assert result.returncode == 2
    assert ("asks for code isolation 'process' (NEXUSFLOW_CODE_ISOLATION), but it does not "
            "apply to this run: the live workers serving queue 'sandbox' run code with "
            "'none'") in result.stderr
    assert len(engine.list_runs(limit=1000)) == before


def _wait_workers(engine, n: int, timeout: float = 30) -> None:
    import time

    from nexusflow_kernel.workers import live_workers

    end = time.monotonic() + timeout
    while True:  # live, and done checking for a Docker engine
        live = live_workers(engine.settings, redis=engine.redis)
        if len(live) >= n and all(w.code != "checking" for w in live):
            return
        assert time.monotonic() < end, f"the workers did not start: {live}"
        time.sleep(0.1)

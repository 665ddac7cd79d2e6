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

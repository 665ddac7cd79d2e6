"""``nexusflow retry RUN --update [--from NODE]``, ``run --use-pins`` and ``--no-cache``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nftest import flow, node, settings_env, wait_run

ROOT = Path(__file__).resolve().parents[3]


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          timeout=90, cwd=ROOT)


def doc(expression: str) -> dict:
    a = node("A", expression="41")
    a["pin"] = {"output": 1}
    a["cache"] = {"ttl_s": 600}
    return flow(a, node("B", expression=expression), edges=[("A", "B")], name="clifix")


def test_retry_update_from_the_run_file_and_pins(engine, workers, settings, tmp_path):
    workers.start(1)
    path = tmp_path / "clifix.nxflow"
    path.write_text(json.dumps(doc("inputs['A'] // 0")))
    ran = cli(settings, "run", str(path), "--json")
    assert ran.returncode == 1, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    refused = cli(settings, "retry", run_id, "--flow", str(path))
    assert refused.returncode == 2 and "--flow goes with --update" in refused.stderr
    path.write_text(json.dumps(doc("inputs['A'] + 1")))
    fixed = cli(settings, "retry", run_id, "--update")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == run_id and "running again B" in fixed.stderr
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded" and run["nodes"]["B"]["output"] == 42
    assert run["nodes"]["A"]["version"] < run["nodes"]["B"]["version"]
    # Removing the succeeded A is refused with its name (exit 2, one line).
    gone = doc("1")
    gone["nodes"] = [gone["nodes"][1]]
    gone["edges"] = []
    path.write_text(json.dumps(gone))
    refused = cli(settings, "retry", run_id, "--update", "--from", "B")
    assert refused.returncode == 2 and "node 'A' succeeded" in refused.stderr
    # --use-pins: A gives its pinned 1; --no-cache runs A again rather than serving it.
    path.write_text(json.dumps(doc("inputs['A'] + 1")))
    pinned = json.loads(cli(settings, "run", str(path), "--json", "--use-pins").stdout)
    assert pinned["nodes"]["B"]["output"] == 2 and pinned["nodes"]["A"]["pinned"]
    cached = json.loads(cli(settings, "run", str(path), "--json").stdout)
    assert cached["nodes"]["A"]["cached_from"]["run_id"] == run_id
    fresh = json.loads(cli(settings, "run", str(path), "--json", "--no-cache").stdout)
    assert "cached_from" not in fresh["nodes"]["A"] and fresh["nodes"]["B"]["output"] == 42

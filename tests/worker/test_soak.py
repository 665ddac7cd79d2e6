"""The chaos soak, one minute: workers killed and Redis restarted empty at random while runs
go on; the soak itself checks the invariants and exits non-zero when one fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from nftest import settings_env


@pytest.mark.timeout(150)
@pytest.mark.serial  # a minute of faults on a schedule: alone, or fewer faults land in it
def test_soak_one_minute(settings) -> None:
    mode = "restart" if shutil.which("redis-server") else "flush"
    proc = subprocess.run(
        [sys.executable, "-c", "from nexusflow_worker.chaos import soak; soak()",
         "--duration", "60", "--runs", "6", "--workers", "2", "--fault-every", "6",
         "--redis-mode", mode, "--json"],
        env=settings_env(settings), capture_output=True, text=True, timeout=140)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    summary = json.loads(next(line for line in proc.stdout.splitlines()
                              if line.startswith("{")))
    assert summary["runs_lost"] == 0
    assert summary["duplicated_node_successes"] == 0
    assert summary["runs_started"] == summary["runs_finished"] > 0
    assert sum(summary["faults"].values()) >= 3
    assert summary["elapsed_s"] <= 75

"""Smoke test of the benchmark: ``python -m bench --quick`` runs every shape and prints the table.

Speed is not checked here (that is what ``python -m bench`` itself is for); only that raw RQ
and every Nexus-Flow shape run to success on the test backends and the table comes out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_bench_quick_runs_every_shape_and_prints_the_table(backend_urls, tmp_path) -> None:
    admin_db, redis_base = backend_urls
    parts = urlsplit(redis_base)
    env = dict(os.environ)
    env.update({
        "NEXUSFLOW_DATABASE_URL": admin_db,
        "NEXUSFLOW_REDIS_URL": f"{parts.scheme}://{parts.netloc}",
        "BENCH_REDIS_DB": os.environ.get("NEXUSFLOW_TEST_BENCH_REDIS_DB", "11"),
        "BENCH_WIDTH": "220",
    })
    out_json = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--workers", "2", "--no-scaleout",
         "--no-websocket", "--json", str(out_json)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=220)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout
    for needle in ("Raw RQ baseline", "Nexus-Flow beside raw RQ", "Engine-wide measurements",
                   "wide 20", "chain 10", "wide 50", "chain 20", "lattice 10x10", "diamond",
                   "event latency", "memory growth", "import nexusflow_kernel"):
        assert needle in text, f"{needle!r} missing from the table:\n{text[-4000:]}"
    results = json.loads(out_json.read_text())
    shapes = results["nexus"]["2"]
    assert len(shapes) == 6
    for name, m in shapes.items():
        assert m["statuses"] == ["succeeded"], (name, m)
    assert results["raw"]["2"]["drain"]["times"]
    assert all(m["status"] == "succeeded" for m in results["memory"])
    assert results["latency"]["redis"], "no event latency measured"

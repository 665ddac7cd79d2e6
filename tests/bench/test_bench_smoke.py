"""Smoke test of the benchmark: ``python -m bench --quick`` runs every shape and prints the table.

Speed is not checked here (that is what ``python -m bench`` itself is for); only that raw RQ,
Celery and every Nexus-Flow shape (the maps too) run to success on the test backends and the
table comes out.
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


# Alone on the machine (``./dev test`` runs the serial tests after the parallel ones): the
# bench loads both cores, and beside other tests its peers ran past their own time limits.
@pytest.mark.serial
@pytest.mark.timeout(480)
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
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=450)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout
    for needle in ("Raw RQ baseline", "Nexus-Flow beside Celery and raw RQ",
                   "Engine-wide measurements", "wide 20", "chain 10", "wide 50", "chain 20",
                   "lattice 10x10", "diamond", "map 200", "http map 40", "event latency",
                   "memory growth", "import nexusflow_kernel"):
        assert needle in text, f"{needle!r} missing from the table:\n{text[-4000:]}"
    results = json.loads(out_json.read_text())
    shapes = results["nexus"]["2"]
    assert len(shapes) == 8
    for name, m in shapes.items():
        assert m["statuses"] == ["succeeded"], (name, m)
    assert shapes["map 200"]["items"] == 200
    assert shapes["http map 40"]["endpoint"]["peak_requests"] > 1  # items waited together
    assert results["raw"]["2"]["drain"]["times"]
    celery = results["celery"]["2"]
    assert set(celery) == {"wide 20", "chain 10", "wide 50", "chain 20", "diamond", "map 200"}
    assert all(m["times"] for m in celery.values()), celery  # an error names the shape's
    assert all(m["status"] == "succeeded" for m in results["memory"])
    assert results["latency"]["redis"], "no event latency measured"

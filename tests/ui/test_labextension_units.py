"""The labextension's TypeScript unit tests (graph <-> Yjs mapping, cycle checks, canonical text).

They run with node's test runner (`npm test` in labextension/); this wrapper makes them part of
the pytest suite.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[2] / "labextension"


def test_typescript_unit_tests_pass() -> None:
    if shutil.which("npm") is None or not (LABEXTENSION / "node_modules" / "typescript").is_dir():
        pytest.fail("labextension npm deps missing: run `pip install -e .` (it runs npm install)")
    proc = subprocess.run(
        ["npm", "test", "--silent"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=300
    )
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout

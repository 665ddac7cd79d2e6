"""The layering of the code, as docs/architecture.md draws it, checked on every run.

import-linter reads the contracts in pyproject.toml: kernel <- worker <- server, the engine's
subpackages from the front doors (cli, notebook) down to the foundation (settings, errors), no
import cycles between layers, and no Jupyter server, tornado or widget import in the engine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_the_engine_type_checks() -> None:
    mypy = Path(sys.executable).with_name("mypy")
    proc = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_test_modules_have_unique_names() -> None:
    # pytest imports test modules by their basename (rootdir-relative, no packages): two
    # test_x.py in different folders stop the whole collection in CI.
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if "node_modules" in path.parts:
            continue
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, "test modules share a name: " + "; ".join(clashes)

"""The notebook code the README and docs/notebooks.md show runs as written, on real workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def python_block(doc: str, heading: str) -> str:
    """Return the first ```python block after ``heading`` in ``doc``."""
    text = (ROOT / doc).read_text()
    start = text.index(heading)
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, f"no python block under {heading!r} in {doc}"
    return match.group(1)


def run_script(code: str, tmp_path: Path, env: dict) -> str:
    script = tmp_path / "snippet.py"  # a file, so @task can read the function's source
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_readme_notebook_example_runs(notebook_env, tmp_path):
    code = python_block("README.md", "## In a notebook")
    out = run_script(code + "\nimport json\nprint('REPORT', json.dumps(run.outputs['report']))\n"
                     "print('LOG', run.logs('B').splitlines()[0])\n", tmp_path, notebook_env)
    report = json.loads(out.split("REPORT ", 1)[1].splitlines()[0])
    assert report["n"] == 5 and report["waited"] >= 0.9, out  # B waited 1 s
    assert "LOG --- attempt 1: succeeded" in out
    assert (tmp_path / "diamond.nxflow").exists()


def test_the_notebooks_doc_builds_the_same_diamond(notebook_env, tmp_path):
    code = python_block("docs/notebooks.md", "## Build")
    out = run_script(code + "\nprint('ORDER', f.validate().order)\n", tmp_path, notebook_env)
    assert "ORDER ('A', 'B', 'C', 'D')" in out
    readme = python_block("README.md", "## In a notebook")
    for line in ('f.delay("B", 1)', "inputs['B']['waited_s']"):
        assert line in code and line in readme  # one example, told the same way twice

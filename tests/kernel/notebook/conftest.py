"""Fixtures for the notebook tests: notebooks executed against the test backends."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import settings_env

NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


@pytest.fixture
def notebook_env(settings, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Point this process (and kernels it starts) at the test backends; return the env."""
    env = settings_env(settings)
    env["NEXUSFLOW_CONNECTION_WAREHOUSE"] = database_url
    env["NEXUSFLOW_CONNECTION_WAREHOUSE_TRUSTED"] = "1"  # the test server's superuser
    env["NEXUSFLOW_CODE_ISOLATION"] = "process"
    for key, value in env.items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    yield env


def execute_notebook(name: str, workdir: Path, timeout: int = 240):
    """Execute notebooks/<name> top to bottom in ``workdir``; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOKS / name, workdir / name)
    nb = nbformat.read(workdir / name, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=nb.metadata.kernelspec.name,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(cwd=str(workdir), env=dict(os.environ))
    nbformat.write(nb, workdir / name)
    return nb

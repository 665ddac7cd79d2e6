"""Binder: run postBuild and start the way repo2docker does, in a throw-away HOME."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BINDER = ROOT / "binder"

CHECK = """
import sys, time
import psycopg
from nexusflow_kernel.transport.broker import get_redis
from nexusflow_kernel.workers import worker_count
from nexusflow_kernel.services import resolve_backends
from nexusflow_kernel.settings import Settings

s = Settings.from_env()
assert s.database_url is None and s.redis_url is None, "binder must use the embedded services"
s = resolve_backends(s)
with psycopg.connect(s.database_url, connect_timeout=5) as conn:
    assert conn.execute("SELECT 1").fetchone()[0] == 1
assert get_redis(s.redis_url).ping()
end = time.monotonic() + 60
while worker_count(s) == 0:
    assert time.monotonic() < end, "no worker registered"
    time.sleep(0.2)
print("binder services answer:", sys.argv[1])
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside pytest's root (the embedded PostgreSQL, run as another user when
    the tests run as root, must reach it)."""
    path = Path(tempfile.mkdtemp(prefix="nf-binder-"))
    os.chmod(path, 0o755)
    yield path / "nf"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def binder_env(tmp_path: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUSFLOW_", "PIP_"))}
    home = tmp_path / "home"
    home.mkdir()
    env.update({
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "NEXUSFLOW_DATA_DIR": str(data_dir),
    })
    return env


def test_binder_files_follow_repo2docker_conventions():
    assert (BINDER / "requirements.txt").read_text().strip()
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert os.access(path, os.X_OK), f"binder/{script} must be executable"
        assert path.read_text().startswith("#!/bin/bash")
    assert 'exec "$@"' in (BINDER / "start").read_text()
    assert (ROOT / "notebooks" / "quickstart.ipynb").exists()


def test_postbuild_then_start(binder_env: dict[str, str], data_dir: Path):
    # The image build: pip only resolves here (this environment already has the package),
    # the rest runs for real: the widget bundle and the embedded services' data folder.
    # (pip reads PIP_NO_BUILD_ISOLATION inverted: "0" turns build isolation off.)
    build_env = dict(binder_env, PIP_DRY_RUN="1", PIP_NO_BUILD_ISOLATION="0",
                     PIP_NO_INDEX="1", PIP_QUIET="1")
    subprocess.run(["bash", str(BINDER / "postBuild")], cwd=ROOT, env=build_env, check=True,
                   timeout=600)
    assert data_dir.is_dir()
    assert (ROOT / "nexusflow_kernel" / "notebook" / "static" / "widget.js").stat().st_size > 1e5

    # A session: start runs the services and workers, then execs the session's command.
    try:
        out = subprocess.run(["bash", str(BINDER / "start"), sys.executable, "-c", CHECK, "ok"],
                             cwd=ROOT, env=binder_env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "binder services answer: ok" in out.stdout
    finally:
        pid_file = data_dir / "workers.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli.main", "services", "stop"],
                       env=binder_env, timeout=120)

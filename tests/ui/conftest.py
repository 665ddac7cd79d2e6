"""A real JupyterLab server for the browser tests, isolated in a temporary folder.

The browser side is Node + playwright-core driving Debian's Chromium (labextension/ui-tests,
installed by scripts/setup-browser.sh). Without Chromium or the npm deps these tests fail in CI
and skip elsewhere, with the command that installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nftest import settings_env

from nexusflow_kernel.procs import free_port

REPO = Path(__file__).resolve().parents[2]
UI_TESTS = REPO / "labextension" / "ui-tests"
LAB_SETTINGS = REPO / "scripts" / "lab-settings"
"""The settings defaults ``./dev lab`` starts JupyterLab with (announcements off)."""
ARTIFACTS = Path(os.environ.get("NEXUSFLOW_UI_ARTIFACTS", REPO / "test-results" / "ui"))


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def run_script(self, scenario: str, timeout: float = 120, *, script: str = "canvas.mjs",
                   **env: str) -> dict:
        """Run one browser scenario of labextension/ui-tests/``script``; return its result."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        full_env = dict(
            os.environ,
            LAB_URL=self.url,
            LAB_TOKEN=self.token,
            CHROMIUM=chromium_path() or "",
            ARTIFACTS=str(ARTIFACTS),
            **env,
        )
        proc = subprocess.run(
            ["node", str(UI_TESTS / script), scenario],
            cwd=UI_TESTS,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        sys.stdout.write(proc.stdout)
        result = None
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
        if proc.returncode != 0 or result is None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            pytest.fail(
                f"browser scenario {scenario} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n--- server log tail ---\n{tail}"
            )
        return result


def _require_browser() -> None:
    missing = []
    if not chromium_path():
        missing.append("Chromium")
    if not (UI_TESTS / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm)")
    if shutil.which("node") is None:
        missing.append("node")
    if missing:  # `./dev test` installs them: a missing part fails, it never skips
        pytest.fail(f"{', '.join(missing)} missing: run scripts/setup-browser.sh")


@contextmanager
def running_lab(base: Path, env: dict[str, str], *, token: str,
                log_name: str = "jupyter.log", extra: tuple[str, ...] = ()) -> Iterator[Lab]:
    """Start `jupyter lab` on a free loopback port with its state under ``base``; stop it after.

    Jupyter's data, runtime, settings and workspaces folders live under ``base``, the news
    toast is switched off as ``./dev lab`` does it (``LAB_SETTINGS``), ``base/root`` is the
    server's root folder, and the server log is kept as a test artifact named ``log_name``.
    """
    root = base / "root"
    root.mkdir(exist_ok=True)
    settings_dir = base / "settings"
    port = free_port()
    env = dict(
        env,
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    log = base / "jupyter.log"
    cmd = [
        sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
        "--ip", "127.0.0.1", "--port", str(port), "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        f"--LabApp.app_settings_dir={LAB_SETTINGS}", *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Lab(url=url, token=token, root=root, log=log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        _stop_embedded(env)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / log_name)


def _stop_embedded(env: dict[str, str]) -> None:
    """Stop the embedded PostgreSQL and Redis the server started (zero-config), if it did.

    A server that exits stops what it started itself; one that had to be killed could not,
    and the test must not leave two servers behind.
    """
    data_dir = env.get("NEXUSFLOW_DATA_DIR")
    if not data_dir or (env.get("NEXUSFLOW_DATABASE_URL") and env.get("NEXUSFLOW_REDIS_URL")):
        return
    from nexusflow_kernel.services import stop_services

    stop_services(Path(data_dir))


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Start `jupyter lab` on a free loopback port in a fresh root folder; stop it afterwards."""
    _require_browser()
    base = tmp_path_factory.mktemp("lab")
    env = dict(os.environ, NEXUSFLOW_DATA_DIR=str(base / "nexusflow"))
    with running_lab(base, env, token="nexusflow-ui-test",
                     extra=("--YDocExtension.document_save_delay=0.3",)) as server:
        yield server


@pytest.fixture
def backend_lab(settings, tmp_path) -> Iterator[Lab]:
    """`jupyter lab` whose environment (and so its kernels') points at the test backends."""
    _require_browser()
    env = settings_env(settings)
    env.update(
        NEXUSFLOW_LOCAL_WORKERS="0",  # the test's workers serve the runs
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
    )
    with running_lab(tmp_path, env, token="nexusflow-widget-test",
                     log_name="jupyter-notebook-widget.log") as server:
        yield server


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a notebook of code ``cells`` with a Python kernelspec (no kernel picker)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path

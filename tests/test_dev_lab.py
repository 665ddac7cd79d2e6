"""The README's first command on a machine with, and without, a Docker engine.

``./dev lab`` starts JupyterLab on the embedded services; the quickstart notebook then runs in
a kernel of that JupyterLab, cell by cell, its ``@task`` on JupyterLab's supervised workers.
Without an engine (an unreachable ``DOCKER_HOST``) ``./dev lab`` says so and what to do, and
starts JupyterLab with code isolation ``process``; with one, the sandbox image is built and
``@task`` runs in a container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from nexusflow_kernel.procs import free_port
from nexusflow_kernel.services import services_status, stop_services
from tests.kernel.services.test_lifetime import _api, _execute
from tests.kernel.services.test_services import private_base

ROOT = Path(__file__).resolve().parents[1]


def _lab_env(base: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEXUSFLOW_", "JUPYTER")) and k != "DOCKER_HOST"}
    env.update(
        NEXUSFLOW_VENV=sys.prefix,  # this test's environment: ./dev finds it installed
        NEXUSFLOW_DATA_DIR=str(base / "data"),
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "jdata"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        NEXUSFLOW_DOCKER_WAIT_S="20",
        PORT=str(free_port()),
        **extra,
    )
    return env


class DevLab:
    """``./dev lab`` in a scratch environment; its output kept in a file."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base = base
        self.url = f"http://127.0.0.1:{env['PORT']}/"
        self.token = "nexusflow-dev-lab"
        self.log = base / "dev-lab.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / "dev"), "lab", f"--ServerApp.token={self.token}",
                 "--ServerApp.port_retries=0", "--LabApp.news_url=None"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout  # a first sandbox build may take minutes
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"./dev lab exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"./dev lab did not answer in {timeout} s:\n{self.output()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # `./dev lab` exec'd jupyter: this is it
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _quickstart_in_lab(lab: DevLab, workdir: Path) -> str:
    """Run the quickstart's cells in a kernel of ``lab``; return what they printed."""
    kernel = _api(lab, "POST", "kernels")
    printed = _execute(lab, kernel["id"], (
        f"import os, time\nos.chdir({str(workdir)!r})\n"
        "import nexusflow_kernel as nf\n"
        "end = time.monotonic() + 120\n"
        "while sorted(w.queues for w in nf.live_workers()) != [('default', 'sandbox')] * 2 \\\n"
        "        or 'checking' in {w.code for w in nf.live_workers()}:\n"
        "    assert time.monotonic() < end, nf.live_workers()\n"
        "    time.sleep(0.2)\n"
        "print('CODE', os.environ.get('NEXUSFLOW_CODE_ISOLATION'),"
        " sorted({w.code for w in nf.live_workers()}))"))
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            printed += _execute(lab, kernel["id"], cell.source, timeout=300)
    return printed


@pytest.mark.parametrize("engine", ["no engine", "docker"])
def test_dev_lab_gives_a_working_quickstart(engine, tmp_path) -> None:
    extra = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"} if engine == "no engine" else {}
    with private_base() as base:
        lab = DevLab(base, _lab_env(base, **extra))
        try:
            lab.wait_ready()
            said = lab.output()
            if engine == "no engine":
                assert ("DOCKER_HOST=unix:///nonexistent/docker.sock does not answer, and it "
                        "is not an engine this script starts") in said
                assert "NEXUSFLOW_CODE_ISOLATION=process, not a security" in said
                assert "sudo bash scripts/setup-docker.sh && .venv/bin/nexusflow sandbox " \
                    "build" in said
                expect = "CODE process ['process']"
            else:
                assert "code isolation: docker (code nodes and @task functions run in the " \
                    "sandbox image)" in said
                expect = "CODE docker ['docker']"
            printed = _quickstart_in_lab(lab, tmp_path)
            assert expect in printed, printed
            assert "quickstart: all checks passed" in printed, printed
            assert not (tmp_path / "diamond.nxflow").exists()  # it cleans up after itself
            lab.stop()  # Ctrl-C: JupyterLab stops the embedded servers it started
            assert {v["running"] for v in services_status(base / "data").values()} == {False}
        finally:
            lab.stop()
            stop_services(base / "data")


def test_dev_lab_starts_without_the_jupyter_news_toast() -> None:
    """JupyterLab asks "Would you like to get notified about official Jupyter news?" while its
    ``fetchNews`` setting is ``none``; ``./dev lab`` starts it with that setting's default
    ``false`` (and no update check), so the question never shows."""
    import json

    with private_base() as base:
        env = _lab_env(base, DOCKER_HOST="unix:///nonexistent/docker.sock")
        lab = DevLab(base, env)
        try:
            lab.wait_ready()
            url = (f"{lab.url}lab/api/settings/@jupyterlab/apputils-extension:notification"
                   f"?token={lab.token}")
            with urllib.request.urlopen(url, timeout=30) as r:
                answer = json.loads(r.read())
            defaults = {k: v.get("default") for k, v in answer["schema"]["properties"].items()}
            assert defaults["fetchNews"] == "false"
            assert defaults["checkForUpdates"] is False
            assert "fetchNews" not in (answer.get("settings") or {})  # no user choice needed
        finally:
            lab.stop()
            stop_services(base / "data")

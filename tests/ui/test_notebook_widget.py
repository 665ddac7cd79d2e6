"""The inline canvas in a real browser: a notebook runs a flow on workers and its nodes glow.

JupyterLab runs with the test backends in its environment, so the notebook's kernel (started by
JupyterLab) uses the same PostgreSQL and Redis as the workers this test starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import nbformat
import pytest
from nftest import settings_env

from tests.ui.conftest import ARTIFACTS, Lab, _free_port, _require_browser
from tests.ui.test_live_link import BrowserScenario

CELLS = [
    "import nexusflow_kernel as nf\nfrom IPython.display import display",
    "f = nf.Flow('glow')\n"
    "a = f.transform('A', '21')\n"
    "b = f.delay('B', 1.5)\n"
    "c = f.transform('C', \"inputs['A'] * 2\")\n"
    "d = f.transform('D', \"inputs['C'] + 1\")\n"
    "a >> [b, c]\n"
    "[b, c] >> d;",
    "w = f.widget()\ndisplay(w)",  # the inline canvas, shown before the run starts
    "run = f.run(wait=False)\nw.follow(run)",
    "run.wait(timeout=60, progress=False)\nprint('RUN', run.status, run.outputs['D'])",
]
SHOW_CELLS = 3
"""The first cells show the canvas; the page waits for it, then runs the rest."""


@pytest.fixture
def backend_lab(settings, tmp_path) -> Iterator[Lab]:
    """`jupyter lab` whose environment (and so its kernels') points at the test backends."""
    _require_browser()
    root = tmp_path / "root"
    root.mkdir()
    settings_dir = tmp_path / "settings"
    notification = settings_dir / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), "nexusflow-widget-test"
    env = settings_env(settings)
    env.update(
        NEXUSFLOW_LOCAL_WORKERS="0",  # the test's workers serve the runs
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings_dir),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    log = tmp_path / "jupyter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser",
             "--ip", "127.0.0.1", "--port", str(port), "--ServerApp.port_retries=0",
             f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n"
                            f"{log.read_text()[-3000:]}")
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
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "jupyter-notebook-widget.log").write_bytes(log.read_bytes())


def test_the_inline_canvas_glows_until_every_node_succeeded(backend_lab, workers) -> None:
    workers.start(2)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nbformat.write(nb, backend_lab.root / "glow.ipynb")

    page = BrowserScenario(backend_lab.url, backend_lab.token, "notebook", backend_lab.log,
                           NOTEBOOK="glow.ipynb", EXPECT_NODES="4",
                           SHOW_CELLS=str(SHOW_CELLS))
    try:
        result = page.result(timeout=150)
    finally:
        page.stop()
    print(f"run watched in the page for {result['runMs']} ms; states seen: {result['seen']}")
    assert result["states"] == {n: "succeeded" for n in "ABCD"}
    assert result["runStatus"] == "succeeded"
    # The glow is live: every node started idle; the delayed one showed its progress.
    assert all(seen[0] == "idle" and seen[-1] == "succeeded" for seen in result["seen"].values())
    assert len(result["seen"]["B"]) >= 3, result["seen"]
    assert all(shadow not in ("", "none") for shadow in result["glow"].values()), result["glow"]
    assert any("RUN succeeded 43" in text for text in result["outputs"]), result["outputs"]
    assert result["errors"] == []
    # The canvas fits itself once the output area has a size: every node is in view.
    assert result["visibleAsRendered"] == 4, result

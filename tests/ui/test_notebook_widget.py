"""The inline canvas in a real browser: a notebook runs a flow on workers and its nodes glow.

JupyterLab runs with the test backends in its environment, so the notebook's kernel (started by
JupyterLab) uses the same PostgreSQL and Redis as the workers this test starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import nbformat
import pytest
from nftest import settings_env

from tests.ui.conftest import Lab, _require_browser, running_lab
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
    env = settings_env(settings)
    env.update(
        NEXUSFLOW_LOCAL_WORKERS="0",  # the test's workers serve the runs
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
    )
    with running_lab(tmp_path, env, token="nexusflow-widget-test",
                     log_name="jupyter-notebook-widget.log") as server:
        yield server


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

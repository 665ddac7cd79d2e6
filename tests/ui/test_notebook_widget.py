"""The inline canvas in a real browser: a notebook runs a flow on workers and its nodes glow.

JupyterLab runs with the test backends in its environment, so the notebook's kernel (started by
JupyterLab) uses the same PostgreSQL and Redis as the workers this test starts.
"""

from __future__ import annotations

from tests.ui.conftest import write_notebook
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


def test_the_inline_canvas_glows_until_every_node_succeeded(backend_lab, workers) -> None:
    workers.start(2)
    write_notebook(backend_lab.root / "glow.ipynb", CELLS)

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

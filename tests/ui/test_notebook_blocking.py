"""A blocking ``f.run(...)`` in a real browser: the flow's inline canvas glows while the cell
waits, and a big flow's canvas keeps its text readable.

The run's state changes reach the page while the cell is still running: the widget's follower
thread writes the traits, and ipykernel sends those comm messages on its IOPub channel, which
does not wait for the cell.
"""

from __future__ import annotations

from tests.ui.conftest import write_notebook
from tests.ui.test_live_link import BrowserScenario

DIAMOND = [
    "import nexusflow_kernel as nf",
    "f = nf.Flow('blocking')\n"
    "a = f.transform('A', '21')\n"
    "b = f.delay('B', 1.5)\n"
    "c = f.transform('C', \"inputs['A'] * 2\")\n"
    "d = f.transform('D', \"inputs['C'] + 1\")\n"
    "a >> [b, c]\n"
    "[b, c] >> d;",
    "f",  # the flow's inline canvas, shown before the run
    # one blocking call: no wait=False, no follow(); the canvas above glows on its own
    "run = f.run(timeout=90)\nprint('RUN', run.status, run.outputs['D'])",
]

WIDE = [  # 1 -> 7 -> 1: laid out 7 nodes across, about 1,540 px wide
    "import nexusflow_kernel as nf",
    "f = nf.Flow('wide')\n"
    "top = f.transform('top', '1')\n"
    "middle = [f.transform(f'm{i}', f\"inputs['top'] + {i}\") for i in range(7)]\n"
    "end = f.transform('end', \"sum(inputs.values())\")\n"
    "top >> middle\n"
    "middle >> end;",
    "f",
    "run = f.run(timeout=90)\nprint('RUN', run.status, run.outputs['end'])",
]


def _watch(lab, name: str, cells: list[str], nodes: int) -> dict:
    write_notebook(lab.root / name, cells)
    page = BrowserScenario(
        lab.url,
        lab.token,
        "notebook",
        lab.log,
        NOTEBOOK=name,
        EXPECT_NODES=str(nodes),
        SHOW_CELLS="3",
    )
    try:
        return page.result(timeout=180)
    finally:
        page.stop()


def test_the_displayed_flow_glows_during_a_blocking_run(backend_lab, workers) -> None:
    workers.start(2)
    result = _watch(backend_lab, "blocking.ipynb", DIAMOND, 4)
    print(f"run watched for {result['runMs']} ms; states seen: {result['seen']}")
    assert result["states"] == {n: "succeeded" for n in "ABCD"}
    assert result["drawn"] == 4  # React Flow knows every node's size (none left hidden)
    assert result["runStatus"] == "succeeded"
    # Live while the cell waited: every node went from idle through its run to succeeded,
    # and the delayed one showed the states in between, not only the end.
    assert all(seen[0] == "idle" and seen[-1] == "succeeded" for seen in result["seen"].values())
    assert len(result["seen"]["B"]) >= 3, result["seen"]
    assert any("RUN succeeded 43" in text for text in result["outputs"]), result["outputs"]
    assert result["errors"] == []


def test_a_wide_flow_keeps_its_text_readable(backend_lab, workers) -> None:
    workers.start(2)
    result = _watch(backend_lab, "wide.ipynb", WIDE, 9)
    print(
        f"node text drawn at {result['textPx']:.1f} px; {result['visibleAsRendered']} of 9 "
        f"nodes in view as drawn, {result['visibleAfterFit']} after fit-view"
    )
    assert result["textPx"] >= 9.5  # was ~5 px: all 9 squeezed into the output area
    assert result["visibleAsRendered"] >= 3  # the middle of the flow; pan or zoom for the rest
    # Every node drawn: a node React Flow has no measured size for stays hidden and its fit
    # view skips it (the nodes' sizes must survive the rebuilds each state change makes).
    assert result["drawn"] == 9
    assert result["visibleAfterFit"] == 9  # the fit-view control still shows everything
    assert result["states"] == {
        n: "succeeded" for n in ["top", *(f"m{i}" for i in range(7)), "end"]
    }
    assert any("RUN succeeded 28" in text for text in result["outputs"]), result["outputs"]

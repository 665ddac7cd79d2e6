"""The debug loop on the canvas in a real browser (issue #15): open a failed node in a notebook
and resume the same run with the fix, test a node from the inspector, pin and cache badges."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import nbformat
from nftest import wait_for

from nexusflow_kernel.model.document import dumps_canonical


def node(id: str, type: str, x: float, y: float, **fields) -> dict:
    config = fields.pop("config", {})
    return {"id": id, "type": type, "position": {"x": x, "y": y}, "config": config, **fields}


def write_flow(root: Path, name: str, flow: dict) -> None:
    (root / name).write_text(dumps_canonical(flow))


def get_run(lab, run_id: str) -> dict:
    req = urllib.request.Request(
        f"{lab.url}nexusflow/api/runs/{run_id}", headers={"Authorization": f"token {lab.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


FAILING = {
    "schema": 1,
    "name": "debugme",
    "nodes": [
        node("src", "transform", 0, 0, config={"expression": "{'n': 3}"}),
        node("bad", "transform", 0, 160, config={"expression": "inputs['src']['m'] * 2"}),
    ],
    "edges": [{"id": "src-bad", "source": "src", "target": "bad"}],
}


def test_open_a_failed_node_in_a_notebook_fix_it_and_resume_the_run(lab) -> None:
    write_flow(lab.root, "debugme.nxflow", FAILING)
    result = lab.run_script("notebook", script="debug.mjs", FLOW_FILE="debugme.nxflow", timeout=300)
    run_id = result["runId"]
    # The retry with the current flow is refused while a node that succeeded is gone.
    assert "src" in result["refusal"] and "refused" in result["refusal"].lower()
    assert result["statusAfterRefusal"] == "failed"

    # The notebook next to the flow, opened in Lab with a Python kernel.
    assert result["notebookPath"] == "debugme-bad-debug.ipynb"
    assert result["kernel"]["name"] == "python3" and result["kernel"]["status"] == "idle"
    nb = nbformat.read(lab.root / "debugme-bad-debug.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert nb.metadata["nexusflow"] == {"run_id": run_id, "node_id": "bad"}
    setup = next(c for c in code if "run.debug(" in c)
    assert f"nf.Run.attach({run_id!r})" in setup
    assert "f.link('debugme.nxflow', push=False)" in setup
    assert "ctx = run.debug('bad')" in setup
    assert "ctx.run_here()" in code
    assert any("run.retry(update=True, flow=f, wait=True)" in c for c in code)
    # What Lab showed is what the server wrote (the fix cell the test adds aside).
    assert all(c in result["sources"] or "set(expression" in c for c in code)

    # Its cells ran in the Lab kernel: attached to the run, the node's recorded inputs, the
    # node run here failing as it did on the worker.
    outputs = result["outputs"]
    assert f"<NodeDebug 'bad' of run {run_id}" in outputs[0]
    assert "{'src': {'n': 3}}" in "\n".join(outputs)
    assert "KeyError" in outputs[-1] or "'m'" in outputs[-1]
    assert "fixed" in result["fix"]

    # Retry with the current flow: the same run, succeeded; src kept its first output.
    assert result["checked"] is True
    assert result["retriedRun"] == run_id
    assert result["states"] == {"src": "succeeded", "bad": "succeeded"}
    run = get_run(lab, run_id)
    assert run["status"] == "succeeded"
    assert run["nodes"]["bad"]["output"] == 6
    assert run["nodes"]["src"]["attempts"] == 1
    assert run["nodes"]["bad"]["version"] > run["nodes"]["src"]["version"]
    assert result["errors"] == []


TESTED = {
    "schema": 1,
    "name": "tested",
    "nodes": [
        node("src", "transform", 0, 0, config={"expression": "{'n': 3}"}),
        node("double", "transform", 0, 160, config={"expression": "inputs['src']['n'] * 2"}),
    ],
    "edges": [{"id": "src-double", "source": "src", "target": "double"}],
}


def test_test_a_node_from_the_inspector(lab) -> None:
    write_flow(lab.root, "tested.nxflow", TESTED)
    result = lab.run_script("testnode", script="debug.mjs", FLOW_FILE="tested.nxflow", timeout=200)
    latest, typed, failing = result["latest"], result["typed"], result["failing"]
    assert latest["status"] == "succeeded" and latest["output"].strip() == "6"
    assert json.loads(latest["inputs"]) == {"src": {"n": 3}}  # the latest run's inputs
    assert typed["status"] == "succeeded" and typed["output"].strip() == "42"
    assert failing["status"] == "failed" and failing["output"] is None
    assert "n" in failing["error"]
    assert "not JSON" in result["bad"]
    assert result["runAfter"] == result["runId"]  # no run was started
    run = get_run(lab, result["runId"])
    assert run["nodes"]["double"]["output"] == 6  # the run's record is untouched
    assert result["errors"] == []


BADGES = {
    "schema": 1,
    "name": "badges",
    "nodes": [
        node("P", "transform", 0, 0, config={"expression": "{'v': 1}"}, pin={"output": {"v": 7}}),
        node("C", "transform", 0, 160, config={"expression": "inputs['P']['v'] + 1"}),
    ],
    "edges": [{"id": "P-C", "source": "P", "target": "C"}],
}


def test_pin_and_cache_badges(lab) -> None:
    write_flow(lab.root, "badges.nxflow", BADGES)
    result = lab.run_script("badges", script="debug.mjs", FLOW_FILE="badges.nxflow", timeout=250)
    assert result["pinBadges"] == ["P"]
    first, second = result["runs"]
    assert result["cachedFrom"] == first
    assert result["detailCached"] is True
    one, two = get_run(lab, first), get_run(lab, second)
    assert one["options"]["use_pins"] is True
    assert one["nodes"]["P"].get("pinned") is True and one["nodes"]["P"]["output"] == {"v": 7}
    assert one["nodes"]["C"]["output"] == 8 and "cached_from" not in one["nodes"]["C"]
    assert two["nodes"]["C"]["cached_from"]["run_id"] == first
    assert two["nodes"]["C"]["output"] == 8
    assert result["pinned"]["output"] == 8 and result["pinned"]["from_run"] == second
    assert json.loads(result["inspectorPin"]) == 8
    assert result["unpinned"] is None

    def saved_c() -> dict | None:  # the server saves the shared document a moment after
        saved = json.loads((lab.root / "badges.nxflow").read_text())  # the last edit (unpin)
        c = next(n for n in saved["nodes"] if n["id"] == "C")
        return c if "cache" in c and "pin" not in c else None

    c = wait_for(saved_c, 15, "node C's cache, without its pin, saved to badges.nxflow")
    assert c["cache"] == {"ttl_s": 600} and "pin" not in c
    assert result["errors"] == []

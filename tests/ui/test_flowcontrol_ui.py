"""Flow control on the canvas in a real browser: drill into a sub-flow, Approve on the canvas."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import nbformat

from nexusflow_kernel.model.document import dumps_canonical


def get_run(lab, run_id: str) -> dict:
    req = urllib.request.Request(
        f"{lab.url}nexusflow/api/runs/{run_id}", headers={"Authorization": f"token {lab.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def write_flow(root: Path, name: str, flow: dict) -> None:
    (root / name).write_text(dumps_canonical(flow))


def node(id: str, type: str, x: float, y: float, **config) -> dict:
    return {"id": id, "type": type, "position": {"x": x, "y": y}, "config": config}


CHILD = {
    "schema": 1, "name": "squares", "params": {"n": {"type": "integer", "default": 2}},
    "nodes": [node("first", "transform", 0, 0, expression="params['n']"),
              node("hold", "sleep", 0, 120, seconds=4),
              node("square", "transform", 0, 240, expression="inputs['first'] ** 2")],
    "edges": [{"id": "first-hold", "source": "first", "target": "hold"},
              {"id": "hold-square", "source": "hold", "target": "square"},
              {"id": "first-square", "source": "first", "target": "square"}],
}

PARENT = {
    "schema": 1, "name": "calls-squares",
    "nodes": [node("S", "subflow", 0, 0, flow="lib/squares.nxflow", inputs={"n": 6}),
              node("after", "transform", 0, 160, expression="inputs['S']['square'] + 1")],
    "edges": [{"id": "S-after", "source": "S", "target": "after"}],
}

APPROVAL = {
    "schema": 1, "name": "payment",
    "nodes": [node("amount", "transform", 0, 0, expression="120"),
              node("ask", "approval", 0, 130, message="Pay {{ inputs['amount'] }} EUR?"),
              node("pay", "transform", -160, 330, expression="'paid'"),
              node("stop", "transform", 160, 330, expression="'stopped'")],
    "edges": [{"id": "amount-ask", "source": "amount", "target": "ask"},
              {"id": "ask-pay", "source": "ask", "source_handle": "approved", "target": "pay"},
              {"id": "ask-stop", "source": "ask", "source_handle": "rejected", "target": "stop"}],
}


def test_drill_into_a_subflow_run_from_its_node(lab) -> None:
    (lab.root / "lib").mkdir(exist_ok=True)
    write_flow(lab.root / "lib", "squares.nxflow", CHILD)
    write_flow(lab.root, "calls.nxflow", PARENT)
    result = lab.run_script("drill", script="flowcontrol.mjs", FLOW_FILE="calls.nxflow",
                            timeout=200)
    # Opened while the child ran: its own nodes, with the child run's glow.
    assert set(result["glowWhileRunning"]) == {"first", "hold", "square"}
    assert result["glowWhileRunning"]["square"] != "succeeded"
    assert result["childStates"] == {"first": "succeeded", "hold": "succeeded",
                                     "square": "succeeded"}
    assert result["childStatus"] == "succeeded"
    assert "36" in result["output"]  # the child node's output, read from the child run
    assert result["parentStates"] == {"S": "succeeded", "after": "succeeded"}
    assert result["errors"] == []


FAILING_CHILD = {
    "schema": 1, "name": "failing",
    "nodes": [node("src", "transform", 0, 0, expression="{'n': 3}"),
              node("bad", "transform", 0, 160, expression="inputs['src']['m'] * 2")],
    "edges": [{"id": "src-bad", "source": "src", "target": "bad"}],
}

CALLS_FAILING = {
    "schema": 1, "name": "calls-failing",
    "nodes": [node("S", "subflow", 0, 0, flow="lib/failing.nxflow")],
    "edges": [],
}


def test_open_a_failed_node_of_a_subflow_run_in_a_notebook(lab) -> None:
    (lab.root / "lib").mkdir(exist_ok=True)
    write_flow(lab.root / "lib", "failing.nxflow", FAILING_CHILD)
    write_flow(lab.root, "callsfailing.nxflow", CALLS_FAILING)
    result = lab.run_script("drilldebug", script="flowcontrol.mjs", FLOW_FILE="callsfailing.nxflow",
                            timeout=300)
    child = result["childRun"]
    assert result["childStates"] == {"src": "succeeded", "bad": "failed"}
    # The child's debug notebook, next to the sub-flow's file, attached to the child run.
    assert result["notebookPath"] == "lib/failing-bad-debug.ipynb"
    nb = nbformat.read(lab.root / "lib" / "failing-bad-debug.ipynb", as_version=4)
    assert nb.metadata["nexusflow"] == {"run_id": child, "node_id": "bad"}
    setup = next(c for c in result["sources"] if "run.debug(" in c)
    assert f"nf.Run.attach({child!r})" in setup
    assert "f.link('failing.nxflow', push=False)" in setup
    # Its cells ran in Lab's kernel: the child's node, with what it saw in the child run.
    assert f"<NodeDebug 'bad' of run {child}" in result["outputs"][0]
    assert "{'src': {'n': 3}}" in "\n".join(result["outputs"])
    parent = get_run(lab, child)["parent"]["run_id"]
    last = result["sources"][-1]  # a child's notebook retries its parent, not itself
    assert f"nf.Run.attach({parent!r})" in last and "run.retry(" not in last
    assert "fixed" in result["fix"]
    # Retry from the drill-down retried the parent, which resumed the same child in place:
    # once with the version it ran (failed again), then with the fixed sub-flow file.
    assert "resumes this child run in place" in result["retryTitle"]
    run = get_run(lab, child)
    assert run["status"] == "succeeded" and run["version"] == 2
    assert run["nodes"]["bad"]["attempts"] == 3 and run["nodes"]["src"]["attempts"] == 1
    assert run["nodes"]["bad"]["output"] == 6
    top = get_run(lab, parent)
    assert top["status"] == "succeeded" and top["nodes"]["S"]["child_run"] == child
    assert result["errors"] == []


def test_approve_on_the_canvas(lab) -> None:
    write_flow(lab.root, "payment.nxflow", APPROVAL)
    result = lab.run_script("approve", script="flowcontrol.mjs", FLOW_FILE="payment.nxflow",
                            timeout=200)
    assert result["message"] == "Pay 120 EUR?" == result["watcherMessage"]
    assert result["states"] == {"amount": "succeeded", "ask": "succeeded", "pay": "succeeded",
                                "stop": "skipped"}
    assert result["buttonsLeft"] == 0  # gone from every canvas once decided
    assert "checked the numbers" in result["details"] and "approved by" in result["details"]
    assert result["errors"] == []

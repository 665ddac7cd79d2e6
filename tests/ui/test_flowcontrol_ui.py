"""Flow control on the canvas in a real browser: drill into a sub-flow, Approve on the canvas."""

from __future__ import annotations

from pathlib import Path

from nexusflow_kernel.model.document import dumps_canonical


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

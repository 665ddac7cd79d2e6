"""The Python builder API: nodes, edges, layout, documents, validation (no services needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.errors import (
    CycleError,
    DanglingEdgeError,
    FlowError,
    NodeConfigError,
    NotFoundError,
    UnknownNodeTypeError,
)
from nexusflow_kernel.notebook.flow import layout
from tests.conftest import FIXTURES


def diamond() -> nf.Flow:
    f = nf.Flow("diamond", params={"n": {"type": "integer", "default": 21}})
    a = f.transform("A", "params['n'] * 2")
    b = f.delay("B", 1)
    c = f.condition("C", "inputs['A'] > 10")
    d = f.transform("D", "inputs['B']", trigger_rule="none_failed")
    a >> [b, c]
    b >> d
    c.true >> d
    return f


def test_importing_the_engine_never_imports_widgets():
    code = ("import nexusflow_kernel as nf, sys; nf.Flow; nf.task; nf.Run; "
            "f = nf.Flow('x'); f.transform('A', '1'); f.to_dict(); "
            "bad = {'ipywidgets', 'anywidget', 'tornado', 'jupyter_server'}; "
            "assert not bad & set(sys.modules),"
            " sorted(m for m in sys.modules if 'widget' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names():
    for name in ("Flow", "task", "Task", "TaskError", "Run", "RunFailed", "LocalWorkers"):
        assert name in nf.__all__ and getattr(nf, name) is not None
    assert issubclass(nf.RunFailed, nf.NexusFlowError)


def test_diamond_document_and_edges():
    data = diamond().to_dict()
    assert [n["id"] for n in data["nodes"]] == ["A", "B", "C", "D"]
    assert data["edges"] == [
        {"id": "A-B", "source": "A", "target": "B"},
        {"id": "A-C", "source": "A", "target": "C"},
        {"id": "B-D", "source": "B", "target": "D"},
        {"id": "C-D", "source": "C", "source_handle": "true", "target": "D"},
    ]
    d = next(n for n in data["nodes"] if n["id"] == "D")
    assert d["trigger_rule"] == "none_failed" and d["config"] == {"expression": "inputs['B']"}
    assert diamond().validate().order == ("A", "B", "C", "D")


def test_chains_fan_in_and_handles():
    f = nf.Flow("x")
    a, b, c = (f.transform(i, "1") for i in "abc")
    assert (a >> b >> c) is c
    d = f.transform("d", "2")
    [a, b] >> d
    assert {(e["source"], e["target"]) for e in f.edges} == {
        ("a", "b"), ("b", "c"), ("a", "d"), ("b", "d")}
    a >> b  # twice is once
    assert len(f.edges) == 4
    cond = f.condition("k", "True")
    with pytest.raises(DanglingEdgeError, match="k.true"):
        cond >> a
    with pytest.raises(DanglingEdgeError, match="no output 'maybe'"):
        cond.branch("maybe")
    with pytest.raises(DanglingEdgeError, match="no output"):
        a.true  # noqa: B018


def test_layout_layers_follow_the_longest_path():
    pos = diamond().to_dict()
    y = {n["id"]: n["position"]["y"] for n in pos["nodes"]}
    x = {n["id"]: n["position"]["x"] for n in pos["nodes"]}
    assert y == {"A": 0, "B": 120, "C": 120, "D": 240}
    assert x["B"] < x["C"] and x["A"] == x["D"] == 0
    chain = layout([{"id": i} for i in "abc"], [{"source": "a", "target": "c"},
                                                 {"source": "a", "target": "b"},
                                                 {"source": "b", "target": "c"}])
    assert [chain[i]["y"] for i in "abc"] == [0, 120, 240]
    # a cycle (an invalid flow) still gets positions
    assert set(layout([{"id": "p"}, {"id": "q"}], [{"source": "p", "target": "q"},
                                                   {"source": "q", "target": "p"}])) == {"p", "q"}


def test_explicit_positions_are_kept():
    f = nf.Flow("x")
    f.transform("A", "1", position={"x": 500, "y": 7})
    f.transform("B", "1")
    f["A"] >> f["B"]
    nodes = {n["id"]: n["position"] for n in f.to_dict()["nodes"]}
    assert nodes["A"] == {"x": 500, "y": 7} and nodes["B"]["y"] == 120


def test_every_builtin_type_has_a_builder():
    f = nf.Flow("all")
    f.transform("t", "1")
    f.condition("c", "True")
    f.delay("d", 5)
    f.delay("u", until="2030-01-01T00:00:00Z")
    f.http("h", "http://127.0.0.1:9/x", method="post", json={"a": 1}, timeout_s=3,
           retry=3, timeout=20)
    f.db_query("q", "warehouse", "SELECT %s", params=[1])
    f.node("noop", "n", value=3)
    f.node("sleep", "s", seconds=0)
    f.validate()
    h = next(n for n in f.to_dict()["nodes"] if n["id"] == "h")
    assert h["config"] == {"json": {"a": 1}, "method": "POST", "timeout_s": 3,
                           "url": "http://127.0.0.1:9/x"}
    assert h["retry"] == {"max_attempts": 3} and h["timeout_s"] == 20


def test_validation_errors_are_the_compilers():
    f = nf.Flow("bad")
    f.transform("A", "1")
    f.node("delay", "B")  # neither seconds nor until
    with pytest.raises(NodeConfigError) as info:
        f.validate()
    assert info.value.pointer.startswith("/nodes/1/config")
    g = nf.Flow("cycle")
    a, b = g.transform("a", "1"), g.transform("b", "1")
    a >> b >> a
    with pytest.raises(CycleError, match="a -> b -> a|b -> a -> b"):
        g.validate()
    with pytest.raises(UnknownNodeTypeError, match="known"):
        g.node("nope", "z")
    with pytest.raises(NodeConfigError, match="trigger_rule"):
        g.transform("t", "1", trigger_rule="sometimes")
    with pytest.raises(NotFoundError, match="no node 'zz'"):
        g["zz"]  # noqa: B018
    with pytest.raises(FlowError):
        g.transform("e", "import os").flow.validate()


def test_save_load_roundtrip_is_canonical(tmp_path):
    f = diamond()
    path = f.save(tmp_path / "d.nxflow")
    text = path.read_text()
    assert text == f.to_json()
    again = nf.Flow.load(path)
    assert again.to_dict() == f.to_dict()
    again.save(tmp_path / "e.nxflow")
    assert (tmp_path / "e.nxflow").read_text() == text
    example = nf.Flow.load(FIXTURES.parent.parent / "examples" / "diamond.nxflow")
    assert example.name == "diamond" and len(example) == 7
    assert json.loads(example.to_json())["nodes"][1]["position"] == {"x": -150, "y": 120}


def test_set_remove_disconnect():
    f = diamond()
    f["A"].set(expression="params['n'] * 3", label="triple")
    assert f["A"].config["expression"] == "params['n'] * 3"
    assert f["A"].node["label"] == "triple"
    f["A"].set(label=None)
    assert "label" not in f["A"].node
    f.disconnect("A", "B")
    assert ("A", "B") not in {(e["source"], e["target"]) for e in f.edges}
    f.remove("C")
    assert "C" not in f and all("C" not in (e["source"], e["target"]) for e in f.edges)
    with pytest.raises(NotFoundError):
        f.disconnect("A", "B")


def test_repr_mimebundle_is_a_widget():
    bundle = diamond()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == "<Flow 'diamond': 4 nodes, 4 edges>"


def test_widget_follows_flow_changes():
    f = diamond()
    w = f.widget()
    assert [n["id"] for n in w.graph["nodes"]] == ["A", "B", "C", "D"]
    assert w.catalog["condition"]["output_handles"] == ["true", "false"]
    f.transform("E", "1")
    assert "E" in [n["id"] for n in w.graph["nodes"]]
    assert w._esm.strip().startswith(("var", "import", "function", "const", "(", "/"))

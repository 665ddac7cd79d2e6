"""Every rejection the compiler makes names its place (JSON pointer) in one line."""

from __future__ import annotations

import json
import time

import pytest
from nftest import diamond, flow, node

from nexusflow_kernel import defaults
from nexusflow_kernel.errors import (
    CycleError,
    DanglingEdgeError,
    DuplicateIdError,
    FlowLimitError,
    FlowSchemaError,
    FlowSyntaxError,
    NodeConfigError,
    UnknownNodeTypeError,
)
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import dumps_canonical, loads, read_flow


def test_diamond_compiles_in_topological_order() -> None:
    compiled = compile_flow(read_flow(diamond()))
    assert compiled.order == ("A", "B", "C", "D")
    assert compiled.parents["D"] == ("B", "C")
    assert ("D", "true") in compiled.children["C"]
    assert compiled.roots == ("A",)


@pytest.mark.parametrize(
    ("text", "error", "pointer", "words"),
    [
        ('{"schema": 1, "nodes": [', FlowSyntaxError, "", "malformed JSON at line 1"),
        ('[1, 2]', FlowSchemaError, "", "must be a JSON object"),
        ('{"schema": 2, "nodes": [], "edges": []}', FlowSchemaError, "/schema", "1 was expected"),
        ('{"schema": 1, "nodes": [{"id": "A"}], "edges": []}', FlowSchemaError, "/nodes/0",
         "'type' is required"),
        ('{"schema": 1, "nodes": [{"id": "a b", "type": "noop"}], "edges": []}',
         FlowSchemaError, "/nodes/0/id", "'a b' is not allowed"),
        ('{"schema": 1, "nodes": [], "edges": [], "extra": 1}', FlowSchemaError, "",
         "unknown field"),
    ],
)
def test_document_errors_name_the_place(text, error, pointer, words) -> None:
    with pytest.raises(error) as info:
        compile_flow(read_flow(text))
    assert info.value.pointer == pointer
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_node_id() -> None:
    doc = flow(node("A", "noop"), node("A", "noop"))
    with pytest.raises(DuplicateIdError, match="node id 'A' is used twice") as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/nodes/1/id"


def test_duplicate_edge_id() -> None:
    doc = flow(node("A", "noop"), node("B", "noop"), edges=[("A", "B")])
    doc["edges"].append(dict(doc["edges"][0]))
    with pytest.raises(DuplicateIdError, match="edge id 'A-B' is used twice"):
        compile_flow(read_flow(doc))


def test_dangling_edge() -> None:
    doc = flow(node("A", "noop"), edges=[("A", "Z")])
    with pytest.raises(DanglingEdgeError, match="target 'Z' is not a node") as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/edges/0/target"


def test_cycle_is_listed_and_names_the_edge_that_closes_it() -> None:
    doc = flow(node("A", "noop"), node("B", "noop"), node("C", "noop"),
               edges=[("A", "B"), ("B", "C"), ("C", "A")])
    with pytest.raises(CycleError) as info:
        compile_flow(read_flow(doc))
    assert info.value.cycle == ["A", "B", "C", "A"]
    assert info.value.pointer == "/edges/2" and info.value.edge == "C-A"
    assert "cycle A -> B -> C -> A (closed by edge 'C-A')" in str(info.value)
    assert info.value.to_dict()["edge"] == "C-A"


def test_the_closing_edge_is_the_cycles_last_in_the_document_not_the_first_edge() -> None:
    # The flow's first edges are fine; the cycle B -> C -> D -> B is closed by the last edge
    # added, wherever networkx starts walking it.
    doc = flow(*(node(n, "noop") for n in "ABCDE"),
               edges=[("A", "B"), ("B", "C"), ("D", "E"), ("C", "D"), ("D", "B")])
    with pytest.raises(CycleError) as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/edges/4" and info.value.edge == "D-B"
    assert info.value.cycle == ["B", "C", "D", "B"]


def test_self_loop_is_a_cycle() -> None:
    with pytest.raises(CycleError, match="A -> A") as info:
        compile_flow(read_flow(flow(node("A", "noop"), edges=[("A", "A")])))
    assert info.value.edge == "A-A" and info.value.pointer == "/edges/0"


def test_cycle_hidden_in_a_large_flow() -> None:
    nodes = [node(f"n{i}", "noop") for i in range(10_000)]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(9_999)] + [("n5001", "n5000")]
    with pytest.raises(CycleError) as info:
        compile_flow(read_flow(flow(*nodes, edges=edges)))
    assert info.value.cycle == ["n5000", "n5001", "n5000"]
    assert info.value.pointer == "/edges/9999" and info.value.edge == "n5001-n5000"


def test_unknown_node_type_lists_known_types() -> None:
    doc = {"schema": 1, "nodes": [{"id": "A", "type": "nosuch"}], "edges": []}
    with pytest.raises(UnknownNodeTypeError, match="unknown type 'nosuch'") as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/nodes/0/type"


def test_import_path_is_never_a_node_type() -> None:
    with pytest.raises(FlowSchemaError):
        compile_flow(read_flow({"schema": 1, "nodes": [{"id": "A", "type": "os:system"}],
                                "edges": []}))
    with pytest.raises(UnknownNodeTypeError, match="known types: .*transform"):
        compile_flow(read_flow({"schema": 1, "nodes": [{"id": "A", "type": "os.system"}],
                                "edges": []}))


def test_bad_config_names_the_field() -> None:
    doc = flow(node("A", "http", url=5))
    with pytest.raises(NodeConfigError, match="node 'A' \\(http\\)") as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/nodes/0/config/url"


def test_condition_edges_need_a_handle() -> None:
    doc = flow(node("C", "condition", expression="True"), node("D", "noop"), edges=[("C", "D")])
    with pytest.raises(DanglingEdgeError, match="without a source_handle"):
        compile_flow(read_flow(doc))
    doc = flow(node("C", "condition", expression="True"), node("D", "noop"),
               edges=[("C", "D", "maybe")])
    with pytest.raises(DanglingEdgeError, match="handle 'maybe'") as info:
        compile_flow(read_flow(doc))
    assert info.value.pointer == "/edges/0/source_handle"


def test_limits(monkeypatch) -> None:
    deep: object = 1
    for _ in range(200):
        deep = [deep]
    with pytest.raises(FlowLimitError, match="nests"):
        compile_flow(read_flow(json.dumps({"schema": 1, "nodes": [], "edges": [],
                                           "metadata": {"x": deep}})))
    with pytest.raises(FlowLimitError):
        compile_flow(read_flow("[" * 100_000 + "]" * 100_000))
    monkeypatch.setattr(defaults, "MAX_DOCUMENT_BYTES", 100)
    with pytest.raises(FlowLimitError, match="over the limit of 100"):
        compile_flow(read_flow(json.dumps(diamond())))
    monkeypatch.setattr(defaults, "MAX_DOCUMENT_BYTES", 32 * 1024 * 1024)
    monkeypatch.setattr(defaults, "MAX_NODES", 3)
    with pytest.raises(FlowLimitError, match="4 nodes, over the limit of 3") as info:
        compile_flow(read_flow(diamond()))
    assert info.value.pointer == "/nodes"


def test_canonical_save_is_stable() -> None:
    doc = diamond()
    doc["nodes"].reverse()
    doc["nodes"][0]["position"] = {"x": 1.0, "y": -2.0}
    text = dumps_canonical(doc)
    assert dumps_canonical(json.loads(text)) == text
    assert '"x": 1,' in text
    assert [n.id for n in loads(text).nodes] == ["A", "B", "C", "D"]
    assert text.index('"id"') < text.index('"type"')


def test_ten_thousand_nodes_compile_fast() -> None:
    nodes = [node(f"n{i}", "noop") for i in range(10_000)]
    edges = [(f"n{i}", f"n{i + 1}") for i in range(9_999)]
    start = time.perf_counter()
    compiled = compile_flow(read_flow(flow(*nodes, edges=edges)))
    assert len(compiled.order) == 10_000
    # a bound against a quadratic compiler on a loaded machine, not a benchmark (bench/ is)
    assert time.perf_counter() - start < 60


def test_param_enum_is_a_choice_list() -> None:
    """A param may list the values it allows (``enum``); the list is checked against the
    param's type and default, each fault at its pointer."""
    from nexusflow_kernel.errors import ParamValueError
    from nexusflow_kernel.model.compiler import check_param_values

    params = {"color": {"type": "string", "enum": ["red", "green"], "default": "red"},
              "n": {"type": "integer", "enum": [1, 2, 3]}}
    compiled = compile_flow(read_flow(flow(node("A", "noop"), params=params)))
    assert compiled.document.params["color"]["enum"] == ["red", "green"]
    check_param_values(compiled.document.params, {"color": "green", "n": 3, "other": "x"})
    with pytest.raises(ParamValueError, match=r"param 'color' must be one of \"red\", \"green\"; "
                                              r"got \"blue\"") as info:
        check_param_values(compiled.document.params, {"color": "blue"})
    assert info.value.pointer == "/params/color"
    with pytest.raises(ParamValueError, match="param 'n' must be one of 1, 2, 3; got true"):
        check_param_values(compiled.document.params, {"n": True})  # JSON: true is not 1
    for spec, pointer, words in [
        ({"type": "string", "enum": ["a"], "default": "b"}, "/params/p/default",
         "defaults to 'b', which is not one of its enum values (\"a\")"),
        ({"type": "integer", "enum": [1, "two"]}, "/params/p/enum/1",
         "allows 'two', which is not of its type 'integer'"),
        ({"enum": ["a", "a"]}, "/params/p/enum/1", "lists 'a' twice"),
        ({"enum": []}, "/params/p/enum", "should be non-empty"),
    ]:
        with pytest.raises(FlowSchemaError) as err:
            compile_flow(read_flow(flow(node("A", "noop"), params={"p": spec})))
        assert err.value.pointer == pointer, (spec, err.value)
        assert words in str(err.value), (spec, str(err.value))


def test_a_documents_hash_is_that_of_its_raw_form() -> None:
    from nexusflow_kernel.model.document import content_hash, load_document

    # Out of order keys, nodes and edges, and integral floats: the hash of the loaded
    # (canonical) document skips canonicalizing again and must still be the raw form's.
    raw = {"schema": 1, "name": "h", "edges": [{"target": "a", "source": "b", "id": "z"},
                                               {"id": "e", "source": "b", "target": "c"}],
           "nodes": [{"id": "c", "type": "transform", "config": {"expression": "1"},
                      "timeout_s": 5.0},
                     {"config": {"expression": "2"}, "retry": {"max_attempts": 2.0},
                      "type": "transform", "id": "b"},
                     {"id": "a", "type": "noop", "config": {}}]}
    doc = load_document(json.loads(json.dumps(raw)))
    assert doc.content_hash() == content_hash(raw)
    assert compile_flow(read_flow(raw)).hash == content_hash(raw)

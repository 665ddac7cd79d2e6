"""The map node's config: refused at compile time with the JSON pointer of the fault, and its
``items`` expression, which must give a list (issue #20, item 1)."""

from __future__ import annotations

import pytest
from nftest import flow, node

from nexusflow_kernel.errors import ExpressionError, NodeConfigError, NodeExecutionError
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import read_flow
from nexusflow_kernel.nodes import NodeContext, get_node_type
from nexusflow_kernel.settings import Settings


def _map(**config) -> dict:
    return flow(node("src", expression="[1, 2, 3]"), node("m", "map", **config),
                edges=[("src", "m")])


def _refused(doc: dict) -> NodeConfigError:
    with pytest.raises(NodeConfigError) as info:
        compile_flow(read_flow(doc))
    return info.value


def test_a_map_of_inline_nodes_compiles() -> None:
    compiled = compile_flow(read_flow(_map(
        items="inputs['src']", concurrency=4, on_item_failure="continue",
        node={"type": "http", "config": {"url": "https://example.com/{{ item }}"},
              "retry": {"max_attempts": 3, "backoff_s": 0.5}, "timeout_s": 10})))
    assert compiled.order == ("src", "m")


@pytest.mark.parametrize(("spec", "pointer", "says"), [
    ({"type": "nope"}, "/nodes/1/config/node/type", "unknown node type 'nope'"),
    ({"type": "transform", "config": {}}, "/nodes/1/config/node/config",
     "'expression' is a required property"),
    ({"type": "transform", "config": {"expression": "item +"}},
     "/nodes/1/config/node/config/expression", "SyntaxError"),
    ({"type": "http", "config": {"url": "ftp://x/{{ item }}", "json": 1, "body": "b"}},
     "/nodes/1/config/node/config/body", "either json or body"),
    ({"type": "map", "config": {"items": "[1]", "node": {"type": "noop"}}},
     "/nodes/1/config/node/type", "cannot run 'map' nodes per item"),
    ({"type": "delay", "config": {"seconds": 1}}, "/nodes/1/config/node/type",
     "cannot run 'delay' nodes per item"),
])
def test_an_inline_node_that_does_not_compile_is_refused_with_its_pointer(
        spec: dict, pointer: str, says: str) -> None:
    err = _refused(_map(items="inputs['src']", node=spec))
    assert err.pointer == pointer, (err.pointer, str(err))
    assert says in str(err)
    assert "'m'" in str(err)


@pytest.mark.parametrize(("config", "pointer"), [
    ({"node": {"type": "noop"}}, "/nodes/1/config"),  # items is required
    ({"items": "inputs[", "node": {"type": "noop"}}, "/nodes/1/config/items"),
    ({"items": "[1]", "node": {"type": "noop", "retry": {"max_attempts": 0}}},
     "/nodes/1/config/node/retry/max_attempts"),
    ({"items": "[1]", "node": {"type": "noop"}, "concurrency": 0},
     "/nodes/1/config/concurrency"),
    ({"items": "[1]", "node": {"type": "noop"}, "on_item_failure": "ignore"},
     "/nodes/1/config/on_item_failure"),
])
def test_bad_map_fields_are_refused_with_their_pointer(config: dict, pointer: str) -> None:
    assert _refused(_map(**config)).pointer == pointer


def _ctx(items: str, inputs: dict | None = None) -> NodeContext:
    return NodeContext(run_id="r", node_id="price", attempt=1,
                       config={"items": items, "node": {"type": "noop"}},
                       inputs=inputs or {}, params={"n": 3}, settings=Settings())


def test_items_gives_the_list_as_json_values() -> None:
    map_type = get_node_type("map")
    assert map_type.items(_ctx("inputs['orders']", {"orders": [{"id": 1}, {"id": 2}]})) == [
        {"id": 1}, {"id": 2}]
    assert map_type.items(_ctx("range(params['n'])")) == [0, 1, 2]
    assert map_type.items(_ctx("[]")) == []


@pytest.mark.parametrize(("items", "kind"), [
    ("inputs['orders']", "an object"), ("'abc'", "a string"), ("42", "a number"),
    ("None", "null"),
])
def test_items_that_are_not_a_list_fail_naming_the_node_and_field(items: str,
                                                                  kind: str) -> None:
    with pytest.raises(NodeExecutionError) as info:
        get_node_type("map").items(_ctx(items, {"orders": {"id": 1}}))
    assert str(info.value) == (f"node 'price' /config/items: the expression gave {kind}, "
                               "not a list")
    assert info.value.retryable is False


def test_items_that_fail_to_evaluate_name_the_node_and_field() -> None:
    with pytest.raises(ExpressionError) as info:
        get_node_type("map").items(_ctx("inputs['missing']"))
    assert "node 'price' /config/items" in str(info.value)


def test_secrets_of_the_inline_node_are_the_maps() -> None:
    map_type = get_node_type("map")
    config = {"items": "[1]", "node": {"type": "http", "config": {
        "url": "https://example.com", "headers": {"Authorization": {"$secret": "TOKEN"}}}}}
    assert map_type.secret_names(config) == {"TOKEN"}

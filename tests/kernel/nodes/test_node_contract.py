"""The node type contract a package must keep (``nodes/plugins.py``): each way to break it is
refused with a reason that names the part, and the built-in types keep it too."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from nexusflow_kernel.nodes import NodeContext, NodeType, listing, node_types
from nexusflow_kernel.nodes.plugins import PluginError, check_icon, check_node_type


class Good(NodeType):
    name = "acme.good"
    title = "Good"
    category = "acme"
    icon = "★"
    docs_url = "https://example.org/docs/good"
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/n"}},
        "$defs": {"n": {"type": "integer"}},
    }

    def run(self, ctx: NodeContext) -> Any:
        return ctx.config.get("n")


def variant(**attrs: Any) -> type[NodeType]:
    return type("Variant", (Good,), attrs)


def test_a_good_type_gives_its_catalog_entry():
    cls, entry = check_node_type(Good, "acme.good")
    assert cls is Good
    assert entry["icon"] == "★" and entry["docs_url"] == "https://example.org/docs/good"
    assert entry["category"] == "acme" and entry["config_schema"]["type"] == "object"


def _no_run() -> type:
    class NoRun(NodeType):
        name = "acme.good"
        category = "acme"

    return NoRun


def _raises() -> type:
    class Raises(Good):
        def __init__(self) -> None:
            raise RuntimeError("needs a licence key")

    return Raises


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (lambda: None, "not a NodeType subclass (it is 'function')"),
        (NodeType, "not a NodeType subclass"),
        (Good(), "not a NodeType subclass (it is 'Good')"),
        (variant(name="Acme Good"), "is not a node type name"),
        (variant(name="acme.other"), "named 'acme.good' but the type's name is 'acme.other'"),
        (_no_run(), "does not implement run(ctx)"),
        (variant(category=""), "category must not be empty"),
        (variant(title=42), "title must be a string, not int"),
        (
            variant(config_schema={"type": "object", "properties": {"n": {"type": "integr"}}}),
            "config_schema is not a valid JSON Schema at /properties/n/type",
        ),
        (variant(config_schema={"type": "array"}), "must describe an object"),
        (variant(config_schema=["type", "object"]), "must be a JSON Schema object, not list"),
        (
            variant(config_schema={"type": "object", "default": object()}),
            "config_schema is not JSON",
        ),
        (
            variant(
                config_schema={
                    "type": "object",
                    "properties": {"n": {"$ref": "https://evil.example/schema.json"}},
                }
            ),
            "at /properties/n/$ref refers outside itself",
        ),
        (variant(docs_url="javascript:alert(1)"), "docs_url 'javascript:alert(1)' is not an http"),
        (variant(docs_url="https://"), "is not an http(s) address"),
        (variant(icon="<img src=x onerror=alert(1)>"), "icon text has more than 8 characters"),
        (variant(icon="data:text/html;base64,PHNjcmlwdD4="), "icon is a data URI but not"),
        (variant(icon="\x1b[31m"), "control character"),
        (variant(queue="gpu"), "queue 'gpu' is not one of default, sandbox"),
        (variant(output_handles=["yes", "no"]), "output_handles must be a tuple"),
        (_raises(), "cannot be created: RuntimeError: needs a licence key"),
    ],
)
def test_each_broken_contract_is_named(obj, reason):
    with pytest.raises(PluginError) as err:
        check_node_type(obj, "acme.good")
    assert reason in str(err.value)


def test_icons_the_canvas_can_show():
    assert check_icon("🔗") == "🔗"
    svg = "data:image/svg+xml;base64,PHN2Zy8+"
    assert check_icon(svg) == svg
    with pytest.raises(PluginError, match="more than 16384"):
        check_icon("data:image/png;base64," + "A" * 20000)


def test_every_built_in_type_keeps_the_contract():
    types = node_types()
    assert {"transform", "http", "code", "python_task"} <= set(types)
    for name, t in types.items():
        check_node_type(type(t), name)
    entries = {e["type"]: e for e in listing()["node_types"]}
    assert entries["code"]["package"] == "nexusflow"  # the worker's types, by entry point
    assert entries["transform"]["icon"] and entries["transform"]["version"]

"""The Map node: run one inline node for every item of a list; the output is their outputs.

``items`` is an expression that gives a list; what runs per item is either ``node``, an
inline node spec ``{type, config, retry, timeout_s}`` of any type a map may run per item, or
``flow``, a sub-flow (a ``.nxflow`` path or a stored workflow, pinned when the run starts, as
the ``subflow`` node's) run as one child run per item with ``inputs`` as its params (default
``{"item": ..., "index": ...}``). Inside the item's expressions and templates ``item`` and
``index`` are names besides ``inputs`` and ``params``.
The worker does not call ``run``: it evaluates ``items`` (:meth:`MapNode.items`), stores one
row per item and runs the items in batches (``nexusflow_worker.items``); the map node ends
when its last item does, with the item outputs in item order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import check_expression, evaluate, json_safe, template_errors
from .base import NodeContext, NodeType
from .flowcontrol import FLOW_REF
from .logic import EXPRESSION_PROPERTY

MAX_ITEMS = 100_000
"""Most items one map node may run (the list its ``items`` expression gives)."""

ON_ITEM_FAILURE = ("fail", "continue")

RETRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Retry (per item)",
    "additionalProperties": False,
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "backoff_s": {"type": "number", "minimum": 0, "maximum": 86400},
        "factor": {"type": "number", "minimum": 1, "maximum": 10},
        "max_backoff_s": {"type": "number", "minimum": 0, "maximum": 86400},
        "jitter": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
"""A node's ``retry`` (the flow schema's), for the inline node of a map."""

ITEM_NAMES = ("item", "index")
"""Names an item's expressions and templates see besides ``inputs`` and ``params``."""


@functools.lru_cache(maxsize=128)
def _validator(type_name: str) -> Any:
    import jsonschema

    from . import get_node_type

    node_type = get_node_type(type_name)
    schema = node_type.config_schema if node_type else {"type": "object"}
    return jsonschema.validators.validator_for(schema)(schema)


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def inline_faults(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return ``(pointer inside the spec, message)`` for an inline node spec that cannot run."""
    from . import get_node_type, node_types

    type_name = spec.get("type")
    node_type = get_node_type(type_name) if isinstance(type_name, str) else None
    if node_type is None:
        known = ", ".join(n for n, t in node_types().items() if t.map_item)
        return [("/type", f"unknown node type {type_name!r} (types a map can run: {known})")]
    if not node_type.map_item:
        return [("/type", f"a map cannot run {type_name!r} nodes per item")]
    config = spec.get("config", {})
    errors = sorted(_validator(node_type.name).iter_errors(config),
                    key=lambda e: _pointer(e.absolute_path))
    if errors:
        err = errors[0]
        return [("/config" + _pointer(err.absolute_path), f"({type_name}) {err.message}")]
    return [("/config" + p, f"({type_name}) {m}") for p, m in node_type.check_config(config)]


class MapNode(NodeType):
    """Run an inline node once per item of a list, in batches, and collect the outputs."""

    name = "map"
    title = "Map"
    description = ("Run a node for every item of a list (item and index are names in its "
                   "expressions and templates); the output is the list of item outputs.")
    category = "core"
    icon = "⇶"
    template_exempt: ClassVar[tuple[str, ...]] = ("items", "node", "flow", "inputs")
    """``items`` is an expression; ``node`` and ``inputs`` are rendered per item, with ``item``
    and ``index``; ``flow`` is pinned when the run starts."""
    map_item = False  # no map inside a map's item
    subflow_key = "flow"
    """A map of a flow: the flow is resolved and pinned when the run starts."""
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Map",
        "description": "Run the node for each item; the output lists the item outputs in order.",
        "type": "object",
        "required": ["items"],
        "oneOf": [{"required": ["node"], "not": {"required": ["flow"]}},
                  {"required": ["flow"], "not": {"required": ["node"]}}],
        "additionalProperties": False,
        "properties": {
            "items": {
                **EXPRESSION_PROPERTY,
                "title": "Items",
                "description": ("An expression that gives the list to map over, e.g. "
                                "inputs['orders'] or params['ids']."),
                "examples": ["inputs['fetch']['json']['rows']"],
            },
            "node": {
                "type": "object",
                "title": "Node per item",
                "description": ("The node to run for each item: {type, config, retry, "
                                "timeout_s}. Its expressions and templates see item and index."),
                "required": ["type"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "pattern": "^[a-z][a-z0-9_.-]{0,63}$"},
                    "config": {"type": "object"},
                    "retry": RETRY_SCHEMA,
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 604800},
                },
            },
            "flow": {
                **FLOW_REF,
                "title": "Flow per item",
                "description": ("Instead of node: a flow to run as a child run per item (a "
                                ".nxflow path or a stored workflow {\"workflow_id\": ...}), "
                                "pinned when the run starts; the item's output is the child's "
                                "last nodes' outputs by node id."),
            },
            "inputs": {
                "type": "object",
                "title": "Inputs (flow per item)",
                "description": ("The child run's params for each item: name -> value; values "
                                "may be {{ templates }} over item, index, inputs and params "
                                "(default: {\"item\": item, \"index\": index})."),
            },
            "concurrency": {
                "type": "integer", "minimum": 1, "maximum": MAX_ITEMS,
                "title": "Concurrency",
                "description": "Most items running at once (default: as many as workers take).",
            },
            "on_item_failure": {
                "enum": list(ON_ITEM_FAILURE), "default": "fail",
                "title": "On item failure",
                "description": ("fail: the map fails once the running items end, naming the "
                                "failed items; continue: a failed item's output is "
                                "{\"error\": ...}."),
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults: list[tuple[str, str]] = []
        items = config.get("items")
        if isinstance(items, str):
            problem = check_expression(items)
            if problem:
                faults.append(("/items", problem))
        spec = config.get("node")
        if isinstance(spec, Mapping):
            faults += [("/node" + p, m) for p, m in inline_faults(spec)]
        flow = config.get("flow")
        if isinstance(flow, str) and ("{{" in flow or "}}" in flow):
            faults.append(("/flow", "the flow is pinned when the run starts, so it cannot be a "
                                    "{{ template }}; pass values in inputs"))
        if "inputs" in config and "flow" not in config:
            faults.append(("/inputs", "inputs are a sub-flow's params: they go with flow, not "
                                      "with node (a node's templates see item and index)"))
        inputs = config.get("inputs")
        if isinstance(inputs, Mapping):
            faults += [("/inputs" + p, m) for p, m in template_errors(inputs)]
        return faults

    def secret_names(self, config: Mapping[str, Any]) -> set[str]:
        from . import get_node_type

        spec = config.get("node") or {}
        if not isinstance(spec, Mapping) or "flow" in config:
            return super().secret_names(config.get("inputs") or {})
        node_type = get_node_type(spec.get("type", ""))
        inner = spec.get("config") or {}
        return node_type.secret_names(inner) if node_type else super().secret_names(inner)

    def connection_names(self, config: Mapping[str, Any]) -> set[str]:
        from . import get_node_type

        spec = config.get("node") or {}
        node_type = get_node_type(spec.get("type", ""))
        return node_type.connection_names(spec.get("config") or {}) if node_type else set()

    def items(self, ctx: NodeContext) -> list[Any]:
        """Evaluate ``items``; raise a non-retryable error naming the node and field unless it
        gives a list (of at most ``MAX_ITEMS`` JSON values)."""
        where = f"node {ctx.node_id!r} /config/items"
        value = evaluate(ctx.config["items"], {"inputs": ctx.inputs, "params": ctx.params,
                                               **ctx.names},
                         where=where)
        if isinstance(value, (tuple, range)):  # ordered sequences (not sets or dict views)
            value = list(value)
        if not isinstance(value, list):
            raise NodeExecutionError(
                f"{where}: the expression gave {_kind(value)}, not a list", retryable=False)
        if len(value) > MAX_ITEMS:
            raise NodeExecutionError(
                f"{where}: the list has {len(value)} items, over the limit of {MAX_ITEMS}",
                retryable=False)
        return json_safe(value)

    def run(self, ctx: NodeContext) -> Any:
        raise NodeExecutionError(f"node {ctx.node_id!r}: a map node is run by a worker's item "
                                 "batches, not as one attempt", retryable=False)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {str: "a string", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")


__all__ = ["ITEM_NAMES", "MAX_ITEMS", "ON_ITEM_FAILURE", "MapNode", "inline_faults"]

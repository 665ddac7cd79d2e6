"""Compile a flow document into a runnable DAG (networkx), or say exactly what is wrong.

Rejected, each with the JSON pointer of the fault: malformed JSON, documents over the limits,
schema violations, duplicate node or edge ids, dangling edges, unknown node types, handles a
node does not have, bad config for a node type, and cycles (listed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import networkx as nx

from ..errors import (
    CycleError,
    DanglingEdgeError,
    DuplicateIdError,
    FlowSchemaError,
    NodeConfigError,
    ParamValueError,
    UnknownNodeTypeError,
)
from ..nodes import get_node_type
from .document import FlowDocument, Node, json_pointer


@dataclass(frozen=True)
class CompiledFlow:
    """A flow that compiled: the document, its DAG and the facts the dispatcher needs."""

    document: FlowDocument
    graph: nx.DiGraph
    order: tuple[str, ...]
    """Node ids in a topological order (document order among equals)."""
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[tuple[str, str | None], ...]]
    """``node -> ((child, source_handle), ...)``."""
    hash: str

    @property
    def nodes(self) -> dict[str, Node]:
        return {n.id: n for n in self.document.nodes}

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(n for n in self.order if not self.parents[n])

    def plan(self) -> dict[str, Any]:
        """Return the compact plan stored with each workflow version."""
        return {
            "order": list(self.order),
            "parents": {k: list(v) for k, v in self.parents.items()},
            "children": {k: [list(c) for c in v] for k, v in self.children.items()},
        }


@lru_cache(maxsize=128)
def _config_validator(type_name: str) -> Any:
    import jsonschema

    node_type = get_node_type(type_name)
    schema = node_type.config_schema if node_type else {"type": "object"}
    return jsonschema.validators.validator_for(schema)(schema)


def _check_node_config(node: Node, index: int, source: str | None) -> None:
    node_type = get_node_type(node.type)
    base = f"/nodes/{index}"
    if node_type is None:
        from ..nodes import broken_reason, node_types

        broken = broken_reason(node.type)
        if broken is not None:
            raise UnknownNodeTypeError(
                f"node {node.id!r} has type {node.type!r}, whose package is broken ({broken})",
                base + "/type",
                source=source,
            )
        known = ", ".join(node_types()) or "none"
        raise UnknownNodeTypeError(
            f"node {node.id!r} has unknown type {node.type!r} (known types: {known})",
            base + "/type",
            source=source,
        )
    errors = sorted(_config_validator(node.type).iter_errors(node.config),
                    key=lambda e: json_pointer(e.absolute_path))
    if errors:
        err = errors[0]
        message = err.message
        if _secret_only(err.schema):
            # A value where only a secret reference goes is most likely the secret itself:
            # the message must not repeat it (jsonschema's messages quote the value).
            field = err.absolute_path[-1] if err.absolute_path else "the value"
            message = (f"{field} must be a stored secret, {{\"$secret\": \"NAME\"}}, never the "
                       "value itself (store it with `nexusflow secrets set NAME`; the value given "
                       "is not shown)")
        raise NodeConfigError(
            f"node {node.id!r} ({node.type}): {message}",
            base + "/config" + json_pointer(err.absolute_path),
            source=source,
        )
    try:
        faults = node_type.check_config(node.config)
    except Exception as exc:  # a package's check that fails is a fault of that node, named
        raise NodeConfigError(
            f"node {node.id!r} ({node.type}): the type's config check failed: "
            f"{type(exc).__name__}: {str(exc)[:300]}", base + "/config", source=source,
        ) from None
    for pointer, message in faults:
        raise NodeConfigError(
            f"node {node.id!r} ({node.type}): {message}", base + "/config" + pointer, source=source
        )


def _secret_only(schema: Any) -> bool:
    """Whether ``schema`` accepts only a ``{"$secret": NAME}`` reference."""
    return (isinstance(schema, dict) and schema.get("type") == "object"
            and set(schema.get("properties") or ()) == {"$secret"})


def compile_flow(document: FlowDocument) -> CompiledFlow:
    """Compile a validated document; raise a ``FlowError`` subclass naming the fault."""
    source = document.source
    _check_params(document.params, source)
    graph = nx.DiGraph()
    index_of: dict[str, int] = {}
    for i, node in enumerate(document.nodes):
        if node.id in index_of:
            raise DuplicateIdError(
                f"node id {node.id!r} is used twice (first at /nodes/{index_of[node.id]})",
                f"/nodes/{i}/id",
                source=source,
            )
        index_of[node.id] = i
        _check_node_config(node, i, source)
        graph.add_node(node.id)

    edge_ids: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for i, edge in enumerate(document.edges):
        if edge.id in edge_ids:
            raise DuplicateIdError(
                f"edge id {edge.id!r} is used twice (first at /edges/{edge_ids[edge.id]})",
                f"/edges/{i}/id",
                source=source,
            )
        edge_ids[edge.id] = i
        for end in ("source", "target"):
            ref = getattr(edge, end)
            if ref not in index_of:
                raise DanglingEdgeError(
                    f"edge {edge.id!r} {end} {ref!r} is not a node of this flow",
                    f"/edges/{i}/{end}",
                    source=source,
                )
        if edge.source == edge.target:
            raise CycleError([edge.source, edge.source], f"/edges/{i}", source=source,
                             edge=edge.id)
        src_type = get_node_type(document.nodes[index_of[edge.source]].type)
        handles = src_type.output_handles if src_type else ()
        if edge.source_handle is not None and edge.source_handle not in handles:
            allowed = ", ".join(repr(h) for h in handles) or "none"
            raise DanglingEdgeError(
                f"edge {edge.id!r} uses handle {edge.source_handle!r} of {edge.source!r}, "
                f"which has handles: {allowed}",
                f"/edges/{i}/source_handle",
                source=source,
            )
        if handles and edge.source_handle is None:
            raise DanglingEdgeError(
                f"edge {edge.id!r} leaves {edge.source!r} without a source_handle "
                f"(one of {', '.join(repr(h) for h in handles)})",
                f"/edges/{i}",
                source=source,
            )
        if (edge.source, edge.target) in pairs:
            raise DuplicateIdError(
                f"edge {edge.id!r} repeats edge /edges/{pairs[(edge.source, edge.target)]} "
                f"({edge.source} -> {edge.target})",
                f"/edges/{i}",
                source=source,
            )
        pairs[(edge.source, edge.target)] = i
        graph.add_edge(edge.source, edge.target, handle=edge.source_handle, index=i)

    try:
        order = tuple(nx.lexicographical_topological_sort(graph, key=index_of.__getitem__))
    except nx.NetworkXUnfeasible:
        raise _cycle_error(graph, document, source) from None

    parents = {n: tuple(graph.predecessors(n)) for n in order}
    children = {
        n: tuple((c, graph.edges[n, c]["handle"]) for c in graph.successors(n)) for n in order
    }
    return CompiledFlow(document, graph, order, parents, children, document.content_hash())


_PARAM_TYPES: dict[str, Any] = {
    "string": str, "number": (int, float), "integer": int, "boolean": bool, "object": dict,
    "array": list,
}


def _of_type(value: Any, type_name: str | None) -> bool:
    """Whether ``value`` is of the JSON Schema ``type_name`` (``None``: any)."""
    if type_name is None:
        return True
    if isinstance(value, bool) and type_name != "boolean":
        return False
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _PARAM_TYPES[type_name])


def _shown(values: list[Any]) -> str:
    import json

    text = ", ".join(json.dumps(v) for v in values[:20])
    return text + (f", ... ({len(values)} values)" if len(values) > 20 else "")


def _check_params(params: dict[str, Any], source: str | None) -> None:
    """A param's ``enum`` holds values of its ``type``, no value twice, and its ``default``."""
    for name, spec in params.items():
        choices = spec.get("enum")
        if choices is None:
            continue
        seen: list[Any] = []
        for i, value in enumerate(choices):
            if not _of_type(value, spec.get("type")):
                raise FlowSchemaError(
                    f"param {name!r} allows {value!r}, which is not of its type "
                    f"{spec.get('type')!r}", f"/params/{name}/enum/{i}", source=source)
            if any(value == v and type(value) is type(v) for v in seen):
                raise FlowSchemaError(f"param {name!r} lists {value!r} twice in its enum",
                                      f"/params/{name}/enum/{i}", source=source)
            seen.append(value)
        if "default" in spec and not _in_enum(spec["default"], choices):
            raise FlowSchemaError(
                f"param {name!r} defaults to {spec['default']!r}, which is not one of its enum "
                f"values ({_shown(choices)})", f"/params/{name}/default", source=source)


def _in_enum(value: Any, choices: list[Any]) -> bool:
    """JSON equality: ``1`` is not ``true`` (Python's ``==`` says it is)."""
    return any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)


def check_param_values(params: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Raise ``ParamValueError`` naming the param when a run's input is not in its ``enum``."""
    for name, spec in params.items():
        choices = spec.get("enum") if isinstance(spec, dict) else None
        if choices is None or name not in inputs:
            continue
        if not _in_enum(inputs[name], choices):
            raise ParamValueError(
                f"param {name!r} must be one of {_shown(choices)}; got "
                f"{_shown([inputs[name]])}", f"/params/{name}")


def _cycle_error(graph: nx.DiGraph, document: FlowDocument, source: str | None) -> CycleError:
    """Name a cycle and the edge that closes it: of the cycle's edges, the one that comes last
    in the document (read in order, the flow was acyclic until that edge). The cycle is listed
    from that edge's target round to it, so the closing edge is the last arrow."""
    cycle_edges = [(u, v) for u, v, *_ in nx.find_cycle(graph)]
    indexes = [graph.edges[u, v]["index"] for u, v in cycle_edges]
    last = max(range(len(cycle_edges)), key=indexes.__getitem__)
    ordered = cycle_edges[last + 1:] + cycle_edges[:last + 1]
    cycle = [u for u, _v in ordered] + [ordered[0][0]]
    closing = indexes[last]
    return CycleError(cycle, f"/edges/{closing}", source=source, edge=document.edges[closing].id)

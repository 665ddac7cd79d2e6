"""The flow document (``*.nxflow``): parse, validate against the JSON Schema, model, save.

A flow is saved canonically — stable key order, nodes and edges sorted by id, integral
numbers written as integers, two-space indent so each node is one block — so that the same
graph always gives the same bytes (git diffs stay small, and the collaborative document and
the file on disk agree).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import FlowLimitError, FlowSchemaError, FlowSyntaxError

NODE_KEY_ORDER = (
    "id", "type", "label", "description", "position", "config",
    "retry", "timeout_s", "trigger_rule", "metadata",
)
EDGE_KEY_ORDER = ("id", "source", "source_handle", "target", "target_handle", "label")
TOP_KEY_ORDER = ("schema", "name", "description", "params", "metadata", "nodes", "edges")
TRIGGER_RULES = ("all_success", "all_done", "one_success", "none_failed", "one_failed",
                 "all_failed")
ERROR_RULES = frozenset({"one_failed", "all_failed"})
"""Trigger rules of error handlers: such a node sees a failed parent in its ``inputs`` as
``{"state": "failed", "error": ...}``."""


@lru_cache(maxsize=1)
def flow_schema() -> dict[str, Any]:
    """Return the published JSON Schema of the flow document."""
    text = resources.files(__package__).joinpath("schema/flow.schema.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _fast_validator() -> Any:
    """Return the flow schema compiled to Python by fastjsonschema (the fast, common path)."""
    import fastjsonschema

    return fastjsonschema.compile(flow_schema())


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(flow_schema())
    return cls(flow_schema(), format_checker=None)


def json_pointer(parts: Iterable[Any]) -> str:
    """Return the RFC 6901 JSON pointer for a path of keys and indexes."""
    out = []
    for part in parts:
        out.append("/" + str(part).replace("~", "~0").replace("/", "~1"))
    return "".join(out) or ""


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def parse_flow_text(text: str | bytes, *, source: str | None = None) -> dict[str, Any]:
    """Parse flow JSON text into a dict, enforcing the size and nesting limits."""
    size = len(text)
    if size > defaults.MAX_DOCUMENT_BYTES:
        raise FlowLimitError(
            f"document is {size} bytes, over the limit of {defaults.MAX_DOCUMENT_BYTES}",
            source=source,
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise FlowLimitError(
            f"document nests deeper than {defaults.MAX_JSON_DEPTH} levels", source=source
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            where, msg = f"line {exc.lineno} column {exc.colno}", exc.msg
        else:
            where, msg = "text", str(exc)
        raise FlowSyntaxError(f"malformed JSON at {where}: {msg}", source=source) from None
    return data


def validate_document(data: Any, *, source: str | None = None) -> None:
    """Check ``data`` against the limits and the flow JSON Schema; raise the first fault."""
    if not isinstance(data, dict):
        raise FlowSchemaError(
            f"a flow must be a JSON object, not {type(data).__name__}", source=source
        )
    depth = _depth(data)
    if depth > defaults.MAX_JSON_DEPTH:
        raise FlowLimitError(
            f"document nests {depth} levels deep, over the limit of {defaults.MAX_JSON_DEPTH}",
            source=source,
        )
    nodes, edges = data.get("nodes"), data.get("edges")
    if isinstance(nodes, list) and len(nodes) > defaults.MAX_NODES:
        raise FlowLimitError(
            f"{len(nodes)} nodes, over the limit of {defaults.MAX_NODES}", "/nodes", source=source
        )
    if isinstance(edges, list) and len(edges) > defaults.MAX_EDGES:
        raise FlowLimitError(
            f"{len(edges)} edges, over the limit of {defaults.MAX_EDGES}", "/edges", source=source
        )
    # fastjsonschema checks a valid document ~20x faster than jsonschema; only a document
    # that fails goes through jsonschema, whose errors name the deepest, first fault.
    import fastjsonschema

    try:
        _fast_validator()(data)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    error = next(iter(sorted(_validator().iter_errors(data), key=_error_rank)), None)
    if error is not None:
        raise FlowSchemaError(_describe(error), json_pointer(error.absolute_path), source=source)


def _error_rank(error: Any) -> tuple[int, str]:
    return (-len(error.absolute_path), json_pointer(error.absolute_path))


def _describe(error: Any) -> str:
    if error.validator == "additionalProperties":
        return f"unknown field(s): {error.message.split('(')[-1].rstrip(')')}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "pattern":
        hint = error.schema.get("description") or "bad format"
        return f"{error.instance!r} is not allowed ({hint})"
    return error.message


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    return value


def _ordered(item: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {k: _canonical_value(item[k]) for k in order if k in item}
    for key in sorted(k for k in item if k not in order):
        out[key] = _canonical_value(item[key])
    return out


def canonical_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``data`` in canonical form: ordered keys, sorted nodes and edges, integral ints."""
    out = _ordered({k: v for k, v in data.items() if k not in ("nodes", "edges")}, TOP_KEY_ORDER)
    nodes = sorted(data.get("nodes") or [], key=lambda n: str(n.get("id", "")))
    edges = sorted(data.get("edges") or [], key=lambda e: str(e.get("id", "")))
    out["nodes"] = [_ordered(n, NODE_KEY_ORDER) for n in nodes]
    out["edges"] = [_ordered(e, EDGE_KEY_ORDER) for e in edges]
    return out


def dumps_canonical(data: Mapping[str, Any]) -> str:
    """Serialize a flow document canonically (what is written to ``.nxflow`` files)."""
    return json.dumps(canonical_document(data), indent=2, ensure_ascii=False) + "\n"


def content_hash(data: Mapping[str, Any], *, canonical: bool = False) -> str:
    """Return the sha256 of the canonical compact JSON of the runnable part of a flow.

    ``canonical``: ``data`` is in canonical form already (a ``FlowDocument``'s), so it is
    not made so again (about a tenth of reading and compiling a 1,000-node flow).
    """
    canon = data if canonical else canonical_document(data)
    runnable = {
        "nodes": [{k: v for k, v in n.items() if k not in ("position", "metadata")}
                  for n in canon["nodes"]],
        "edges": [{k: v for k, v in e.items() if k != "label"} for e in canon["edges"]],
        "params": canon.get("params", {}),
    }
    for key in ("on_failure", "max_active_runs"):  # only when set: older hashes stay the same
        if key in canon:
            runnable[key] = canon[key]
    blob = json.dumps(runnable, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Node:
    """One node of a flow."""

    id: str
    type: str
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    position: dict[str, float] | None = None
    retry: dict[str, Any] | None = None
    timeout_s: float | None = None
    trigger_rule: str = "all_success"
    recovers: bool = False
    """When this node succeeds, its parents' failures no longer fail the run."""
    pool: str | None = None
    """The pool whose size bounds how many nodes run in it at once (across runs)."""
    pin: dict[str, Any] | None = None
    """Pinned output ``{"output": ...}``: a run started with pins uses it instead of running."""
    cache: dict[str, Any] | None = None
    """``{"ttl_s": N}``: serve a recent result of the same work instead of running."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Node:
        return cls(
            id=raw["id"],
            type=raw["type"],
            config=dict(raw.get("config") or {}),
            label=raw.get("label"),
            position=raw.get("position"),
            retry=raw.get("retry"),
            timeout_s=raw.get("timeout_s"),
            trigger_rule=raw.get("trigger_rule") or "all_success",
            recovers=bool(raw.get("recovers", False)),
            pool=raw.get("pool"),
            pin=raw.get("pin"),
            cache=raw.get("cache"),
        )


@dataclass(frozen=True)
class Edge:
    """One edge; ``source_handle`` picks a Condition node's ``true`` or ``false`` output."""

    id: str
    source: str
    target: str
    source_handle: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Edge:
        return cls(raw["id"], raw["source"], raw["target"], raw.get("source_handle"))


@dataclass(frozen=True)
class FlowDocument:
    """A validated flow document: its raw canonical dict plus typed nodes and edges."""

    data: dict[str, Any]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    source: str | None = None

    @property
    def name(self) -> str:
        return self.data.get("name") or (Path(self.source).stem if self.source else "flow")

    @property
    def params(self) -> dict[str, Any]:
        return self.data.get("params") or {}

    @property
    def on_failure(self) -> str | dict[str, Any] | None:
        """The flow started when a run of this flow fails (a path or a workflow reference)."""
        return self.data.get("on_failure")

    @property
    def max_active_runs(self) -> int | None:
        """Most runs of this flow running at once (``None``: no limit)."""
        return self.data.get("max_active_runs")

    def dumps(self) -> str:
        """Return the canonical text of this document."""
        return dumps_canonical(self.data)

    def content_hash(self) -> str:
        return content_hash(self.data, canonical=True)  # load_document made it canonical


def load_document(data: Any, *, source: str | None = None) -> FlowDocument:
    """Validate a parsed document (dict) and return its model; raise ``FlowError`` if invalid."""
    validate_document(data, source=source)
    canon = canonical_document(data)
    return FlowDocument(
        data=canon,
        nodes=tuple(Node.from_dict(n) for n in data["nodes"]),
        edges=tuple(Edge.from_dict(e) for e in data["edges"]),
        source=source,
    )


def loads(text: str | bytes, *, source: str | None = None) -> FlowDocument:
    """Parse and validate flow JSON text."""
    return load_document(parse_flow_text(text, source=source), source=source)


def load(path: str | Path) -> FlowDocument:
    """Read, parse and validate a ``.nxflow`` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlowSyntaxError(f"cannot read file: {exc.strerror}", source=str(path)) from None
    return loads(raw, source=str(path))


FlowInput = FlowDocument | Mapping[str, Any] | str | bytes | Path
"""A flow as a caller may hold it: a document, its dict, its JSON text, or a ``.nxflow`` path."""


def read_flow(flow: FlowInput) -> FlowDocument:
    """Return the validated document of ``flow``, whatever form it comes in.

    The one place that tells the forms apart: the edges (the engine facade, the CLI, the
    server, notebooks) call it once, and everything after works on a ``FlowDocument``.
    A string is a path when it ends in ``.nxflow`` and is not JSON.
    """
    if isinstance(flow, FlowDocument):
        return flow
    if isinstance(flow, Path) or (isinstance(flow, str) and flow.rstrip().endswith(".nxflow")
                                  and not flow.lstrip().startswith("{")):
        return load(flow)
    if isinstance(flow, (str, bytes)):
        return loads(flow)
    return load_document(dict(flow))


def save(document: FlowDocument | Mapping[str, Any], path: str | Path) -> None:
    """Write a flow canonically and atomically (a crash never leaves half a file)."""
    data = document.data if isinstance(document, FlowDocument) else document
    validate_document(dict(data), source=str(path))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps_canonical(data), encoding="utf-8")
    tmp.replace(path)

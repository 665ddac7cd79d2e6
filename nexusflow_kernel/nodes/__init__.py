"""The node type registry.

Built-in types are registered here; other packages add types through the entry point group
``nexusflow.nodes`` (``name = "package.module:NodeTypeSubclass"``). Flow documents only ever
name a registered type: nothing is imported from a path written in a document.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from .base import Defer, NodeContext, NodeLog, NodeType, Wait

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, NodeType] = {}
_loaded = False


def register(node_type: type[NodeType], *, replace: bool = False) -> type[NodeType]:
    """Register a node type class (usable as a decorator)."""
    name = node_type.name
    if name in _REGISTRY and not replace and type(_REGISTRY[name]) is not node_type:
        raise ValueError(f"node type {name!r} is already registered")
    _REGISTRY[name] = node_type()
    return node_type


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import builtin  # noqa: F401  (registers the core types)
    from .flowcontrol import FLOW_CONTROL_TYPES
    from .testing import NoopNode, SleepNode

    for flow_type in FLOW_CONTROL_TYPES:
        register(flow_type)

    register(NoopNode)
    register(SleepNode)

    for ep in entry_points(group="nexusflow.nodes"):
        try:
            cls = ep.load()
            register(cls)
        except Exception as exc:  # a broken plugin must not take the engine down
            logger.warning("node type plugin %s could not be loaded: %s", ep.name, exc)


def get_node_type(name: str) -> NodeType | None:
    """Return the registered node type called ``name``, or ``None``."""
    _load()
    return _REGISTRY.get(name)


def node_types() -> dict[str, NodeType]:
    """Return every registered node type by name."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def catalog() -> list[dict[str, Any]]:
    """Return the catalog of node types with their config schemas."""
    return [t.describe() for t in node_types().values()]


__all__ = [
    "Defer",
    "NodeContext",
    "NodeLog",
    "NodeType",
    "Wait",
    "catalog",
    "get_node_type",
    "node_types",
    "register",
]

"""The node type registry.

Built-in types are registered here; other packages add types through the entry point group
``nexusflow.nodes`` (``name = "package.module:NodeTypeSubclass"``, the entry point named as
the type). Each is checked against the contract (``plugins.py``) when the registry is first
used; one that fails to import or to keep it is listed by ``broken_types()`` with the reason
and never registered, so it cannot break the palette, the compiler or the workers. Two
packages publishing the same name are both broken; no package replaces a built-in type.
Flow documents only ever name a registered type: nothing is imported from a path written in
a document.
"""

from __future__ import annotations

import functools
import logging
import threading
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any

from .base import Defer, NodeContext, NodeLog, NodeType, Wait
from .plugins import BrokenNodeType, NodeSource, PluginError, check_node_type

logger = logging.getLogger(__name__)

GROUP = "nexusflow.nodes"
"""The entry point group through which packages publish node types."""

_REGISTRY: dict[str, NodeType] = {}
_SOURCES: dict[str, NodeSource] = {}
_BROKEN: dict[str, BrokenNodeType] = {}
_loaded = False
_loading = False
_lock = threading.RLock()


@functools.cache
def _own_source() -> NodeSource:
    try:
        return NodeSource("nexusflow", version("nexusflow"))
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return NodeSource("nexusflow", "0+unknown")


def register(node_type: type[NodeType], *, replace: bool = False,
             source: NodeSource | None = None) -> type[NodeType]:
    """Register a node type class (usable as a decorator)."""
    name = node_type.name
    if name in _REGISTRY and not replace and type(_REGISTRY[name]) is not node_type:
        raise ValueError(f"node type {name!r} is already registered")
    _REGISTRY[name] = node_type()
    _SOURCES[name] = source or _own_source()
    return node_type


def _source_of(ep: EntryPoint) -> NodeSource:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return NodeSource("?", "?", ep.value)
    return NodeSource(dist.metadata["Name"] or "?", dist.version or "?", ep.value)


def _load_entry_point(ep: EntryPoint, source: NodeSource) -> type[NodeType]:
    """Import and check one entry point; raise ``PluginError`` with the reason it is broken."""
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:  # an import error, or a module that exits
        raise PluginError(f"import failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    # Nexus-Flow's own entry points (the sandbox types) skip the schema check, so a worker
    # with no node package installed never imports jsonschema; its tests check those schemas.
    return check_node_type(obj, ep.name, check_schema=source.package != "nexusflow")[0]


def _load_plugins() -> None:
    """Register every type of the entry point group; list the ones that cannot be."""
    found: dict[str, list[tuple[EntryPoint, NodeSource]]] = {}
    for ep in entry_points(group=GROUP):
        source = _source_of(ep)
        found.setdefault(ep.name, []).append((ep, source))
    for name in sorted(found):
        candidates = sorted(found[name], key=lambda c: (c[1].package, c[1].entry_point or ""))
        if len(candidates) > 1:
            names = ", ".join(f"{s.package} {s.version}" for _, s in candidates)
            for _, source in candidates:
                _broken(name, source, f"type {name!r} is published by more than one package "
                        f"({names}); uninstall all but one")
            continue
        ep, source = candidates[0]
        if name in _REGISTRY:
            owner = _SOURCES[name]
            _broken(name, source, f"type {name!r} is already provided by {owner.package} "
                    f"{owner.version}; a package cannot replace a type")
            continue
        try:
            cls = _load_entry_point(ep, source)
            register(cls, source=source)
        except PluginError as exc:
            _broken(name, source, str(exc))
        except Exception as exc:  # whatever the contract check did not foresee
            _broken(name, source, f"{type(exc).__name__}: {str(exc)[:300]}")


def _broken(name: str, source: NodeSource, reason: str) -> None:
    key = f"{name} {source.package} {source.entry_point}"
    _BROKEN[key] = BrokenNodeType(name, source, reason)
    logger.warning("node type %r of package %s %s is broken and not registered: %s",
                   name, source.package, source.version, reason)


def _load() -> None:
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:  # done by another thread, or a plugin asks while it loads
            return
        _loading = True
        try:
            from . import builtin  # noqa: F401  (registers the core types)
            from .flowcontrol import FLOW_CONTROL_TYPES
            from .testing import NoopNode, SleepNode

            for flow_type in FLOW_CONTROL_TYPES:
                register(flow_type)

            register(NoopNode)
            register(SleepNode)
            _load_plugins()
        finally:
            _loaded = True
            _loading = False


def get_node_type(name: str) -> NodeType | None:
    """Return the registered node type called ``name``, or ``None``."""
    _load()
    return _REGISTRY.get(name)


def node_types() -> dict[str, NodeType]:
    """Return every registered node type by name."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def node_source(name: str) -> NodeSource | None:
    """Return where the registered type ``name`` comes from."""
    _load()
    return _SOURCES.get(name)


def broken_types() -> list[BrokenNodeType]:
    """Return the entry points of the group that could not be registered, with the reasons."""
    _load()
    return sorted(_BROKEN.values(), key=lambda b: (b.name, b.source.package))


def broken_reason(name: str) -> str | None:
    """Return why the type ``name`` is not registered when a package promised it, else None."""
    reasons = [f"{b.source.package} {b.source.version}: {b.reason}"
               for b in broken_types() if b.name == name]
    return "; ".join(reasons) or None


def catalog() -> list[dict[str, Any]]:
    """Return the catalog of node types with their config schemas and packages."""
    entries = []
    for name, t in node_types().items():
        source = _SOURCES[name]
        entries.append({**t.describe(), "package": source.package, "version": source.version})
    return entries


def listing() -> dict[str, Any]:
    """Return what ``nexusflow nodes list`` and the REST catalog show: every registered type
    with its package, and every broken entry point with the reason."""
    return {"node_types": catalog(), "broken": [b.describe() for b in broken_types()]}


__all__ = [
    "GROUP",
    "BrokenNodeType",
    "Defer",
    "NodeSource",
    "NodeContext",
    "NodeLog",
    "NodeType",
    "Wait",
    "broken_reason",
    "broken_types",
    "catalog",
    "get_node_type",
    "listing",
    "node_source",
    "node_types",
    "register",
]

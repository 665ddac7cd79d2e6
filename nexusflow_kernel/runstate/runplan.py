"""The immutable plan of one workflow version, as the dispatcher needs it (cached per process)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..model.document import Node


@dataclass(frozen=True)
class RunPlan:
    """Nodes by index, their parents and children; built once per workflow version."""

    order: tuple[str, ...]
    idx_of: dict[str, int]
    nodes: dict[str, Node]
    parents: dict[str, tuple[str, ...]]
    children: dict[str, tuple[tuple[str, str | None], ...]]
    handle_of: dict[tuple[str, str], str | None]
    secret_names: frozenset[str] = frozenset()
    """Every secret a node of this flow may resolve: whatever records one of the run's nodes
    masks all of their values (``masking.py``); a stored connection as ``connection:NAME``."""
    recoverers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Node -> its children marked ``recovers: true`` (error handlers that recover)."""
    document: dict[str, Any] = field(default_factory=dict)
    """The flow-level fields of the version (``on_failure``, ``max_active_runs``, ...)."""

    @property
    def sinks(self) -> tuple[str, ...]:
        """Nodes without children (whose outputs a sub-flow returns)."""
        return tuple(n for n in self.order if not self.children[n])

    @classmethod
    def build(cls, graph: dict[str, Any], plan: dict[str, Any]) -> RunPlan:
        order = tuple(plan["order"])
        nodes = {n["id"]: Node.from_dict(n) for n in graph["nodes"]}
        parents = {k: tuple(v) for k, v in plan["parents"].items()}
        children = {k: tuple((c, h) for c, h in v) for k, v in plan["children"].items()}
        handle_of = {(p, c): h for p, kids in children.items() for c, h in kids}
        recoverers = {p: tuple(c for c, _h in kids if nodes[c].recovers)
                      for p, kids in children.items()}
        return cls(order, {n: i for i, n in enumerate(order)}, nodes, parents, children,
                   handle_of, _secret_names(nodes.values()),
                   {p: cs for p, cs in recoverers.items() if cs},
                   {k: v for k, v in graph.items() if k not in ("nodes", "edges")})


def _secret_names(nodes: Any) -> frozenset[str]:
    from ..masking import secret_refs
    from ..nodes import get_node_type

    names: set[str] = set()
    for node in nodes:
        node_type = get_node_type(node.type)
        names |= node_type.secret_names(node.config) if node_type else secret_refs(node.config)
        if node_type is not None:  # a stored connection's values are masked like a secret's
            names |= {CONNECTION_PREFIX + c for c in node_type.connection_names(node.config)}
    return frozenset(names)


CONNECTION_PREFIX = "connection:"
"""How ``secret_names`` names a connection (``connections.PREFIX``; no secret has a colon)."""


class PlanCache:
    """A small LRU of ``RunPlan`` by ``(workflow_id, version)``; versions never change."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[tuple[str, int], RunPlan] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> RunPlan | None:
        with self._lock:
            plan = self._items.get(key)
            if plan is not None:
                self._items.move_to_end(key)
            return plan

    def forget(self, key: tuple[str, int]) -> None:
        """Drop a plan (its version was rolled back: the number may be reused)."""
        with self._lock:
            self._items.pop(key, None)

    def put(self, key: tuple[str, int], plan: RunPlan) -> None:
        with self._lock:
            self._items[key] = plan
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

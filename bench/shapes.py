"""The flow shapes the bench runs, built from ``noop`` and ``sleep`` nodes."""

from __future__ import annotations

from typing import Any


def _node(nid: str, type_: str = "noop", **config: Any) -> dict[str, Any]:
    return {"id": nid, "type": type_, "config": config}


def _flow(name: str, nodes: list[dict[str, Any]], edges: list[tuple[str, str]]) -> dict[str, Any]:
    return {"schema": 1, "name": name, "nodes": nodes,
            "edges": [{"id": f"{a}-{b}", "source": a, "target": b} for a, b in edges]}


def wide(k: int) -> dict[str, Any]:
    """1 -> k no-ops -> 1."""
    nodes = [_node("s"), *(_node(f"m{i}") for i in range(k)), _node("e")]
    edges = [("s", f"m{i}") for i in range(k)] + [(f"m{i}", "e") for i in range(k)]
    return _flow(f"bench-wide-{k}", nodes, edges)


def chain(k: int) -> dict[str, Any]:
    """k no-ops one after another."""
    return _flow(f"bench-chain-{k}", [_node(f"c{i}") for i in range(k)],
                 [(f"c{i}", f"c{i + 1}") for i in range(k - 1)])


def lattice(layers: int, width: int) -> dict[str, Any]:
    """``layers`` x ``width`` no-ops; node (l, j) feeds (l+1, j) and (l+1, j+1 mod width)."""
    nodes = [_node(f"n{l_}_{j}") for l_ in range(layers) for j in range(width)]
    edges: list[tuple[str, str]] = []
    for l_ in range(layers - 1):
        for j in range(width):
            edges.append((f"n{l_}_{j}", f"n{l_ + 1}_{j}"))
            if width > 1:
                edges.append((f"n{l_}_{j}", f"n{l_ + 1}_{(j + 1) % width}"))
    return _flow(f"bench-lattice-{layers}x{width}", nodes, edges)


def diamond(seconds: float = 1.0) -> dict[str, Any]:
    """A -> (B, C) -> D; B and C each hold a worker for ``seconds``."""
    return _flow("bench-diamond",
                 [_node("A"), _node("B", "sleep", seconds=seconds),
                  _node("C", "sleep", seconds=seconds), _node("D")],
                 [("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")])


def latency_probe(k: int = 100, head_s: float = 0.3) -> dict[str, Any]:
    """A short sleep (clients connect during it), then a chain of ``k`` no-ops."""
    nodes = [_node("head", "sleep", seconds=head_s), *(_node(f"c{i}") for i in range(k))]
    edges = [("head", "c0")] + [(f"c{i}", f"c{i + 1}") for i in range(k - 1)]
    return _flow("bench-latency", nodes, edges)


def map_items(n: int) -> dict[str, Any]:
    """A list of ``n`` numbers, then a map node that runs a trivial transform per item."""
    return _flow(f"bench-map-{n}",
                 [_node("ids", "transform", expression=f"list(range({n}))"),
                  _node("m", "map", items="inputs['ids']",
                        node={"type": "transform", "config": {"expression": "item"}})],
                 [("ids", "m")])


def http_map(n: int, url: str) -> dict[str, Any]:
    """A map node of ``n`` http items, each a GET of ``url`` (the bench's slow endpoint)."""
    return _flow(f"bench-http-map-{n}",
                 [_node("ids", "transform", expression=f"list(range({n}))"),
                  _node("m", "map", items="inputs['ids']",
                        node={"type": "http",
                              "config": {"url": url, "query": {"i": "{{ item }}"}}})],
                 [("ids", "m")])


def size(doc: dict[str, Any]) -> int:
    return len(doc["nodes"])


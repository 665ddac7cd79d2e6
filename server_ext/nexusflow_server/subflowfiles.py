"""The sub-flow files a flow calls, read from this server's contents for a run's start."""

from __future__ import annotations

from typing import Any

from nexusflow_kernel.errors import NotFoundError

from .base import BadRequest
from .live import check_path, read_flow

MAX_SUBFLOW_FILES = 200


async def gather_subflow_files(serverapp: Any, graph: Any,
                               real_path: Any) -> dict[str, dict[str, Any]] | None:
    """Read the ``.nxflow`` files a flow calls, and those they call, from this server's
    contents (the live document when a canvas has it open, as for the flow itself):
    ``{relative path: {"file": real path, "graph": document}}``, or ``None`` when it calls
    none. A file that is missing or unreadable is left out: the engine then names it, with
    the node and field that call it."""
    from nexusflow_kernel.errors import FlowError
    from nexusflow_kernel.model.document import parse_flow_text
    from nexusflow_kernel.runstate.subflows import referenced_paths, subflow_key

    def as_dict(flow: Any, path: str) -> Any:
        return flow if isinstance(flow, dict) else parse_flow_text(flow, source=path)

    try:
        todo = referenced_paths(as_dict(graph, "flow"))
    except FlowError:
        return None  # the engine reports the flow's own fault
    found: dict[str, dict[str, Any]] = {}
    while todo and len(found) < MAX_SUBFLOW_FILES:
        key = subflow_key(todo.pop())
        if key is None or key in found:
            continue
        try:
            path = check_path(key)
            flow, _live = await read_flow(serverapp, path)
            doc = as_dict(flow, path)
        except (BadRequest, NotFoundError, FlowError):
            continue
        if not isinstance(doc, dict):
            continue
        found[key] = {"file": real_path(path), "graph": doc}
        todo.extend(referenced_paths(doc))
    return found or None


__all__ = ["MAX_SUBFLOW_FILES", "gather_subflow_files"]

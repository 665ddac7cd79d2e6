"""Read and patch a ``.nxflow`` file of the Jupyter contents: the live collaborative document
if open.

When a collaborator has the file open, the running flow is what they see now, not what was
last autosaved. The collaborative document is read through jupyter_server_ydoc's
``get_document`` (a fork of the room's document); without an open room, or without
jupyter-collaboration, the file comes from the contents manager.

The document API of the kernel's live link (contract: ``nexusflow_kernel.notebook.live``)
patches the room's own document in one transaction, so every open canvas shows the change at
once and the room's autosave writes the file; with no room open the file is rewritten
canonically. A bad op is refused (400, ``pointer`` naming it) before anything changes.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized

from .base import BadRequest, Forbidden, NexusFlowHandler, field

CONTENT_TYPE = "nxflow"
FILE_FORMAT = "text"


def check_path(path: Any) -> str:
    """Return a normalized contents path, refusing traversal, absolute paths and NUL bytes."""
    if not isinstance(path, str) or not path.strip():
        raise BadRequest("'path' must be a non-empty string", "/path")
    if "\x00" in path or "\\" in path:
        raise BadRequest("'path' may not hold NUL bytes or backslashes", "/path")
    if path.startswith("/") or path.startswith("~"):
        raise BadRequest("'path' must be relative to the Jupyter root folder", "/path")
    parts = path.split("/")
    if any(part == ".." for part in parts):
        raise BadRequest("'path' may not climb out of the Jupyter root folder ('..')", "/path")
    clean = posixpath.normpath(path)
    if not clean.endswith(".nxflow"):
        raise BadRequest("'path' must name a .nxflow file", "/path")
    return clean


def _ydoc_extension(serverapp: Any) -> Any:
    apps = getattr(serverapp.extension_manager, "extension_apps", {}) or {}
    found = apps.get("jupyter_server_ydoc")
    if not found:
        return None
    return next(iter(found), None) if isinstance(found, (set, list, tuple)) else found


def _as_flow(content: Any) -> Any:
    """Return flow text or dict from what a document's ``get()`` answered."""
    if isinstance(content, (dict, str, bytes)):
        return content
    return json.loads(json.dumps(content))


async def live_document(serverapp: Any, path: str) -> Any:
    """Return the open collaborative document's content at ``path``, or ``None``."""
    ext = _ydoc_extension(serverapp)
    if ext is None:
        return None
    try:
        doc = await ext.get_document(
            path=path, content_type=CONTENT_TYPE, file_format=FILE_FORMAT, copy=True
        )
    except Exception as exc:  # no file id yet, room closing ...: the saved file will do
        serverapp.log.debug("no live document for %s: %s", path, exc)
        return None
    if doc is None:
        return None
    return _as_flow(doc.get())


async def read_flow(serverapp: Any, path: str) -> tuple[Any, bool]:
    """Return ``(flow text or dict, live)`` for a contents path (already checked)."""
    live = await live_document(serverapp, path)
    if live is not None:
        return live, True
    from tornado.web import HTTPError

    from nexusflow_kernel.errors import NotFoundError

    cm = serverapp.contents_manager
    try:
        model = await ensure_async(cm.get(path, content=True, type="file", format="text"))
    except HTTPError as exc:
        if exc.status_code == 404:
            raise NotFoundError(f"no file {path!r} in the Jupyter contents") from None
        raise BadRequest(f"cannot read {path!r}: {exc.log_message}", "/path") from None
    return model["content"], False


# ---------------------------------------------------------------------------------------------
# The document API: GET documents/live?path=..., POST documents/patch.

OPS = ("put_node", "delete_node", "put_edge", "delete_edge", "set")
SET_KEYS = ("name", "description", "params")


def _rebase(exc: Any, prefix: str, where: str) -> BadRequest:
    """Turn a schema fault at ``/nodes/0/...`` (say) into a 400 pointing into the op."""
    pointer = getattr(exc, "pointer", "") or ""
    rest = pointer[len(prefix):] if pointer.startswith(prefix) else ""
    message = getattr(exc, "message", None) or str(exc)
    return BadRequest(f"{where}{rest}: {message}", f"{where}{rest}")


def _checked_item(value: Any, kind: str, where: str) -> dict[str, Any]:
    """Return a node or edge checked against the flow schema, in canonical form."""
    from nexusflow_kernel.errors import FlowError
    from nexusflow_kernel.model.document import canonical_document, validate_document

    doc = {"schema": 1, "nodes": [], "edges": []}
    doc[kind].append(value)
    try:
        validate_document(doc)
    except FlowError as exc:
        raise _rebase(exc, f"/{kind}/0", where) from None
    return canonical_document(doc)[kind][0]


def check_op(op: Any, index: int) -> dict[str, Any]:
    """Return op ``index`` of a patch, checked and canonical; raise ``BadRequest`` naming it."""
    where = f"/ops/{index}"
    if not isinstance(op, dict):
        raise BadRequest("each op must be an object", where)
    kind = op.get("op")
    if kind not in OPS:
        raise BadRequest(f"'op' must be one of {', '.join(OPS)}", f"{where}/op")
    if kind in ("put_node", "put_edge"):
        key = "node" if kind == "put_node" else "edge"
        item = field(op, key, dict, required=True, where=where)
        return {"op": kind, key: _checked_item(item, f"{key}s", f"{where}/{key}")}
    if kind in ("delete_node", "delete_edge"):
        item_id = field(op, "id", str, required=True, where=where)
        if not item_id:
            raise BadRequest("'id' may not be empty", f"{where}/id")
        return {"op": kind, "id": item_id}
    key = field(op, "key", str, required=True, where=where)
    if key not in SET_KEYS:
        raise BadRequest(f"'key' must be one of {', '.join(SET_KEYS)}", f"{where}/key")
    if "value" not in op:
        raise BadRequest("'value' is required (null removes the field)", f"{where}/value")
    value = op["value"]
    if value is None:
        return {"op": "set", "key": key, "value": None}
    from nexusflow_kernel.errors import FlowError
    from nexusflow_kernel.model.document import canonical_document, validate_document

    doc = {"schema": 1, key: value, "nodes": [], "edges": []}
    try:
        validate_document(doc)
    except FlowError as exc:
        raise _rebase(exc, f"/{key}", f"{where}/value") from None
    return {"op": "set", "key": key, "value": canonical_document(doc)[key]}


def apply_ops(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply checked ops to a plain document, refusing an edge whose end is not a node."""
    from nexusflow_kernel import defaults

    meta = {k: v for k, v in doc.items() if k not in ("nodes", "edges")}
    nodes = {n["id"]: n for n in doc.get("nodes") or []}
    edges = {e["id"]: e for e in doc.get("edges") or []}
    for index, op in enumerate(ops):
        kind = op["op"]
        if kind == "put_node":
            nodes[op["node"]["id"]] = op["node"]
        elif kind == "delete_node":
            nodes.pop(op["id"], None)
            edges = {k: e for k, e in edges.items() if op["id"] not in (e.get("source"),
                                                                         e.get("target"))}
        elif kind == "put_edge":
            edge = op["edge"]
            for end in ("source", "target"):
                if edge[end] not in nodes:
                    raise BadRequest(f"edge {edge['id']!r}: {end} {edge[end]!r} is not a node "
                                     "of the document", f"/ops/{index}/edge/{end}")
            edges[edge["id"]] = edge
        elif kind == "delete_edge":
            edges.pop(op["id"], None)
        elif op["value"] is None:
            meta.pop(op["key"], None)
        else:
            meta[op["key"]] = op["value"]
    if len(nodes) > defaults.MAX_NODES or len(edges) > defaults.MAX_EDGES:
        raise BadRequest(f"the document would hold {len(nodes)} nodes and {len(edges)} edges, "
                         f"over the limits ({defaults.MAX_NODES}, {defaults.MAX_EDGES})", "/ops")
    return {**meta, "nodes": list(nodes.values()), "edges": list(edges.values())}


def _apply_live(ydoc: Any, ops: list[dict[str, Any]]) -> None:
    """Apply checked ops to the roots of an open ``YNxFlow`` in one transaction."""
    from pycrdt import Map

    from .ydoc import _sync_plain

    doc = ydoc.ydoc
    nodes = doc.get("nodes", type=Map)
    edges = doc.get("edges", type=Map)
    meta = doc.get("meta", type=Map)
    with doc.transaction():
        for op in ops:
            kind = op["op"]
            if kind == "put_node":
                node = op["node"]
                current = nodes.get(node["id"])
                if isinstance(current, Map):
                    _sync_plain(current, node)
                else:
                    nodes[node["id"]] = Map(node)
            elif kind == "delete_node":
                if op["id"] in nodes:
                    del nodes[op["id"]]
                for key, edge in edges.to_py().items():
                    if op["id"] in (edge.get("source"), edge.get("target")):
                        del edges[key]
            elif kind == "put_edge":
                edges[op["edge"]["id"]] = op["edge"]
            elif kind == "delete_edge":
                if op["id"] in edges:
                    del edges[op["id"]]
            elif op["value"] is None:
                if op["key"] in meta:
                    del meta[op["key"]]
            else:
                meta[op["key"]] = op["value"]


def as_document(text: Any, path: str) -> dict[str, Any]:
    """Parse flow text into a document with ``nodes`` and ``edges`` lists (422 otherwise)."""
    from nexusflow_kernel.errors import FlowSchemaError
    from nexusflow_kernel.model.document import parse_flow_text

    data = text if isinstance(text, dict) else parse_flow_text(text, source=path)
    if not isinstance(data, dict):
        raise FlowSchemaError("a flow must be a JSON object", source=path)
    for key in ("nodes", "edges"):
        items = data.get(key, [])
        if not isinstance(items, list) or not all(
                isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
            raise FlowSchemaError(f"{key} must be a list of objects with string ids", f"/{key}",
                                  source=path)
    return data


async def open_document(serverapp: Any, path: str) -> Any:
    """Return the live ``YNxFlow`` of the room open on ``path``, or ``None`` (never opens one)."""
    ext = _ydoc_extension(serverapp)
    if ext is None:
        return None
    try:
        ids = serverapp.web_app.settings.get("file_id_manager")
        if ids is not None and ids.get_id(path) is None:
            return None  # never indexed: no room can be open on it
        doc = await ext.get_document(path=path, content_type=CONTENT_TYPE,
                                     file_format=FILE_FORMAT, copy=False, create=False)
    except Exception as exc:
        serverapp.log.debug("no live document for %s: %s", path, exc)
        return None
    return doc if doc is not None and hasattr(doc, "invalid") else None


async def _read_file(serverapp: Any, path: str) -> str | None:
    from tornado.web import HTTPError

    cm = serverapp.contents_manager
    try:
        if not await ensure_async(cm.file_exists(path)):
            return None
        model = await ensure_async(cm.get(path, content=True, type="file", format="text"))
    except HTTPError as exc:
        if exc.status_code == 404:
            return None
        raise BadRequest(f"cannot read {path!r}: {exc.log_message}", "/path") from None
    return model["content"]


async def patch_document(serverapp: Any, path: str, ops: list[dict[str, Any]], *,
                         create: bool) -> dict[str, Any]:
    """Apply checked ops to the live document at ``path``, or to the file; return the answer."""
    from tornado.web import HTTPError

    from nexusflow_kernel.errors import FlowError, NotFoundError
    from nexusflow_kernel.model.document import dumps_canonical

    live = await open_document(serverapp, path)
    if live is not None:
        invalid = live.invalid
        if invalid is not None:
            raise BadRequest(f"{path} is open but is not a valid flow ({invalid['error']}): "
                             "fix it on the canvas first", "/path", status=409)
        apply_ops(live.to_dict(), ops)  # refuses bad edges before the shared document changes
        _apply_live(live, ops)
        return {"path": path, "live": True, "applied": len(ops),
                "document": json.loads(live.get())}
    text = await _read_file(serverapp, path)
    if text is None:
        if not create:
            raise NotFoundError(f"no file {path!r} in the Jupyter contents (send \"create\": "
                                "true to create it)")
        current: dict[str, Any] = {"schema": 1, "nodes": [], "edges": []}
    else:
        try:
            current = as_document(text, path)
        except FlowError as exc:
            raise BadRequest(f"{path} is not a valid flow ({exc}): it is left as it is",
                             "/path", status=409) from None
    new_text = dumps_canonical(apply_ops(current, ops))
    if new_text != text:
        try:
            await ensure_async(serverapp.contents_manager.save(
                {"type": "file", "format": "text", "content": new_text}, path))
        except HTTPError as exc:
            if exc.status_code == 404:
                raise NotFoundError(f"cannot write {path!r}: {exc.log_message}") from None
            raise BadRequest(f"cannot write {path!r}: {exc.log_message}", "/path") from None
    return {"path": path, "live": False, "applied": len(ops), "document": json.loads(new_text)}


class _DocumentHandler(NexusFlowHandler):
    async def may(self, action: str) -> None:
        """Refuse unless the user may ``action`` ("read" or "write") Jupyter contents too."""
        ok = await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, action, "contents"))
        if not ok:
            raise Forbidden(f"this needs the {action!r} permission on Jupyter contents")

    def lock(self, path: str) -> asyncio.Lock:
        """Return the lock serializing the patches of one path (per server)."""
        locks = self.settings.setdefault("nexusflow_document_locks", {})
        if path not in locks:
            locks[path] = asyncio.Lock()
        return locks[path]


class LiveDocumentHandler(_DocumentHandler):
    """``GET documents/live?path=``: the flow as open canvases have it now, else as saved."""

    @authorized
    async def get(self) -> None:
        try:
            path = check_path(self.get_query_argument("path", None))
        except BadRequest as exc:
            raise BadRequest(str(exc), "?path") from None
        await self.may("read")
        text, live = await read_flow(self.serverapp, path)
        self.reply({"path": path, "live": live, "document": as_document(text, path)})


class DocumentPatchHandler(_DocumentHandler):
    """``POST documents/patch``: node, edge and field ops in one transaction."""

    @authorized
    async def post(self) -> None:
        body = self.body()
        path = check_path(field(body, "path", str, required=True))
        ops = [check_op(op, i) for i, op in enumerate(field(body, "ops", list, required=True))]
        create = field(body, "create", bool, default=False)
        await self.may("write")
        async with self.lock(path):
            answer = await patch_document(self.serverapp, path, ops, create=create)
        self.reply(answer)

"""Read and patch a ``.nxflow`` file of the Jupyter contents: the live collaborative document
if open.

When a collaborator has the file open, the running flow is what they see now, not what was
last autosaved. The document is read from the room jupyter_server_ydoc lists for the file
(found by file id, else by path; never opened here); without a room, or without
jupyter-collaboration, the file comes from the contents manager.

The document API of the kernel's live link (contract: ``nexusflow_kernel.notebook.live``)
patches the room's own document in one transaction, so every open canvas shows the change at
once and the room's autosave writes the file; the file is rewritten canonically only when no
room is listed for it (``room_of``: a room still loading is waited for, one in its grace period
is saved at once, one of the text editor gets the new text). A bad op is refused (400,
``pointer`` naming it) before anything changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import posixpath
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


# ---------------------------------------------------------------------------------------------
# The room of a path. A room is listed by jupyter_server_ydoc's websocket handler before it is
# initialized (its ``prepare`` lists it, its ``open`` loads the file into it, both under the
# extension's per-room lock), stays listed for ``document_cleanup_delay`` seconds after its
# last client left (then its cleaner deletes it under the same lock, cancelling a pending
# autosave), and may be a plain-text room if the file was opened with the text editor. The
# file must not be written under any of these: the room would reload it as an out-of-band
# change, dropping what collaborators had not saved yet.

ROOM_READY_S = 10.0
"""How long a read or a patch waits for a room that is still loading its file."""
ROOM_POLL_S = 0.05
"""How often a room still loading is looked at again."""
ROOM_SAVE_S = 10.0
"""How long a patch waits for the save of a room in its grace period (no client left)."""


def _room_path(room: Any) -> str | None:
    path = getattr(getattr(room, "_document", None), "path", None)
    return posixpath.normpath(path) if isinstance(path, str) and path else None


def _rooms_of(serverapp: Any, ext: Any, path: str) -> tuple[list[str], str | None]:
    """Return the ids of the rooms listed for ``path`` (the flow room first), and the id the
    flow room of ``path`` has or would have (``None`` if the file has no id yet)."""
    rooms = dict(getattr(getattr(ext, "ywebsocket_server", None), "rooms", None) or {})
    flow_room = None
    try:
        from jupyter_server_ydoc.utils import encode_file_path, room_id_from_encoded_path

        ids = serverapp.web_app.settings.get("file_id_manager")
        file_id = ids.get_id(path) if ids is not None else None
        if file_id is not None:
            flow_room = room_id_from_encoded_path(
                encode_file_path(FILE_FORMAT, CONTENT_TYPE, file_id))
    except Exception as exc:  # the rooms are still searched by path below
        serverapp.log.warning("live document: the file id of %s could not be looked up (%s); "
                              "looking for its room by path", path, exc, exc_info=exc)
    found = [flow_room] if flow_room in rooms else []
    for room_id, room in rooms.items():
        if room_id not in found and _room_path(room) == path:
            found.append(room_id)
    return found, flow_room


def _loaded(room: Any) -> bool:
    """Whether ``room`` holds its file (initialized, and loaded whole if loaded progressively)."""
    if not room.ready:
        return False
    progressive = getattr(room, "_document_progressively_loaded", None)
    return not (getattr(room, "_document_load_progressively", False)
                and progressive is not None and not progressive.done())


@asynccontextmanager
async def room_of(serverapp: Any, path: str) -> AsyncIterator[Any]:
    """Yield the loaded collaborative room listed for ``path``, or ``None`` if there is none;
    hold the room's lock meanwhile, so that no room opens, loads or is deleted under the caller.

    A room still loading its file is waited for (``ROOM_READY_S``, then 409: the file is not
    written under it). A failing file id lookup is logged as a warning, with the error, and the
    rooms are searched by path. Without jupyter_server_ydoc there are no rooms.
    """
    ext = _ydoc_extension(serverapp)
    if ext is None:
        yield None
        return
    locks = getattr(ext, "_room_locks", None)
    server = getattr(ext, "ywebsocket_server", None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ROOM_READY_S
    while True:
        found, flow_room = _rooms_of(serverapp, ext, path)
        room_id = found[0] if found else flow_room
        lock = locks[room_id] if locks is not None and room_id is not None else None
        async with lock if lock is not None else contextlib.nullcontext():
            rooms = getattr(server, "rooms", None) or {}
            room = rooms.get(room_id) if room_id is not None else None
            gone = lock is not None and locks.get(room_id) is not lock  # deleted meanwhile
            if not gone and (room is None and not found or room is not None and _loaded(room)):
                yield room  # the lock is held until the caller is done
                return
        # Loading its file, or deleted while we waited for its lock: look again shortly.
        if loop.time() > deadline:
            raise BadRequest(f"{path} is open in a collaborative room that is still loading "
                             f"the file after {ROOM_READY_S:g} s: try again", "/path",
                             status=409)
        await asyncio.sleep(ROOM_POLL_S)


async def read_flow(serverapp: Any, path: str) -> tuple[Any, bool]:
    """Return ``(flow text or dict, live)`` for a contents path (already checked): the
    document of the room open on it (what the canvases show now), else the saved file."""
    async with room_of(serverapp, path) as room:
        if room is not None:
            return _as_flow(room._document.get()), True
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


async def _settled(room: Any) -> None:
    """Wait until no out-of-band reload of the file is replacing the room's document; the
    caller then applies its change before awaiting anything, so none can start in between."""
    update_lock = getattr(room, "_update_lock", None)
    if update_lock is not None:
        async with update_lock:
            pass


def _patch_room(room: Any, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply checked ops to the document of a loaded room; return the document after them."""
    from nexusflow_kernel.errors import FlowError
    from nexusflow_kernel.model.document import dumps_canonical

    doc = room._document
    if hasattr(doc, "invalid"):  # a flow room (YNxFlow): node by node, in one transaction
        invalid = doc.invalid
        if invalid is not None:
            raise BadRequest(f"{path} is open but is not a valid flow ({invalid['error']}): "
                             "fix it on the canvas first", "/path", status=409)
        apply_ops(doc.to_dict(), ops)  # refuses bad edges before the shared document changes
        _apply_live(doc, ops)
        return json.loads(doc.get())
    # The file is open with the text editor: the text as its collaborators have it now.
    text = doc.get()
    try:
        current = as_document(text, path)
    except FlowError as exc:
        raise BadRequest(f"{path} is open in the text editor and is not a valid flow now "
                         f"({exc}): fix it there first", "/path", status=409) from None
    new_text = dumps_canonical(apply_ops(current, ops))
    if new_text != text:
        doc.set(new_text)
    return json.loads(new_text)


async def _save_if_closing(serverapp: Any, room: Any, path: str) -> None:
    """Save a room in its grace period now: its cleaner would cancel the pending autosave.

    Called right after the change, with the room's lock held (the cleaner waits for it).
    """
    cleaner = getattr(room, "cleaner", None)
    if cleaner is None or cleaner.done():
        return  # a client is connected: the room's autosave writes the file
    save = getattr(room, "_save_to_disc", None)
    saving = save() if save is not None else None
    if saving is None:
        serverapp.log.warning("live document: the room of %s is closing and could not be "
                              "saved at once; its autosave may be cancelled", path)
        return
    try:
        await asyncio.wait_for(asyncio.shield(saving), ROOM_SAVE_S)
    except TimeoutError:
        serverapp.log.warning("live document: the room of %s is closing and was not saved "
                              "within %g s", path, ROOM_SAVE_S)


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
    """Apply checked ops to the room open on ``path`` (waiting for one still loading the
    file), or to the file when no room is listed for it; return the answer."""
    async with room_of(serverapp, path) as room:
        if room is not None:
            await _settled(room)
            document = _patch_room(room, path, ops)
            await _save_if_closing(serverapp, room, path)
            return {"path": path, "live": True, "applied": len(ops), "document": document}
        # No room: write the file, holding the lock a canvas opening it now would need.
        return await _patch_file(serverapp, path, ops, create=create)


async def _patch_file(serverapp: Any, path: str, ops: list[dict[str, Any]], *,
                      create: bool) -> dict[str, Any]:
    from tornado.web import HTTPError

    from nexusflow_kernel.errors import FlowError, NotFoundError
    from nexusflow_kernel.model.document import dumps_canonical

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

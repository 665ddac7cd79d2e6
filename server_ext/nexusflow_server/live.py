"""Read a ``.nxflow`` file from the Jupyter contents: the live collaborative document if open.

When a collaborator has the file open, the running flow is what they see now, not what was
last autosaved. The collaborative document is read through jupyter_server_ydoc's
``get_document`` (a fork of the room's document); without an open room, or without
jupyter-collaboration, the file comes from the contents manager.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from jupyter_core.utils import ensure_async

from .base import BadRequest

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

"""The kernel's link to a ``.nxflow`` file open in JupyterLab, through the server extension.

Changes go to the server's live collaborative document, never by rewriting the file under the
editor's feet, so every open canvas shows them within a second. The routes (served by the
Nexus-Flow server extension)::

    GET  {base}nexusflow/api/documents/live?path=<contents path>
         -> 200 {"path": str, "live": bool, "document": <flow document>}
            ("live": whether a collaborative room is open; otherwise the file as saved)
         -> 404 {"error": "NotFoundError", "message": ...} when the file does not exist
    POST {base}nexusflow/api/documents/patch
         body {"path": str, "ops": [op, ...], "create": bool}
         -> 200 {"path": str, "live": bool, "applied": int, "document": <flow after the ops>}
         -> 400 {"error", "message", "pointer"} for a bad op; 404 unless "create" is true
    op: {"op": "put_node", "node": {...}}      add or replace the node with that id
        {"op": "delete_node", "id": str}        also deletes the node's edges
        {"op": "put_edge", "edge": {...}}       add or replace the edge with that id
        {"op": "delete_edge", "id": str}
        {"op": "set", "key": "name" | "description" | "params", "value": any}

The ops are applied in one transaction of the shared document, so edits a collaborator makes
meanwhile to other nodes survive. Requests carry the server's token
(``Authorization: token ...``); the server is found from ``NEXUSFLOW_SERVER_URL`` and
``NEXUSFLOW_SERVER_TOKEN`` or from the running-server files Jupyter writes (the one that started
this kernel first).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, NexusFlowError, NotFoundError
from ..procs import pid_alive

API = "nexusflow/api/documents"
TIMEOUT_S = 5.0


class LiveLinkError(NexusFlowError):
    """The Jupyter server refused or did not answer a live-document request."""


@dataclass(frozen=True)
class ServerInfo:
    """Where a Jupyter server listens and how to authenticate to it."""

    url: str
    token: str = ""
    root_dir: str = ""
    pid: int | None = None

    @classmethod
    def from_json(cls, info: dict[str, Any]) -> ServerInfo:
        url = info.get("url") or ""
        if not url.endswith("/"):
            url += "/"
        return cls(url=url, token=info.get("token") or "",
                   root_dir=info.get("root_dir") or info.get("notebook_dir") or "",
                   pid=info.get("pid"))


def running_servers() -> list[ServerInfo]:
    """Return the Jupyter servers this user runs (from the runtime folder's server files)."""
    from jupyter_core.paths import jupyter_runtime_dir

    out = []
    runtime = Path(jupyter_runtime_dir())
    for path in sorted(runtime.glob("jpserver-*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = info.get("pid")
        if pid is not None and not pid_alive(int(pid)):
            continue
        out.append(ServerInfo.from_json(info))
    return out



def find_server() -> ServerInfo:
    """Return the Jupyter server to talk to; raise ``BackendUnavailable`` when there is none."""
    url = os.environ.get("NEXUSFLOW_SERVER_URL")
    if url:
        return ServerInfo(url=url if url.endswith("/") else url + "/",
                          token=os.environ.get("NEXUSFLOW_SERVER_TOKEN", ""),
                          root_dir=os.environ.get("NEXUSFLOW_SERVER_ROOT", ""))
    servers = running_servers()
    parent = os.getppid()
    for server in servers:  # the server whose kernel manager started this kernel
        if server.pid == parent:
            return server
    cwd = Path.cwd().resolve()
    for server in servers:
        if server.root_dir and _inside(cwd, Path(server.root_dir)):
            return server
    if len(servers) == 1:
        return servers[0]
    raise BackendUnavailable(
        "no running Jupyter server was found to link to (open this notebook in JupyterLab, or "
        "set NEXUSFLOW_SERVER_URL and NEXUSFLOW_SERVER_TOKEN)" if not servers else
        f"{len(servers)} Jupyter servers run and none started this kernel: set "
        "NEXUSFLOW_SERVER_URL and NEXUSFLOW_SERVER_TOKEN to pick one"
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root.expanduser().resolve())
        return True
    except ValueError:
        return False


def contents_path(path: str | Path, server: ServerInfo) -> str:
    """Return ``path`` relative to the server's root folder (what the contents API names)."""
    p = Path(path)
    if server.root_dir:
        root = Path(server.root_dir).expanduser().resolve()
        absolute = p if p.is_absolute() else Path.cwd() / p
        try:
            return absolute.resolve().relative_to(root).as_posix()
        except ValueError:
            if p.is_absolute():
                raise NotFoundError(
                    f"{path} is outside the Jupyter server's root folder {root}") from None
    return p.as_posix()


def diff_ops(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the ops that turn document ``old`` into ``new`` (everything when ``old`` is
    ``None``); unchanged nodes and edges are left alone."""
    old = old or {}
    ops: list[dict[str, Any]] = []
    for key in ("name", "description", "params"):
        if key in new and new.get(key) != old.get(key):
            ops.append({"op": "set", "key": key, "value": new[key]})
    old_nodes = {n["id"]: n for n in old.get("nodes") or []}
    new_nodes = {n["id"]: n for n in new.get("nodes") or []}
    old_edges = {e["id"]: e for e in old.get("edges") or []}
    new_edges = {e["id"]: e for e in new.get("edges") or []}
    for edge_id in old_edges:
        if edge_id not in new_edges:
            ops.append({"op": "delete_edge", "id": edge_id})
    for node_id in old_nodes:
        if node_id not in new_nodes:
            ops.append({"op": "delete_node", "id": node_id})
    for node_id, node in new_nodes.items():
        if old_nodes.get(node_id) != node:
            ops.append({"op": "put_node", "node": node})
    for edge_id, edge in new_edges.items():
        if old_edges.get(edge_id) != edge:
            ops.append({"op": "put_edge", "edge": edge})
    return ops


class LiveLink:
    """A flow's link to one ``.nxflow`` document of one Jupyter server."""

    def __init__(self, server: ServerInfo, path: str) -> None:
        self.server = server
        self.path = path
        self.auto = True
        """Whether every change of the flow is pushed at once."""
        self.last: dict[str, Any] | None = None
        """The document as the server last answered it (what the next push diffs against)."""
        self.live: bool | None = None

    @classmethod
    def connect(cls, path: str | Path, *, server: ServerInfo | str | None = None) -> LiveLink:
        """Find the server (see ``find_server``) and return a link to ``path`` on it."""
        if isinstance(server, str):
            server = ServerInfo(url=server if server.endswith("/") else server + "/")
        info = server or find_server()
        return cls(info, contents_path(path, info))

    def _request(self, method: str, route: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        headers = {"Accept": "application/json"}
        if self.server.token:
            headers["Authorization"] = f"token {self.server.token}"
        url = f"{self.server.url}{API}/{route}"
        try:
            response = httpx.request(method, url, headers=headers, timeout=TIMEOUT_S, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"the Jupyter server at {self.server.url} did not answer ({exc}); is JupyterLab "
                "still running?"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        if response.status_code == 404:
            if "error" not in body:  # not an answer of the document API: the route is missing
                raise LiveLinkError(
                    f"the Jupyter server at {self.server.url} has no Nexus-Flow document API "
                    f"(HTTP 404 for {route.split('?')[0]}): is the nexusflow server extension "
                    "enabled and up to date?")
            raise NotFoundError(f"{self.path}: {body.get('message')}")
        if response.status_code >= 400:
            raise LiveLinkError(
                f"{self.path}: the Jupyter server answered HTTP {response.status_code}: "
                f"{body.get('message') or body}")
        return body

    def pull(self) -> dict[str, Any]:
        """Return the document as open canvases have it now (or as saved when none is open)."""
        body = self._request("GET", "live", params={"path": self.path})
        self.live = bool(body.get("live"))
        self.last = body["document"]
        return body["document"]

    def push(self, document: dict[str, Any]) -> dict[str, Any]:
        """Send what changed since the last push or pull; return the server's answer."""
        if self.last is None:
            try:
                self.pull()
            except NotFoundError:
                self.last = None
        ops = diff_ops(self.last, document)
        if not ops and self.last is not None:
            return {"path": self.path, "live": self.live, "applied": 0, "document": self.last}
        body = self._request("POST", "patch",
                             json={"path": self.path, "ops": ops, "create": True})
        self.live = bool(body.get("live"))
        self.last = body.get("document", document)
        return body

    def __repr__(self) -> str:
        return f"<LiveLink {self.path} on {self.server.url}>"


__all__ = ["LiveLink", "LiveLinkError", "ServerInfo", "diff_ops", "find_server",
           "running_servers"]

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


# ---------------------------------------------------------------------- merging
_TOP = ("name", "description", "params")
_MISSING: Any = object()


class LinkConflict(UserWarning):
    """A push met changes a collaborator made to the same nodes or fields: theirs were kept."""


def merge3(base: dict[str, Any] | None, ours: dict[str, Any], theirs: dict[str, Any] | None,
           *, force: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Merge this kernel's document ``ours`` into the live document ``theirs``, both changed
    from ``base`` (the document as this kernel last had it in sync; ``None``: an empty one).

    What only one side changed is taken from it: a collaborator's edits survive, ours arrive.
    Where both changed the same top-level field, node field or edge differently, theirs is
    kept (``force``: ours) and the clash is listed as ``{"what", "id", "field", "ours",
    "theirs"}``. Return the merged document and the clashes.
    """
    base, theirs = base or {}, theirs if theirs is not None else {}
    conflicts: list[dict[str, Any]] = []

    def pick(what: str, ident: str, field: str | None, b: Any, o: Any, t: Any) -> Any:
        if o == b or o == t:
            return t
        if t == b:
            return o
        conflicts.append({"what": what, "id": ident, "field": field,
                          "ours": None if o is _MISSING else o,
                          "theirs": None if t is _MISSING else t})
        return o if force else t

    merged: dict[str, Any] = {k: v for k, v in theirs.items() if k not in ("nodes", "edges")}
    for key in _TOP:
        value = pick("flow", key, None, base.get(key, _MISSING), ours.get(key, _MISSING),
                     theirs.get(key, _MISSING))
        if value is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = value
    for key in ("schema", "name"):
        merged.setdefault(key, ours.get(key))

    def by_id(doc: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
        return {item["id"]: item for item in doc.get(key) or []}

    nodes = []
    b_nodes, o_nodes, t_nodes = by_id(base, "nodes"), by_id(ours, "nodes"), by_id(theirs, "nodes")
    for node_id in _ordered(t_nodes, o_nodes, b_nodes):
        b, o, t = (d.get(node_id, _MISSING) for d in (b_nodes, o_nodes, t_nodes))
        if _MISSING in (o, t) or _MISSING is b:
            node = pick("node", node_id, None, b, o, t)  # added or deleted on a side
        else:  # present everywhere: field by field, so a move and an edit both survive
            node = {}
            for field in _ordered(t, o, b):
                value = pick("node", node_id, field, b.get(field, _MISSING),
                             o.get(field, _MISSING), t.get(field, _MISSING))
                if value is not _MISSING:
                    node[field] = value
        if node is not _MISSING:
            nodes.append(node)
    edges = []
    b_edges, o_edges, t_edges = by_id(base, "edges"), by_id(ours, "edges"), by_id(theirs, "edges")
    for edge_id in _ordered(t_edges, o_edges, b_edges):
        edge = pick("edge", edge_id, None, *(d.get(edge_id, _MISSING)
                                             for d in (b_edges, o_edges, t_edges)))
        if edge is not _MISSING:
            edges.append(edge)
    kept = {n["id"] for n in nodes}  # an edge whose node went away on the other side goes too
    merged["nodes"] = nodes
    merged["edges"] = [e for e in edges if e["source"] in kept and e["target"] in kept]
    return merged, conflicts


def _ordered(*maps: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for m in maps:
        seen.update(dict.fromkeys(m))
    return list(seen)


def describe_conflicts(path: str, conflicts: list[dict[str, Any]], *, forced: bool) -> str:
    """Return one sentence per clash, and what to do about it."""
    lines = []
    for c in conflicts:
        where = {"flow": f"the flow's {c['id']}", "edge": f"edge {c['id']!r}",
                 "node": f"node {c['id']!r}" + (f" {c['field']}" if c["field"] else "")}[c["what"]]
        ours = "deleted" if c["ours"] is None else json.dumps(c["ours"], default=str)[:80]
        theirs = "deleted" if c["theirs"] is None else json.dumps(c["theirs"], default=str)[:80]
        lines.append(f"{where}: here {ours}, on the canvas {theirs}")
    done = "Yours overwrote theirs (force=True)." if forced else (
        "Kept the canvas's: flow.push(force=True) sends yours, or change them again here.")
    many = len(conflicts) != 1
    return (f"{path}: {len(conflicts)} change{'s' * many} made here clash{'' if many else 'es'} "
            "with a collaborator's since this flow last synced: " + "; ".join(lines)
            + f". {done}")


class LiveLink:
    """A flow's link to one ``.nxflow`` document of one Jupyter server."""

    def __init__(self, server: ServerInfo, path: str) -> None:
        self.server = server
        self.path = path
        self.auto = True
        """Whether every change of the flow is pushed at once."""
        self.last: dict[str, Any] | None = None
        """The document as this kernel and the server last agreed on it (the merge base)."""
        self.live: bool | None = None
        self.conflicts: list[dict[str, Any]] = []
        """The clashes of the last push (see ``merge3``)."""

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

    def _live_document(self) -> dict[str, Any] | None:
        """Return the document as open canvases have it now (``None``: no such file yet)."""
        try:
            body = self._request("GET", "live", params={"path": self.path})
        except NotFoundError:
            return None
        self.live = bool(body.get("live"))
        return body["document"]

    def pull(self) -> dict[str, Any]:
        """Return the document as open canvases have it now (or as saved when none is open)."""
        body = self._request("GET", "live", params={"path": self.path})
        self.live = bool(body.get("live"))
        self.last = body["document"]
        return body["document"]

    def push(self, document: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        """Merge ``document`` into the live one and send the result; return the server's
        answer, whose ``document`` is the flow as everyone has it now.

        The merge base is the document as last pushed or pulled (see ``merge3``): what a
        collaborator changed meanwhile is kept, and a change of ours that clashes with one of
        theirs is not sent but listed in ``conflicts`` (also in the answer) and warned about
        with ``LinkConflict``; ``force=True`` sends ours instead.
        """
        theirs = self._live_document()
        merged, conflicts = merge3(self.last, document, theirs, force=force)
        self.conflicts = conflicts
        ops = diff_ops(theirs, merged)
        if not ops and theirs is not None:
            self.last = theirs
            body: dict[str, Any] = {"path": self.path, "live": self.live, "applied": 0,
                                    "document": theirs}
        else:
            body = self._request("POST", "patch",
                                 json={"path": self.path, "ops": ops, "create": True})
            self.live = bool(body.get("live"))
            self.last = body.get("document", merged)
        body["conflicts"] = conflicts
        if conflicts:
            import warnings

            warnings.warn(describe_conflicts(self.path, conflicts, forced=force), LinkConflict,
                          stacklevel=3)
        return body

    def __repr__(self) -> str:
        return f"<LiveLink {self.path} on {self.server.url}>"


__all__ = ["LinkConflict", "LiveLink", "LiveLinkError", "ServerInfo", "diff_ops", "find_server",
           "merge3", "running_servers"]

"""Sub-flows and ``on_failure`` flows are resolved, checked and pinned when a run starts.

A node whose type names another flow (``NodeType.subflow_key``: the ``subflow`` node's
``flow``), and a flow's ``on_failure``, name it by a ``.nxflow`` path or a stored workflow
``{"workflow_id", "version"?}``. When a run starts, in its transaction, every such reference
of the flow, and of the flows it calls, down the whole tree, is:

- found: a path is relative to the scope's base folder (the server's root, or the working
  directory of a notebook or the CLI) and may not leave it; the file must exist and compile;
- filed like any flow run from a file: under ``file:<owner>:<real path>`` (the owner is the
  caller's, as for the parent), new versions only when the file changed, and only as the
  caller's role allows (the ``authorize`` callback; see docs/security.md); a stored workflow
  needs the runner role on it;
- checked for recursion: a flow that calls itself, directly or through others, is refused,
  naming the node and field and the chain; so is a tree deeper than ``MAX_SUBFLOW_DEPTH``;
- pinned: ``{node id: {workflow_id, version, source?, subflows?}}`` (``$on_failure`` for the
  flow's ``on_failure``) is stored with the run, so a child starts the exact version that was
  checked, whenever its node runs, and a retry or replay runs the same versions again.

Nothing is stored when any of it fails: the whole start is one transaction.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .. import defaults
from ..errors import FlowError, NodeConfigError, NotFoundError
from ..model.compiler import CompiledFlow, compile_flow
from ..model.document import FlowDocument, load, load_document
from ..nodes import get_node_type
from .db import Conn
from .runplan import RunPlan


class _Store(Protocol):
    """What resolving needs of ``RunStore`` (named here, so this module needs no import of
    the store, which calls it)."""

    def save_version(self, conn: Conn, compiled: CompiledFlow, *, key: str | None = None,
                     actor: str | None = None,
                     authorize: Callable[[Any], None] | None = None) -> tuple[str, int, bool]: ...

    def plan_for(self, conn: Conn, workflow_id: Any, version: int) -> RunPlan: ...

    def reference_binding(self, conn: Conn, workflow_id: str, latest: int,
                          created_by: str | None, *, source: str,
                          graph: dict[str, Any] | None) -> Any: ...

ON_FAILURE = "$on_failure"
"""The key of the flow's ``on_failure`` pin (not a node id: node ids cannot hold ``$``)."""


@dataclass(frozen=True)
class SubflowScope:
    """Where and as whom the references of a run are resolved."""

    base_dir: str
    """The folder ``.nxflow`` paths are relative to."""
    base_name: str
    """How messages name that folder (``the server's root``, ``the working directory``)."""
    file_key: Callable[[str], str]
    """The workflow key of a flow file, from its real path (the caller's owner)."""
    actor: str | None = None
    authorize: Callable[[Any], None] | None = None
    """Called with a ``store.Binding`` before a flow is filed or a stored workflow is pinned;
    raises to refuse."""
    files: Mapping[str, tuple[str, Any]] | None = None
    """When set, the only flow files there are: normalized relative path -> (real absolute
    path, flow document). A process without the files (the Nexus-Flow service) gets them
    from the single-user server that has them."""


Chain = list[tuple[tuple[str, ...], str]]
"""The flows above a reference, each ``(identities, name)``: ``file:<real path>`` and
``workflow:<id>`` (a file has both; a flow that comes back under either is a cycle)."""


def resolve_subflows(store: _Store, conn: Conn, plan: RunPlan, scope: SubflowScope, *,
                     identities: Chain, on_failure: bool = True) -> dict[str, Any]:
    """Return the pins of ``plan``'s references (see the module docstring); ``identities``
    name the flow itself for the recursion check."""
    pins = _resolve_nodes(store, conn, plan, scope, identities, depth=0)
    ref = plan.document.get("on_failure")
    if on_failure and ref is not None:
        pins[ON_FAILURE] = _pin(store, conn, ref, scope, [], depth=0, node_id=None,
                                pointer="/on_failure", what="on_failure", nested_failure=False)
    # (the error's source is set by the caller: the flow being started)
    return pins


def _resolve_nodes(store: _Store, conn: Conn, plan: RunPlan, scope: SubflowScope,
                   chain: Chain, depth: int) -> dict[str, Any]:
    pins: dict[str, Any] = {}
    for i, node in enumerate(plan.nodes.values()):
        node_type = get_node_type(node.type)
        key = node_type.subflow_key if node_type is not None else None
        ref = node.config.get(key) if key else None
        if ref is None:
            continue
        pins[node.id] = _pin(store, conn, ref, scope, chain, depth=depth + 1, node_id=node.id,
                             pointer=f"/nodes/{i}/config/{key}", what=f"({node.type})")
    return pins


def _fault(node_id: str | None, what: str, pointer: str, message: str) -> NodeConfigError:
    where = f"node {node_id!r} {what}" if node_id is not None else what
    return NodeConfigError(f"{where}: {message}", pointer)


def _pin(store: _Store, conn: Conn, ref: Any, scope: SubflowScope, chain: Chain, *,
         depth: int, node_id: str | None, pointer: str, what: str,
         nested_failure: bool = True) -> dict[str, Any]:
    if depth > defaults.MAX_SUBFLOW_DEPTH:
        raise _fault(node_id, what, pointer,
                     f"sub-flows nest deeper than {defaults.MAX_SUBFLOW_DEPTH} levels "
                     f"({' -> '.join(_names(chain))})")
    pin: dict[str, Any] = {}
    if isinstance(ref, str):
        path, given = _find(ref, scope, node_id, what, pointer)
        name = os.path.basename(path)
        idents = [f"file:{path}"]
        _check_cycle(chain, idents[0], name, node_id, what, pointer)
        try:
            compiled = compile_flow(load(path) if given is None
                                    else load_document(given, source=ref))
        except FlowError as exc:
            raise _fault(node_id, what, pointer,
                         f"{ref} does not compile: {exc.message}"
                         + (f" (at {exc.pointer} of that flow)" if exc.pointer else "")
                         ) from exc
        authorize = scope.authorize
        wid, version, _ = store.save_version(
            conn, compiled, key=scope.file_key(path), actor=scope.actor,
            authorize=None if authorize is None else (
                lambda b: authorize(replace(b, source=ref, graph=compiled.document.data))))
        pin["source"] = ref
    elif isinstance(ref, dict) and isinstance(ref.get("workflow_id"), str):
        wid = ref["workflow_id"]
        try:
            uuid.UUID(wid)
        except ValueError:
            raise _fault(node_id, what, pointer + "/workflow_id",
                         f"{wid!r} is not a workflow id (a UUID)") from None
        row = conn.execute(
            "SELECT w.created_by, max(v.version) AS latest FROM workflows w"
            " JOIN workflow_versions v ON v.workflow_id = w.id"
            " WHERE w.id=%s AND w.deleted_at IS NULL GROUP BY w.id", (wid,)).fetchone()
        if row is None:
            raise _fault(node_id, what, pointer + "/workflow_id",
                         f"workflow {wid} does not exist (or was deleted)")
        version = ref.get("version") or row["latest"]
        if not 1 <= version <= row["latest"]:
            raise _fault(node_id, what, pointer + "/version",
                         f"workflow {wid} has no version {version} (latest: {row['latest']})")
        if scope.authorize is not None:
            graph = conn.execute("SELECT graph_json FROM workflow_versions"
                                 " WHERE workflow_id=%s AND version=%s",
                                 (wid, version)).fetchone()
            scope.authorize(store.reference_binding(
                conn, wid, row["latest"], row["created_by"], source=f"workflow {wid}",
                graph=graph["graph_json"] if graph else None))
        name = f"workflow {wid}"
        idents = []
    else:
        raise _fault(node_id, what, pointer,
                     "must be a .nxflow path or {\"workflow_id\": ..., \"version\": ...}")
    idents.append(f"workflow:{wid}")
    _check_cycle(chain, idents[-1], name, node_id, what, pointer)
    try:
        plan = store.plan_for(conn, wid, version)
    except NotFoundError as exc:
        raise _fault(node_id, what, pointer, str(exc)) from None
    pin.update({"workflow_id": str(wid), "version": int(version),
                "name": plan.document.get("name")})
    try:  # a fault inside the called flow is named from here: this node, then its own
        nested = _resolve_nodes(store, conn, plan, scope, chain + [(tuple(idents), name)],
                                depth)
        failure = plan.document.get("on_failure")
        if nested_failure and failure is not None:
            nested[ON_FAILURE] = _pin(store, conn, failure, scope, [], depth=0, node_id=None,
                                      pointer="/on_failure", what="on_failure",
                                      nested_failure=False)
    except NodeConfigError as exc:
        raise _fault(node_id, what, pointer, f"in {name}: {exc.message}") from exc
    if nested:
        pin["subflows"] = nested
    return pin


def subflow_key(ref: str) -> str | None:
    """Return the normalized relative path of a ``.nxflow`` reference (``None``: it leaves
    the folder it is relative to, or is absolute)."""
    if "\x00" in ref or os.path.isabs(ref):
        return None
    norm = os.path.normpath(ref)
    return None if norm == ".." or norm.startswith("../") else norm


def _find(ref: str, scope: SubflowScope, node_id: str | None, what: str,
          pointer: str) -> tuple[str, Any]:
    """Return the real path of a ``.nxflow`` reference inside the scope's base folder, and
    its document when the scope was given the files (else ``None``: read it from disk)."""
    if scope.files is not None:
        key = subflow_key(ref)
        if key is None:
            raise _fault(node_id, what, pointer,
                         f"{ref!r} is outside {scope.base_name}: a sub-flow path is relative "
                         "to it and may not leave it")
        if key not in scope.files:
            raise _fault(node_id, what, pointer, f"{ref} does not exist in {scope.base_name}")
        return scope.files[key]
    base = os.path.realpath(scope.base_dir)
    path = os.path.realpath(os.path.join(base, ref))
    if "\x00" in ref or not (path == base or path.startswith(base.rstrip(os.sep) + os.sep)):
        raise _fault(node_id, what, pointer,
                     f"{ref!r} is outside {scope.base_name}: a sub-flow path is relative to it "
                     "and may not leave it")
    if not os.path.isfile(path):
        raise _fault(node_id, what, pointer, f"{ref} does not exist in {scope.base_name}")
    return path, None


def _check_cycle(chain: Chain, ident: str, name: str, node_id: str | None, what: str,
                 pointer: str) -> None:
    for i, (idents, _name) in enumerate(chain):
        if ident in idents:
            loop = _names(chain[i:]) + [name]
            raise _fault(node_id, what, pointer,
                         f"{name} calls itself ({' -> '.join(loop)}): a flow may not run "
                         "itself as a sub-flow, directly or through others")


def _names(chain: Chain) -> list[str]:
    return [name for _idents, name in chain]


def check_subflow_files(document: FlowDocument, base_dir: str,
                        base_name: str = "the working directory") -> int:
    """Check, with no database, the ``.nxflow`` files a flow calls and those they call: each
    exists inside ``base_dir``, compiles, does not call itself, and the nesting is within
    ``MAX_SUBFLOW_DEPTH``; raise ``NodeConfigError`` naming the node and field as a start
    would (``nexusflow validate``). Return how many references were checked. Stored workflows
    named by id need the database: the start checks them."""
    scope = SubflowScope(base_dir=base_dir, base_name=base_name, file_key=str)
    chain: Chain = []
    if document.source:
        root = os.path.realpath(document.source)
        chain = [((f"file:{root}",), os.path.basename(root))]
    try:
        return _check_document(document, scope, chain, 0)
    except NodeConfigError as exc:
        if exc.source is None and document.source:
            raise NodeConfigError(exc.message, exc.pointer, source=document.source) from exc
        raise


def _check_document(document: FlowDocument, scope: SubflowScope, chain: Chain,
                    depth: int) -> int:
    refs: list[tuple[str | None, str, str, str]] = []
    for i, node in enumerate(document.nodes):
        node_type = get_node_type(node.type)
        key = node_type.subflow_key if node_type is not None else None
        ref = node.config.get(key) if key else None
        if isinstance(ref, str):
            refs.append((node.id, f"({node.type})", f"/nodes/{i}/config/{key}", ref))
    failure = document.data.get("on_failure")
    if isinstance(failure, str) and depth == 0:
        refs.append((None, "on_failure", "/on_failure", failure))
    checked = 0
    for node_id, what, pointer, ref in refs:
        nested = node_id is not None
        if nested and depth + 1 > defaults.MAX_SUBFLOW_DEPTH:
            raise _fault(node_id, what, pointer,
                         f"sub-flows nest deeper than {defaults.MAX_SUBFLOW_DEPTH} levels "
                         f"({' -> '.join(_names(chain))})")
        path, _given = _find(ref, scope, node_id, what, pointer)
        name = os.path.basename(path)
        if nested:
            _check_cycle(chain, f"file:{path}", name, node_id, what, pointer)
        try:
            child = load(path)
            compile_flow(child)
        except FlowError as exc:
            raise _fault(node_id, what, pointer,
                         f"{ref} does not compile: {exc.message}"
                         + (f" (at {exc.pointer} of that flow)" if exc.pointer else "")
                         ) from exc
        checked += 1
        if nested:
            try:
                checked += _check_document(child, scope, chain + [((f"file:{path}",), name)],
                                           depth + 1)
            except NodeConfigError as exc:
                raise _fault(node_id, what, pointer, f"in {name}: {exc.message}") from exc
    return checked


def referenced_paths(graph: Mapping[str, Any]) -> list[str]:
    """Return the ``.nxflow`` paths a flow document names (its sub-flow nodes' and its
    ``on_failure``), for whoever must gather the files before a start elsewhere."""
    refs: list[str] = []
    failure = graph.get("on_failure")
    if isinstance(failure, str):
        refs.append(failure)
    for node in graph.get("nodes") or []:
        node_type = get_node_type(str(node.get("type"))) if isinstance(node, dict) else None
        key = node_type.subflow_key if node_type is not None else None
        ref = (node.get("config") or {}).get(key) if key else None
        if isinstance(ref, str):
            refs.append(ref)
    return refs


def local_subflow_files(graph: Mapping[str, Any], base_dir: str,
                        limit: int = 200) -> dict[str, dict[str, Any]]:
    """Read the ``.nxflow`` files a flow calls, and those they call, from ``base_dir``:
    ``{relative path: {"file": real path, "graph": document}}`` (what a process without the
    files, the Nexus-Flow service, is sent). Missing or broken files are left out: the
    service then names them, with the node and field that call them."""
    from ..model.document import parse_flow_text

    base = os.path.realpath(base_dir)
    found: dict[str, dict[str, Any]] = {}
    todo = referenced_paths(graph)
    while todo and len(found) < limit:
        key = subflow_key(todo.pop())
        if key is None or key in found:
            continue
        path = os.path.realpath(os.path.join(base, key))
        if not path.startswith(base.rstrip(os.sep) + os.sep):
            continue
        try:
            with open(path, "rb") as fh:
                doc = parse_flow_text(fh.read(), source=key)
        except (OSError, FlowError):
            continue
        if isinstance(doc, dict):
            found[key] = {"file": path, "graph": doc}
            todo.extend(referenced_paths(doc))
    return found


__all__ = ["ON_FAILURE", "SubflowScope", "check_subflow_files", "local_subflow_files",
           "referenced_paths", "resolve_subflows", "subflow_key"]

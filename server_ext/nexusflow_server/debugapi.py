"""REST handlers of the debug loop (issue #15): a node's recorded context, resuming a run with
the flow's current version, one-node tests, and the debug notebook of a node.

The server never runs user code: a test is queued for a worker (``Engine.start_test``) and
this handler only waits for its record, masked by the worker like a run's.

Routes (see ``openapi.py``)::

    GET  runs/{run_id}/nodes/{node_id}/context   what the node saw (read role)
    POST runs/{run_id}/retry {"update": true, "path"|"graph"?, "from_node"?}
                                                 resume with the flow's current version (202;
                                                 409 naming the node when it does not fit)
    POST tests {"node_id", "path"|"graph"|"workflow_id", "node"?, "inputs"?, "params"?,
                "run_id"?, "wait_s"?}            test one node on a worker (201)
    GET  tests/{test_id}                         a test (its creator, or a reader of its flow)
    POST runs/{run_id}/nodes/{node_id}/notebook {"path"}
                                                 write <flow>-<node>-debug.ipynb next to the
                                                 flow (or find it); a file of this server
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.engine import workflow_key
from nexusflow_kernel.errors import NotFoundError, RunStateError

from . import api, rbac
from .api import RunBase, _parse, check_file, runs_code
from .base import BadRequest, Forbidden, NexusFlowHandler, caller_token, check_uuid, field
from .environments import checked_env, require_env
from .live import check_path, read_flow

MAX_WAIT_S = 60.0
"""Longest a request waits for a test; the test itself goes on (GET tests/{id})."""

TEST_WORKER_WAIT_S = 5.0
"""How long a test request waits for a worker of the node's queue to appear (one may be
starting, as JupyterLab's local workers do) before it answers 503 saying what to start."""


async def may_execute(handler: NexusFlowHandler, graph: Any) -> None:
    """Raise 403 unless the caller may run code, when ``graph`` holds a code node."""
    if not runs_code(graph):
        return
    ok = await ensure_async(handler.authorizer.is_authorized(
        handler, handler.current_user, "execute", "nexusflow:runs"))
    if not ok:
        raise Forbidden("this runs code: it needs the 'execute' permission")


async def flow_of(handler: NexusFlowHandler, body: dict[str, Any]) -> tuple[
        dict[str, Any] | None, str | None, str | None]:
    """Return ``(flow document, workflow key, source)`` named by a request body.

    ``path``: a ``.nxflow`` file of this server (the live document when open); ``graph``: the
    flow itself, with ``file`` (its real absolute path) or its name filing it; neither: no
    flow (the caller uses a stored version).
    """
    from nexusflow_kernel.model.document import load_document

    path = field(body, "path", str)
    graph = field(body, "graph", (dict, str))
    if path is not None and graph is not None:
        raise BadRequest("give 'path' or 'graph', not both", "/path")
    if path is not None:
        path = check_path(path)
        handler.need_files("/path")
        ok = await ensure_async(handler.authorizer.is_authorized(
            handler, handler.current_user, "read", "contents"))
        if not ok:
            raise Forbidden("reading the flow file needs the 'read' permission on contents")
        flow, _live = await read_flow(handler.serverapp, path)
        graph = flow if isinstance(flow, dict) else await handler.sync(_parse, flow, path)
        document = await handler.sync(load_document, graph, source=path)
        return document.data, handler.file_key(path), path
    if graph is None:
        return None, None, None
    source = field(body, "source", str)
    if source is not None and (len(source) > 4096 or "\x00" in source):
        raise BadRequest("'source' must be a path of at most 4096 characters", "/source")
    file = field(body, "file", str)
    if isinstance(graph, str):
        graph = await handler.sync(_parse, graph, source or "flow")
    document = await handler.sync(load_document, graph, source=source)
    key = workflow_key("file", check_file(file, "/file"), handler.key_owner) if file \
        else workflow_key("name", document.name, handler.key_owner)
    return {**document.data, "name": document.name}, key, source


async def retry_with_update(handler: RunBase, run: dict[str, Any],
                            body: dict[str, Any]) -> dict[str, Any]:
    """``POST runs/{id}/retry`` with ``"update": true`` (see the module docstring)."""
    from_node = field(body, "from_node", str)
    graph, key, source = await flow_of(handler, body)
    run_id, workflow_id = run["run_id"], str(run["workflow_id"])
    if key is not None:
        filed = await handler.engine_do(lambda e: e.workflow_for_key(key))
        if filed is not None and filed != workflow_id:
            raise RunStateError(
                f"run {run_id} belongs to workflow {workflow_id}, and {source or 'this flow'} is "
                f"filed as workflow {filed}: resume a run with its own flow")
    if graph is not None:
        await may_execute(handler, graph)
    else:
        latest = await handler.engine_do(lambda e: e.get_workflow(workflow_id))
        await may_execute(handler, latest["graph"])
    actor = handler.user_name

    def authorize(binding: Any) -> None:  # in the transaction that stores the version
        role = handler.role_on(binding.workflow_id, conn=binding.conn)
        need = "edit" if binding.changed else "run"
        if not rbac.allows(role, need):
            raise Forbidden(f"resuming run {run_id} with a changed flow stores a new version "
                            f"of workflow {binding.workflow_id}: that needs the editor role, "
                            f"yours is {role!r}")

    from nexusflow_kernel.engine import file_workflow_key

    owner = handler.key_owner
    root = (getattr(handler.contents_manager, "root_dir", None) or handler.serverapp.root_dir
            ) if handler.settings.get("serverapp") is not None else None
    scope = {"base_dir": root or "/", "base_name": "the server's root folder",
             "file_key": lambda real: file_workflow_key(real, owner)}  # sub-flows it calls
    await handler.sync(handler.record_identity)
    done = await handler.engine_do(lambda e: e.retry_updated(
        run_id, graph, from_node=from_node, actor=actor, authorize=authorize,
        subflow_scope=scope))
    await handler.audit("run.retry", f"run:{run_id}", from_node=from_node, update=True,
                        version=done["version"], previous_version=done["previous_version"])
    return done


class RunRetryHandler(api.RunRetryHandler):
    """``POST runs/{id}/retry``: as ``api.RunRetryHandler``; with ``"update": true``, with the
    flow's current version (``retry_with_update``)."""

    @authorized
    async def post(self, run_id: str) -> None:
        body = self.body()
        if not field(body, "update", bool, default=False):
            await super().post(run_id)
            return
        run = await self.run_for(run_id, "run")
        from .environments import require_env

        await self.sync(require_env, self, run.get("env") or "dev", "run")
        self.reply(await retry_with_update(self, run, body), 202)


class NodeContextHandler(RunBase):
    """``GET runs/{run_id}/nodes/{node_id}/context``: what the node saw, as recorded."""

    @authorized
    async def get(self, run_id: str, node_id: str) -> None:
        run = await self.run_for(run_id, "read")
        self.reply(await self.engine_do(lambda e: e.node_context(run["run_id"], node_id)))


class TestsHandler(NexusFlowHandler):
    """``POST tests``: run one node on a worker, outside any run; wait a little for it."""

    auth_resource = "nexusflow:runs"

    @authorized
    async def post(self) -> None:
        body = self.body()
        node_id = field(body, "node_id", str, required=True)
        given = field(body, "node", dict)
        inputs = field(body, "inputs", dict)
        params = field(body, "params", dict)
        run_id = field(body, "run_id", str)
        wait_s = field(body, "wait_s", (int, float), default=20)
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise BadRequest(f"'wait_s' must be in 0..{MAX_WAIT_S:g}", "/wait_s")
        workflow_id = field(body, "workflow_id", str)
        env = field(body, "env", str)
        if env is not None:
            env = checked_env(env, "/env")
        graph, key, source = await flow_of(self, body)
        if workflow_id is not None:
            if graph is not None:
                raise BadRequest("give one of 'path', 'graph' or 'workflow_id'", "/workflow_id")
            workflow_id = check_uuid(workflow_id, "workflow")
            await self.require(workflow_id, "read")
            graph = (await self.engine_do(lambda e: e.get_workflow(workflow_id)))["graph"]
        elif key is not None:
            workflow_id = await self.engine_do(lambda e: e.workflow_for_key(key))
        if graph is None and given is None:
            raise BadRequest("give the node's flow ('path', 'graph' or 'workflow_id') or the "
                             "node itself ('node')", "/node_id")
        node = given if given is not None else next(
            (n for n in graph.get("nodes") or [] if isinstance(n, dict)  # type: ignore[union-attr]
             and n.get("id") == node_id), None)
        if node is None:
            raise NotFoundError(f"the flow has no node {node_id!r}")
        if node.get("id") != node_id:
            raise BadRequest(f"'node' has the id {node.get('id')!r}, not {node_id!r}", "/node")
        if workflow_id is not None:
            await self.require(workflow_id, "run")
        if run_id is not None:
            run_id = check_uuid(run_id, "run")
            run = await self.engine_do(lambda e: e.get_run(run_id, outputs=False))
            await self.require(str(run["workflow_id"]), "read")
            if workflow_id is not None and str(run["workflow_id"]) != workflow_id:
                raise BadRequest(f"run {run_id} is not a run of this flow", "/run_id")
        await may_execute(self, {"nodes": [node]})
        if env is not None:  # as for a run: a restricted environment needs a role on it
            await self.sync(require_env, self, env, "run")
        await self.sync(self.record_identity)  # the Hub groups a worker checks scopes against
        await self.engine_do(lambda e: _await_test_worker(e, node))  # else 503, said at once
        actor = self.user_name
        test_id = await self.engine_do(lambda e: e.start_test(
            node, inputs=inputs, params=params, flow=graph, workflow_id=workflow_id,
            source=source, from_run=run_id, actor=actor, env=env))
        await self.audit("node.test", f"test:{test_id}", node=node_id, workflow_id=workflow_id,
                         **({"env": env} if env else {}))
        test = await self.engine_do(lambda e: e.wait_test(test_id, float(wait_s)))
        self.reply(test, 201)


def _await_test_worker(engine: Any, node: dict) -> None:
    """Raise ``NoWorkerForTest`` (a 503 naming what to start) when no live worker serves the
    node's queue within a few seconds: queued, the test would wait for one unseen."""
    from nexusflow_kernel.runstate.transitions import queue_for_type
    from nexusflow_kernel.workers import await_test_worker, worker_count

    queue = queue_for_type(str(node.get("type")))
    await_test_worker(lambda: worker_count(engine.settings, redis=engine.redis, queue=queue),
                      queue, node.get("id"), TEST_WORKER_WAIT_S)


class TestHandler(NexusFlowHandler):
    """``GET tests/{test_id}``: a node test, for whoever started it or may read its flow."""

    auth_resource = "nexusflow:runs"

    @authorized
    async def get(self, test_id: str) -> None:
        test_id = check_uuid(test_id, "node test")
        test = await self.engine_do(lambda e: e.get_test(test_id))
        if test["created_by"] != self.user_name and not self.is_admin:
            if test["workflow_id"] is None:
                raise NotFoundError(f"no node test {test_id}")
            await self.require(test["workflow_id"], "read")
        self.reply(test)


def notebook_path(flow_path: str, node_id: str) -> str:
    """Return ``<flow>-<node>-debug.ipynb`` next to the flow file (a contents path)."""
    folder, name = posixpath.split(flow_path)
    stem = name[:-len(".nxflow")] if name.endswith(".nxflow") else name
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in node_id)
    return posixpath.join(folder, f"{stem}-{safe}-debug.ipynb")


class DebugNotebookHandler(RunBase):
    """``POST runs/{run_id}/nodes/{node_id}/notebook {"path"}``: the node's debug notebook,
    written next to the flow file (found, not rewritten, when it is there already)."""

    @authorized
    async def post(self, run_id: str, node_id: str) -> None:
        from nexusflow_kernel.notebook.debug import debug_notebook

        body = self.body()
        path = check_path(field(body, "path", str, required=True))
        self.need_files("/path")
        ok = await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, "write", "contents"))
        if not ok:
            raise Forbidden("writing the debug notebook needs the 'write' permission on "
                            "contents")
        target = notebook_path(path, node_id)
        cm = self.contents_manager
        if await ensure_async(cm.file_exists(target)):
            self.reply({"path": target, "created": False})
            return
        context = await self._context(check_uuid(run_id, "run"), node_id)
        nb = debug_notebook(context, posixpath.basename(path))
        await ensure_async(cm.save({"type": "notebook", "format": "json", "content": nb},
                                   target))
        if not getattr(self.nf, "remote", False):  # a forwarding server keeps no audit log
            await self.audit("run.debug_notebook", f"run:{context['run_id']}", node=node_id,
                             path=target)
        self.reply({"path": target, "created": True}, 201)

    async def _context(self, run_id: str, node_id: str) -> dict[str, Any]:
        """The node's context: from the engine, or from the service a forwarding server
        sends the API to (with the caller's token)."""
        if not getattr(self.nf, "remote", False):
            run = await self.run_for(run_id, "read")
            return await self.engine_do(lambda e: e.node_context(run["run_id"], node_id))
        from urllib.parse import quote

        client = self.nf.service_client()
        token = caller_token(self)
        resp = await client.http.get(
            f"runs/{quote(run_id, safe='')}/nodes/{quote(node_id, safe='')}/context",
            headers={"Authorization": f"token {token}"} if token else {})
        if resp.status_code == 404:
            raise NotFoundError(resp.json().get("message") or f"no run {run_id}")
        if resp.status_code == 403:
            raise Forbidden(resp.json().get("message") or "not allowed")
        if resp.status_code >= 400:
            raise BadRequest(f"the Nexus-Flow service answered {resp.status_code}: "
                             f"{resp.text[:300]}", "", status=502)
        return json.loads(resp.content)


__all__ = ["DebugNotebookHandler", "NodeContextHandler", "RunRetryHandler", "TestHandler",
           "TestsHandler",
           "flow_of", "notebook_path", "retry_with_update"]

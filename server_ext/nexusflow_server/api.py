"""REST handlers for workflows (immutable versions) and runs."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.engine import workflow_key
from nexusflow_kernel.errors import FlowError, NotFoundError
from nexusflow_kernel.model.document import load_document, parse_flow_text
from nexusflow_kernel.nodes import get_node_type

from . import rbac
from .base import BadRequest, Forbidden, NexusFlowHandler, check_uuid, field
from .environments import checked_env, require_env
from .live import check_path, read_flow
from .subflowfiles import gather_subflow_files

CODE_NODE_TYPES = frozenset({"code", "python", "shell", "task"})
"""Node types that run user code; starting a flow holding one needs the ``execute`` action."""

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")

RUN_TRIGGERS = ("manual", "notebook")
"""What a caller may record as the trigger of a run it starts (others are the triggers')."""


def check_file(value: str, pointer: str) -> str:
    """Return a file's absolute path, normalized, or raise ``BadRequest`` naming ``pointer``."""
    if len(value) > 4096 or "\x00" in value or not posixpath.isabs(value):
        raise BadRequest("a file must be an absolute path of at most 4096 characters", pointer)
    return posixpath.normpath(value)


def runs_code(graph: Any) -> bool:
    """Return whether a flow document (dict) holds a node that runs user code."""
    for node in (graph or {}).get("nodes") or []:
        kind = node.get("type") if isinstance(node, dict) else None
        node_type = get_node_type(kind) if isinstance(kind, str) else None
        if kind in CODE_NODE_TYPES or (node_type is not None and node_type.queue == "sandbox"):
            return True
    return False


def graph_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Return nodes and edges added, removed and changed between two documents."""
    out: dict[str, Any] = {}
    for part in ("nodes", "edges"):
        a = {i["id"]: i for i in old.get(part) or []}
        b = {i["id"]: i for i in new.get(part) or []}
        out[part] = {
            "added": sorted(set(b) - set(a)),
            "removed": sorted(set(a) - set(b)),
            "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
        }
    return out


class WorkflowsHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self) -> None:
        flows = await self.engine_do(lambda e: e.list_workflows())
        visible = await self.sync(self.visible_filter)
        if visible is not None:
            flows = [f for f in flows if visible(f["workflow_id"])]
        self.reply({"workflows": flows})

    @authorized
    async def post(self) -> None:
        body = self.body()
        graph = field(body, "graph", (dict, str), required=True)
        name = field(body, "name", str)
        flow = await self.engine_do(
            lambda e: e.save_workflow(graph, name=name, actor=self.user_name))
        await self.sync(self.nf.store().ensure_owner, flow["workflow_id"], self.user_name)
        await self.audit("workflow.create", f"workflow:{flow['workflow_id']}",
                         version=flow["version"])
        self.reply(flow, 201)


class WorkflowHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        version = self.query_int("version", low=1)
        self.reply(await self.engine_do(lambda e: e.get_workflow(workflow_id, version)))

    @authorized
    async def put(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        body = self.body()
        graph = field(body, "graph", (dict, str), required=True)
        name = field(body, "name", str)
        await self.require(workflow_id, "edit")
        await self.engine_do(lambda e: e.get_workflow(workflow_id))  # 404 for a deleted one
        flow = await self.engine_do(lambda e: e.save_workflow(
            graph, workflow_id=workflow_id, name=name, actor=self.user_name))
        await self.audit("workflow.update", f"workflow:{workflow_id}", version=flow["version"])
        self.reply(flow)

    @authorized
    async def delete(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "admin")
        await self.engine_do(lambda e: e.delete_workflow(workflow_id))
        await self.sync(self.nf.store().forget_workflow, workflow_id)
        await self.audit("workflow.delete", f"workflow:{workflow_id}")
        self.set_status(204)
        self.finish()


class VersionsHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        self.reply({"versions": await self.engine_do(lambda e: e.list_versions(workflow_id))})


class DiffHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        a = self.query_int("from", low=1)
        b = self.query_int("to", low=1)
        if a is None or b is None:
            raise BadRequest("query parameters 'from' and 'to' (versions) are required", "?from")
        await self.require(workflow_id, "read")
        old = await self.engine_do(lambda e: e.get_workflow(workflow_id, a))
        new = await self.engine_do(lambda e: e.get_workflow(workflow_id, b))
        text = await self.engine_do(lambda e: e.diff_versions(workflow_id, a, b))
        self.reply({"from": a, "to": b, **graph_diff(old["graph"], new["graph"]), "text": text})


class RollbackHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def post(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        version = field(self.body(), "version", int, required=True)
        await self.require(workflow_id, "edit")
        flow = await self.engine_do(
            lambda e: e.rollback_workflow(workflow_id, version, actor=self.user_name))
        await self.audit("workflow.rollback", f"workflow:{workflow_id}", to=version,
                         version=flow["version"])
        self.reply(flow)


class RunsHandler(NexusFlowHandler):
    auth_resource = "nexusflow:runs"
    run_options: dict[str, Any] = {}
    """``use_pins``, ``cache`` and ``env`` of the run being started (from the request body)."""

    @authorized
    async def get(self) -> None:
        limit = self.query_int("limit", default=50, low=1, high=1000)
        status = self.get_query_argument("status", None) or None
        if status is not None and status not in RUN_STATUSES:
            raise BadRequest(f"'status' must be one of {', '.join(RUN_STATUSES)}", "?status")
        workflow_id = self.get_query_argument("workflow_id", None) or None
        if workflow_id is not None:
            workflow_id = check_uuid(workflow_id, "workflow")
        source = self.get_query_argument("source", None) or None
        if source is not None and "\x00" in source:
            raise BadRequest("'source' may not hold NUL bytes", "?source")
        path = self.get_query_argument("path", None) or None
        file = self.get_query_argument("file", None) or None
        key = None
        if path is not None:  # the runs of this server's file (what its canvas shows)
            try:
                path = check_path(path)
            except BadRequest as exc:
                raise BadRequest(str(exc), "?path") from None
            self.need_files("?path")
            key = self.file_key(path)
        elif file is not None:  # the runs of a file of the server that forwarded this
            key = workflow_key("file", check_file(file, "?file"), self.key_owner)
        if key is not None:
            filed = await self.engine_do(lambda e: e.workflow_for_key(key))
            if filed is None or workflow_id not in (None, filed):
                self.reply({"runs": []})
                return
            workflow_id = filed
        runs = await self.engine_do(lambda e: e.list_runs(
            limit=limit, workflow_id=workflow_id, source=source, status=status))
        visible = await self.sync(self.visible_filter)
        if visible is not None:
            runs = [r for r in runs if visible(r["workflow_id"])]
        self.reply({"runs": runs})

    @authorized
    async def post(self) -> None:
        body = self.body()
        path = field(body, "path", str)
        workflow_id = field(body, "workflow_id", str)
        graph = field(body, "graph", (dict, str))
        version = field(body, "version", int)
        inputs = field(body, "inputs", dict, default={})
        trigger = field(body, "trigger", str, default="manual")
        self.run_options = {"use_pins": field(body, "use_pins", bool, default=False),
                            "cache": field(body, "cache", bool, default=True)}
        env = field(body, "env", str)
        if env is not None:
            env = checked_env(env, "/env")
            self.run_options["env"] = env
        if sum(x is not None for x in (path, workflow_id, graph)) != 1:
            raise BadRequest("give exactly one of 'path', 'graph' or 'workflow_id'", "/path")
        if version is not None and version < 1:
            raise BadRequest("'version' must be 1 or more", "/version")
        if trigger not in RUN_TRIGGERS:
            raise BadRequest(f"'trigger' must be one of {', '.join(RUN_TRIGGERS)}", "/trigger")
        if env is not None:  # running in an environment needs a role on it (a restricted one)
            await self.sync(require_env, self, env, "run")
        await self.sync(self.record_identity)  # the Hub groups a worker checks secrets against
        if path is not None:
            run_id = await self._start_from_path(path, inputs, trigger)
        elif graph is not None:
            run_id = await self._start_from_graph(graph, body, inputs, trigger)
        else:
            run_id = await self._start_stored(check_uuid(workflow_id, "workflow"), version,
                                              inputs, trigger)
        self.reply({"run_id": run_id}, 201)

    async def _may_execute(self, graph: Any) -> bool:
        """Raise 403 when ``graph`` runs code and the user may not; return whether they may
        (for the sub-flows the run calls, checked when they are resolved)."""
        ok = bool(await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, "execute", "nexusflow:runs")))
        if runs_code(graph) and not ok:
            raise Forbidden("this flow runs code: starting it needs the 'execute' permission")
        return ok

    def _subflows(self, label: str, owner: str, may_execute: bool, *,
                  files: Any = None) -> dict[str, Any]:
        """Return ``start_run``'s arguments for the flows a run calls: found in this server's
        root (or in ``files`` sent by the server that has them), filed for ``owner``, each
        authorized as the caller (docs/security.md)."""
        from nexusflow_kernel.engine import file_workflow_key

        has_files = self.settings.get("serverapp") is not None
        root = (getattr(self.contents_manager, "root_dir", None) or self.serverapp.root_dir
                ) if has_files else None
        return {
            "authorize": lambda b: self._may_file(b, b.source or label, owner, may_execute),
            "base_dir": root or "/", "files": files,
            "base_name": "the server's root folder" if has_files or files is not None
            else "the Nexus-Flow service (it has no files: run the flow from a single-user "
                 "server)",
            "file_key": lambda real: file_workflow_key(real, owner),
        }

    async def _start_from_path(self, path: str, inputs: dict[str, Any],
                               trigger: str = "manual") -> str:
        path = check_path(path)
        self.need_files("/path")
        ok = await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, "read", "contents"))
        if not ok:
            raise Forbidden("reading the flow file needs the 'read' permission on contents")
        flow, live = await read_flow(self.serverapp, path)
        graph = flow if isinstance(flow, dict) else await self.sync(
            _parse, flow, path)
        may_execute = await self._may_execute(graph)
        owner = self.nf.file_owner

        root = getattr(self.contents_manager, "root_dir", None) or self.serverapp.root_dir
        files = subflow_files(await gather_subflow_files(
            self.serverapp, graph, lambda p: os.path.realpath(os.path.join(root, p))) or {},
            owner)
        run_id = await self.engine_do(lambda e: e.start_run(
            graph, inputs=inputs, trigger=trigger, actor=self.user_name, source=path,
            key=self.file_key(path), **self._subflows(path, owner, may_execute, files=files),
            **self.run_options))
        await self.audit("run.start", f"run:{run_id}", path=path, live=live)
        return run_id

    async def _start_from_graph(self, graph: dict[str, Any] | str, body: dict[str, Any],
                                inputs: dict[str, Any], trigger: str) -> str:
        """Start a flow sent whole (a canvas's live document forwarded by a single-user server,
        or a notebook): filed under its file's workflow (``file``: the file's real absolute
        path) or its name's, for the key owner (the caller, or the proven server owner)."""
        source = field(body, "source", str)
        file = field(body, "file", str)
        live = field(body, "live", bool, default=False)
        if source is not None and (len(source) > 4096 or "\x00" in source):
            raise BadRequest("'source' must be a path of at most 4096 characters", "/source")
        if isinstance(graph, str):
            graph = await self.sync(_parse, graph, source or "flow")
        document = await self.sync(load_document, graph, source=source)
        may_execute = await self._may_execute(document.data)
        owner = self.key_owner
        files = subflow_files(field(body, "subflow_files", dict), owner)
        if file is not None:
            label = source or file
            key = workflow_key("file", check_file(file, "/file"), owner)
        else:
            label = f"flow {document.name!r}"
            key = workflow_key("name", document.name, owner)
        data = {**document.data, "name": document.name}
        run_id = await self.engine_do(lambda e: e.start_run(
            data, inputs=inputs, trigger=trigger, actor=self.user_name, source=source, key=key,
            **self._subflows(label, owner, may_execute, files=files), **self.run_options))
        await self.audit("run.start", f"run:{run_id}", **({"path": source} if source else {}),
                         live=live, trigger=trigger)
        return run_id

    def _may_file(self, binding: Any, path: str, owner: str, may_execute: bool = True) -> None:
        """Let this run be filed under the file's workflow, or refuse (403); in its transaction.

        A new workflow is the caller's (owner); an existing one needs the runner role for an
        unchanged flow and the editor role for a new version. The files' owner (a server's
        user) owns the workflows of their files. A sub-flow the run calls is checked the same
        way (``binding.source`` names it); one named by workflow id needs the caller's runner
        role on it, and one that runs code the 'execute' permission.
        """
        if binding.graph is not None and not may_execute and runs_code(binding.graph):
            raise Forbidden(f"sub-flow {path} runs code: starting it needs the 'execute' "
                            "permission")
        if binding.reference:
            if rbac.allows(self.role_on(binding.workflow_id, conn=binding.conn), "run"):
                return
            raise Forbidden(f"the run calls {path}, and you have no runner role on it")
        if binding.created:
            self.nf.store().grant(binding.workflow_id, self.user_name, "owner", self.user_name,
                                  conn=binding.conn)
            return
        role = self.role_on(binding.workflow_id, conn=binding.conn)
        if self.user_name == owner:
            role = "owner"
        need = "edit" if binding.changed else "run"
        if rbac.allows(role, need):
            return
        wid, owner = binding.workflow_id, binding.created_by or "another user"
        if role is None:
            raise Forbidden(
                f"{path} is filed as workflow {wid} of {owner}; you have no role on it: ask "
                "its owner for the runner role to run it, or the editor role to change it")
        raise Forbidden(
            f"{path} differs from version {binding.latest} of workflow {wid}: saving it as a "
            f"new version needs the editor role, yours is {role!r} (run the file unchanged, "
            "or ask its owner for the editor role)")

    async def _start_stored(self, workflow_id: str, version: int | None,
                            inputs: dict[str, Any], trigger: str = "manual") -> str:
        await self.require(workflow_id, "run")
        env = self.run_options.get("env")
        if version is None and env is not None:  # the version promoted to the environment
            version = await self.engine_do(lambda e: e.version_to_run(workflow_id, env))
        flow = await self.engine_do(lambda e: e.get_workflow(workflow_id, version))
        may_execute = await self._may_execute(flow["graph"])
        run_id = await self.engine_do(lambda e: e.start_run(
            workflow_id=workflow_id, version=flow["version"], inputs=inputs, trigger=trigger,
            actor=self.user_name,
            **self._subflows(f"workflow {workflow_id}", self.key_owner, may_execute),
            **self.run_options))
        await self.audit("run.start", f"run:{run_id}", workflow_id=workflow_id,
                         version=flow["version"])
        return run_id


def subflow_files(value: dict[str, Any] | None, owner: str) -> dict[str, tuple[str, Any]] | None:
    """Check the ``subflow_files`` a forwarding server sent with a flow: ``{relative path:
    {"file": real absolute path, "graph": document}}``; return the engine's ``files``."""
    from nexusflow_kernel.runstate.subflows import subflow_key

    if value is None:
        return None
    if len(value) > 200:
        raise BadRequest("'subflow_files' may hold 200 files at most", "/subflow_files")
    out: dict[str, tuple[str, Any]] = {}
    for rel, item in value.items():
        where = f"/subflow_files/{rel}"
        key = subflow_key(rel) if isinstance(rel, str) else None
        if key is None or not isinstance(item, dict) or not isinstance(item.get("graph"), dict):
            raise BadRequest("each sub-flow file is {\"file\": path, \"graph\": document} "
                             "under its relative path", where)
        out[key] = (check_file(field(item, "file", str, required=True, where=where),
                               where + "/file"), item["graph"])
    return out


def _parse(text: str | bytes, path: str) -> Any:
    try:
        return parse_flow_text(text, source=path)
    except FlowError:
        raise
    except Exception as exc:  # pragma: no cover - parse_flow_text raises FlowError
        raise BadRequest(f"{path}: {exc}", "/path") from None


class RunBase(NexusFlowHandler):
    auth_resource = "nexusflow:runs"

    async def run_for(self, run_id: str, action: str, *, outputs: bool = False) -> dict[str, Any]:
        """Return the run after checking the user's role on its workflow."""
        run_id = check_uuid(run_id, "run")
        run = await self.engine_do(lambda e: e.get_run(run_id, outputs=outputs))
        await self.require(str(run["workflow_id"]), action)
        return run


class RunHandler(RunBase):
    @authorized
    async def get(self, run_id: str) -> None:
        outputs = self.get_query_argument("outputs", "true")
        if outputs not in ("true", "false"):
            raise BadRequest("'outputs' must be true or false", "?outputs")
        # outputs=false: the states only (the canvas's run history grid reads many runs)
        self.reply(await self.run_for(run_id, "read", outputs=outputs == "true"))


class RunCancelHandler(RunBase):
    @authorized
    async def post(self, run_id: str) -> None:
        run = await self.run_for(run_id, "run")
        await self.engine_do(lambda e: e.cancel_run(run["run_id"]))
        await self.audit("run.cancel", f"run:{run['run_id']}")
        self.reply({"run_id": run["run_id"]}, 202)


class RunRetryHandler(RunBase):
    @authorized
    async def post(self, run_id: str) -> None:
        from_node = field(self.body(), "from_node", str)
        run = await self.run_for(run_id, "run")
        if from_node is not None and from_node not in (await self.engine_do(
                lambda e: e.get_run(run["run_id"], outputs=False)))["nodes"]:
            raise BadRequest(f"node {from_node!r} is not in run {run['run_id']}", "/from_node")
        await self.sync(require_env, self, run.get("env") or "dev", "run")
        await self.sync(self.record_identity)
        rid = await self.engine_do(lambda e: e.retry_run(run["run_id"], from_node))
        await self.audit("run.retry", f"run:{rid}", from_node=from_node)
        self.reply({"run_id": rid}, 202)


class RunReplayHandler(RunBase):
    @authorized
    async def post(self, run_id: str) -> None:
        run = await self.run_for(run_id, "run")
        await self.sync(require_env, self, run.get("env") or "dev", "run")
        await self.sync(self.record_identity)
        rid = await self.engine_do(lambda e: e.replay_run(run["run_id"], actor=self.user_name))
        await self.audit("run.replay", f"run:{rid}", replay_of=run["run_id"])
        self.reply({"run_id": rid}, 201)


class NodeLogsHandler(RunBase):
    @authorized
    async def get(self, run_id: str, node_id: str) -> None:
        run = await self.run_for(run_id, "read")
        if node_id not in run["nodes"]:
            raise NotFoundError(f"no node {node_id!r} in run {run['run_id']}")
        attempts = await self.engine_do(lambda e: e.node_attempts(run["run_id"], node_id))
        self.reply({"attempts": attempts})


class NodeOutputHandler(RunBase):
    @authorized
    async def get(self, run_id: str, node_id: str) -> None:
        run = await self.run_for(run_id, "read", outputs=True)
        node = run["nodes"].get(node_id)
        if node is None:
            raise NotFoundError(f"no node {node_id!r} in run {run['run_id']}")
        self.reply({"run_id": run["run_id"], "node": node_id, "state": node.get("state"),
                    "output": node.get("output"), "error": node.get("error")})

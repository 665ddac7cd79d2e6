"""The engine as a client of the Nexus-Flow service: no database, Redis or key in this process.

On a JupyterHub the single-user servers and their kernels hold none of the backends'
credentials; one service does (``nexusflow server``, registered with the Hub). Notebooks
(``Flow.run``, ``Run``) and the CLI then reach runs through the service's REST API, with the
user's Hub token (``JUPYTERHUB_API_TOKEN``) or a service token (``NEXUSFLOW_SERVICE_TOKEN``),
and the service decides what the user may do. :func:`open_engine` chooses: a
:class:`RemoteEngine` when ``Settings.service_url`` (``NEXUSFLOW_SERVICE_URL``) is set, else the
local :class:`~nexusflow_kernel.engine.Engine`.

``RemoteEngine`` has the methods of ``Engine`` that notebooks and the CLI use, with the same
arguments and answers (the service answers with what ``Engine`` returns), and raises the same
errors: ``NotFoundError`` (404), ``RunStateError`` (409), ``FlowError`` (422, with the JSON
pointer), ``PermissionDenied`` (403), ``AuthenticationError`` (401), ``BackendUnavailable``
(503, or the service does not answer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from . import errors
from .errors import (
    AuthenticationError,
    BackendUnavailable,
    FlowError,
    NexusFlowError,
    NotFoundError,
    PermissionDenied,
    RunStateError,
)
from .settings import Settings
from .workers import worker_count

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine, FlowLike

API = "nexusflow/api/"

EVENT_WAIT_S = 10.0
"""Longest a single event read waits at the service (a read asks for at most this)."""


class RemoteEngine:
    """Start, control and read runs through the Nexus-Flow service's REST API."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None
                 ) -> None:
        if not settings.service_url:
            raise NexusFlowError("RemoteEngine needs Settings.service_url (NEXUSFLOW_SERVICE_URL)")
        self.settings = settings
        self.configured = settings
        self.url = settings.service_url.rstrip("/") + "/"
        headers = {"Accept": "application/json"}
        if settings.service_token:
            headers["Authorization"] = f"token {settings.service_token}"
        self._client = httpx.Client(base_url=self.url + API, headers=headers,
                                    timeout=httpx.Timeout(30.0, connect=5.0),
                                    transport=transport)

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ transport
    def _call(self, method: str, path: str, *, body: Any = None,
              params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Send one request; return the JSON answer, or raise the error the status names."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._client.request(
                method, path, params=query or None,
                content=None if body is None else json.dumps(body, default=str),
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"the Nexus-Flow service at {self.url} does not answer ({exc}); check "
                "NEXUSFLOW_SERVICE_URL, or ask whoever runs the service") from None
        if resp.status_code >= 400:
            raise _error(resp, self.url)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise BackendUnavailable(f"the service at {self.url} answered {path} with something "
                                     "that is not JSON: is NEXUSFLOW_SERVICE_URL right?") from None

    # ------------------------------------------------------------------ engine methods
    def check(self) -> None:
        """Raise unless the service answers and accepts this token."""
        self._call("GET", "workers")

    def worker_count(self) -> int:
        """Return how many workers serve the queue (as the service sees them)."""
        return int(self._call("GET", "workers")["workers"])

    def start_run(self, flow: FlowLike | None = None, *, workflow_id: str | None = None,
                  version: int | None = None, inputs: Mapping[str, Any] | None = None,
                  trigger: str = "manual", actor: str | None = None,
                  source: str | None = None, dedupe_key: str | None = None,
                  key: str | None = None,
                  authorize: Callable[[Any], None] | None = None,
                  use_pins: bool = False, cache: bool = True, env: str | None = None) -> str:
        """Start a run at the service; return its id (``Engine.start_run``'s arguments).

        The flow compiles here first (a flow with errors never leaves this process). A flow
        from a file is filed under that file's workflow for this token's user, as locally.
        ``actor``, ``dedupe_key``, ``key`` and ``authorize`` are the service's to decide.
        """
        from .engine import _compiled, _file_source

        body: dict[str, Any] = {"inputs": dict(inputs or {}), "trigger": trigger}
        if use_pins:
            body["use_pins"] = True
        if not cache:
            body["cache"] = False
        if env is not None:
            body["env"] = env
        if flow is not None:
            compiled = _compiled(flow)
            source = source or _file_source(compiled)
            body["graph"] = {**compiled.document.data, "name": compiled.document.name}
            if source:
                body["source"] = source
                if os.path.isabs(source):
                    body["file"] = os.path.realpath(source)
            # The service has no files: send the sub-flows the flow calls by path too.
            from .runstate.subflows import local_subflow_files

            files = local_subflow_files(body["graph"], os.getcwd())
            if files:
                body["subflow_files"] = files
        elif workflow_id is not None:
            body["workflow_id"] = workflow_id
            if version is not None:
                body["version"] = version
        else:
            raise NotFoundError("start_run needs a flow or a workflow_id")
        return str(self._call("POST", "runs", body=body)["run_id"])

    def get_run(self, run_id: str, *, outputs: bool = True) -> dict[str, Any]:
        return dict(self._call("GET", f"runs/{_seg(run_id)}"))

    def list_runs(self, *, limit: int = 50, workflow_id: str | None = None,
                  source: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        answer = self._call("GET", "runs", params={"limit": limit, "workflow_id": workflow_id,
                                                   "source": source, "status": status})
        return list(answer["runs"])

    def report_waiting(self, run_id: str) -> list[dict[str, Any]]:
        """Return the run's queued nodes that no live worker serves, as ``Engine`` does (the
        service computes them and announces them to canvases itself)."""
        nodes = self.get_run(run_id, outputs=False)["nodes"]
        return [{"run": run_id, "node": node_id, "queue": wait.get("queue", "default"),
                 "message": wait.get("message", "")}
                for node_id, info in nodes.items()
                if isinstance(wait := info.get("waiting"), dict) and wait.get("kind") == "worker"]

    def node_attempts(self, run_id: str, node_id: str) -> list[dict[str, Any]]:
        answer = self._call("GET", f"runs/{_seg(run_id)}/nodes/{_seg(node_id)}/logs")
        return list(answer["attempts"])

    def cancel_run(self, run_id: str) -> None:
        self._call("POST", f"runs/{_seg(run_id)}/cancel")

    def retry_run(self, run_id: str, from_node: str | None = None) -> str:
        body = {"from_node": from_node} if from_node is not None else {}
        return str(self._call("POST", f"runs/{_seg(run_id)}/retry", body=body)["run_id"])

    def replay_run(self, run_id: str, *, actor: str | None = None) -> str:
        return str(self._call("POST", f"runs/{_seg(run_id)}/replay")["run_id"])

    def promote(self, workflow_id: str, version: int, env: str, *, actor: str | None = None,
                note: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Promote a version to an environment at the service (``Engine.promote``)."""
        body: dict[str, Any] = {"version": version, "env": env, "dry_run": dry_run}
        if note is not None:
            body["note"] = note
        return dict(self._call("POST", f"workflows/{_seg(workflow_id)}/promote", body=body))

    def promotions(self, workflow_id: str, env: str | None = None) -> dict[str, Any]:
        """Return the versions promoted to each environment and the history."""
        return dict(self._call("GET", f"workflows/{_seg(workflow_id)}/promotions",
                               params={"env": env}))

    def get_workflow(self, workflow_id: str, version: int | None = None) -> dict[str, Any]:
        return dict(self._call("GET", f"workflows/{_seg(workflow_id)}",
                               params={"version": version}))

    def list_workflows(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "workflows")["workflows"])

    def describe_flow(self, request: str, *, name: str | None = None) -> dict[str, Any]:
        """Ask the service's model for a flow (``Engine.describe_flow``); the service holds the
        endpoint and the key."""
        body = {"text": request, **({"name": name} if name else {})}
        return dict(self._call("POST", "describe", body=body, timeout=300.0))

    def read_events(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
                    count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Return a run's events after a stream id (the service waits up to ``block_ms``)."""
        wait_ms = max(0, min(int(block_ms or 0), int(EVENT_WAIT_S * 1000)))
        answer = self._call("GET", f"runs/{_seg(run_id)}/event-log",
                            params={"after": after, "block_ms": wait_ms, "count": count},
                            timeout=30.0 + wait_ms / 1000)
        return [(str(item["id"]), {k: v for k, v in item.items() if k != "id"})
                for item in answer["events"]]

    # ------------------------------------------------------------------ flow control
    def waiting_node(self, run_id: str, node_id: str) -> dict[str, Any]:
        """Return a node's state and what it waits for (``Engine.waiting_node``)."""
        node = self.get_run(run_id, outputs=False)["nodes"].get(node_id)
        if node is None:
            raise NotFoundError(f"run {run_id} has no node {node_id!r}")
        return {"state": node["state"], **(node.get("waiting") or {})}

    def decide(self, run_id: str, node_id: str, approved: bool, *, comment: str | None = None,
               actor: str | None = None, groups: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Approve or reject a waiting approval node as this token's user (the service
        decides who that is and whether they may)."""
        body: dict[str, Any] = {"approved": bool(approved)}
        if comment is not None:
            body["comment"] = comment
        answer = self._call("POST", f"runs/{_seg(run_id)}/nodes/{_seg(node_id)}/decision",
                            body=body)
        return dict(answer["decision"])

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"runs/{_seg(run_id)}/children")["children"])

    def map_items(self, run_id: str, node_id: str, *, offset: int = 0, limit: int = 50,
                  state: str | None = None) -> dict[str, Any]:
        """Return one page of a map node's items (``Engine.map_items``)."""
        answer = self._call("GET", f"runs/{_seg(run_id)}/nodes/{_seg(node_id)}/items",
                            params={"offset": offset, "limit": limit, "state": state})
        return {k: answer[k] for k in ("total", "counts", "offset", "items") if k in answer}

    def map_item(self, run_id: str, node_id: str, index: int) -> dict[str, Any]:
        """Return one item of a map node with its log and attempts (``Engine.map_item``)."""
        answer = self._call("GET", f"runs/{_seg(run_id)}/nodes/{_seg(node_id)}/items/"
                            f"{int(index)}")
        return {k: v for k, v in answer.items() if k not in ("run_id", "node_id")}

    def list_pools(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "pools")["pools"])

    def get_pool(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"pools/{_seg(name)}"))

    def set_pool(self, name: str, size: int, *, description: str | None = None,
                 actor: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"size": size}
        if description is not None:
            body["description"] = description
        return dict(self._call("PUT", f"pools/{_seg(name)}", body=body))

    def delete_pool(self, name: str) -> None:
        self._call("DELETE", f"pools/{_seg(name)}")

    @property
    def secrets(self) -> RemoteSecrets:
        """The secrets as the service lets this token's user see and change them."""
        return RemoteSecrets(self)

    @property
    def environments(self) -> RemoteEnvs:
        """The environments as the service lets this token's user see and change them."""
        return RemoteEnvs(self)

    @property
    def connections(self) -> RemoteConnections:
        """The connections as the service lets this token's user see and change them."""
        return RemoteConnections(self)

    # ------------------------------------------------------------------ the debug loop
    def node_context(self, run_id: str, node_id: str) -> dict[str, Any]:
        """Return what a node of a run saw, as recorded (``Engine.node_context``)."""
        return dict(self._call("GET", f"runs/{_seg(run_id)}/nodes/{_seg(node_id)}/context"))

    def retry_updated(self, run_id: str, flow: FlowLike | None = None, *,
                      from_node: str | None = None, actor: str | None = None,
                      authorize: Callable[[Any], None] | None = None,
                      subflow_scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume a finished run with the flow's current version (``Engine.retry_updated``);
        ``actor``, ``authorize`` and ``subflow_scope`` are the service's to decide."""
        body: dict[str, Any] = {"update": True}
        if from_node is not None:
            body["from_node"] = from_node
        if flow is not None:
            body.update(self._flow_body(flow))
        return dict(self._call("POST", f"runs/{_seg(run_id)}/retry", body=body))

    def start_test(self, node: Mapping[str, Any], *, inputs: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None,
                   flow: Mapping[str, Any] | None = None, workflow_id: str | None = None,
                   key: str | None = None, source: str | None = None,
                   from_run: str | None = None, actor: str | None = None,
                   env: str | None = None) -> str:
        """Queue a one-node test at the service; return its id (``Engine.start_test``). The
        flow is filed by its file (``source``) or name at the service, not by ``key``."""
        body: dict[str, Any] = {"node_id": node.get("id"), "node": dict(node), "wait_s": 0}
        for name, value in (("inputs", inputs), ("params", params), ("run_id", from_run),
                            ("env", env),
                            ("workflow_id", workflow_id if flow is None else None)):
            if value is not None:
                body[name] = dict(value) if isinstance(value, Mapping) else value
        if flow is not None:
            body.update(self._flow_body(flow, source=source))
        return str(self._call("POST", "tests", body=body)["test_id"])

    def get_test(self, test_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"tests/{_seg(test_id)}"))

    def wait_test(self, test_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Poll a test until it is over, at most ``timeout`` seconds; return it as it is."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            test = self.get_test(test_id)
            if test["status"] in ("succeeded", "failed") or time.monotonic() >= deadline:
                return test
            time.sleep(min(0.3, max(0.0, deadline - time.monotonic())))

    @staticmethod
    def _flow_body(flow: Any, source: str | None = None) -> dict[str, Any]:
        """Return the request fields that send a flow whole (``graph``, ``source``, ``file``)."""
        from .engine import _compiled, _file_source

        compiled = _compiled(flow)
        source = source or _file_source(compiled)
        body: dict[str, Any] = {"graph": {**compiled.document.data,
                                          "name": compiled.document.name}}
        if source:
            body["source"] = source
            if os.path.isabs(source):
                body["file"] = os.path.realpath(source)
        return body

    def __repr__(self) -> str:
        return f"<RemoteEngine {self.url}>"


class RemoteSecrets:
    """``SecretStore``'s write-only part (set, list, delete) through the service's API."""

    def __init__(self, engine: RemoteEngine) -> None:
        self._engine = engine

    def set(self, name: str, value: str, *, actor: str | None = None,
            groups: Any = None, env: str = "") -> None:
        body: dict[str, Any] = {"value": value}
        if groups is not None:
            body["groups"] = list(groups)
        self._engine._call("PUT", f"secrets/{_seg(name)}", body=body,
                           params={"env": env or None})

    def list(self, *, env: str | None = None) -> list[dict[str, Any]]:
        return list(self._engine._call("GET", "secrets", params={"env": env})["secrets"])

    def delete(self, name: str, env: str = "") -> None:
        self._engine._call("DELETE", f"secrets/{_seg(name)}", params={"env": env or None})


class RemoteEnvs:
    """``EnvStore`` (environments, variables, roles) through the service's API."""

    def __init__(self, engine: RemoteEngine) -> None:
        self._engine = engine

    def list(self) -> list[dict[str, Any]]:
        return list(self._engine._call("GET", "envs")["environments"])

    def get(self, name: str) -> dict[str, Any]:
        return dict(self._engine._call("GET", f"envs/{_seg(name)}"))

    def create(self, name: str, *, description: str | None = None, restricted: bool = True,
               actor: str | None = None) -> dict[str, Any]:
        return dict(self._engine._call("POST", "envs", body={
            "name": name, "description": description, "restricted": restricted}))

    def delete(self, name: str) -> None:
        self._engine._call("DELETE", f"envs/{_seg(name)}")

    def set_var(self, env: str, name: str, value: Any) -> None:
        self._engine._call("PUT", f"envs/{_seg(env)}/vars/{_seg(name)}", body={"value": value})

    def unset_var(self, env: str, name: str) -> None:
        self._engine._call("DELETE", f"envs/{_seg(env)}/vars/{_seg(name)}")

    def grant(self, env: str, principal: str, role: str, *, actor: str | None = None) -> None:
        self._engine._call("PUT", f"envs/{_seg(env)}/roles/{_seg(principal)}",
                           body={"role": role})

    def revoke(self, env: str, principal: str) -> None:
        self._engine._call("DELETE", f"envs/{_seg(env)}/roles/{_seg(principal)}")


class RemoteConnections:
    """``ConnectionStore``'s metadata side (add, list, test, remove) through the service."""

    def __init__(self, engine: RemoteEngine) -> None:
        self._engine = engine

    def add(self, name: str, *, env: str = "", actor: str | None = None,
            **fields: Any) -> dict[str, Any]:
        body = {k: v for k, v in fields.items() if v is not None}
        if "groups" in body:
            body["groups"] = list(body["groups"])
        return dict(self._engine._call("PUT", f"connections/{_seg(name)}", body=body,
                                       params={"env": env or None}))

    def list(self, *, env: str | None = None) -> list[dict[str, Any]]:
        return list(self._engine._call("GET", "connections",
                                       params={"env": env or None})["connections"])

    def test(self, name: str, env: str = "") -> dict[str, Any]:
        return dict(self._engine._call("POST", f"connections/{_seg(name)}/test",
                                       params={"env": env or None}))

    def remove(self, name: str, env: str = "") -> None:
        self._engine._call("DELETE", f"connections/{_seg(name)}", params={"env": env or None})


def _seg(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


_FLOW_ERRORS = {name: getattr(errors, name) for name in (
    "FlowSyntaxError", "FlowSchemaError", "FlowLimitError", "DuplicateIdError",
    "DanglingEdgeError", "UnknownNodeTypeError", "NodeConfigError", "DescribeError")}


def _error(resp: httpx.Response, url: str) -> NexusFlowError:
    """Return the error an answer of the service stands for (its message kept whole)."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or resp.reason_phrase or resp.status_code)
    status = resp.status_code
    if status == 401:
        return AuthenticationError(
            f"the Nexus-Flow service at {url} refused the token: {message} (on a JupyterHub "
            "the kernel's JUPYTERHUB_API_TOKEN is used; else set NEXUSFLOW_SERVICE_TOKEN)")
    if status == 403:
        return PermissionDenied(message)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return RunStateError(message)
    if status == 422:
        kind = _FLOW_ERRORS.get(str(body.get("error")), FlowError)
        return kind(message, str(body.get("pointer") or ""))
    if status in (502, 503, 504):
        return BackendUnavailable(f"the Nexus-Flow service at {url}: {message}")
    return NexusFlowError(message)


def open_engine(settings: Settings | None = None) -> Engine | RemoteEngine:
    """Return the engine for ``settings``: the service's client when ``service_url`` is set,
    else the local engine (which opens, or starts, the backends)."""
    settings = settings or Settings.from_env()
    if settings.service_url:
        return RemoteEngine(settings)
    from .engine import Engine

    return Engine(settings)


def live_workers(engine: Engine | RemoteEngine) -> int:
    """Return how many workers serve ``engine``'s queue."""
    if isinstance(engine, RemoteEngine):
        return engine.worker_count()
    return worker_count(engine.settings, redis=engine.redis)


def local_workers_allowed(engine: Engine | RemoteEngine, what: str) -> None:
    """Raise when ``what`` (starting local workers) cannot work: workers need the backends'
    credentials, which only the service and its workers hold."""
    if isinstance(engine, RemoteEngine):
        raise NexusFlowError(
            f"{what}: this process reaches runs through the Nexus-Flow service "
            f"({engine.url}) and holds no database or Redis credentials; the service's workers "
            "run the flow")


__all__ = ["RemoteConnections", "RemoteEngine", "RemoteEnvs", "RemoteSecrets", "live_workers",
           "local_workers_allowed", "open_engine"]

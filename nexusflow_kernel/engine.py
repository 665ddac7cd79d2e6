"""The engine facade: what the CLI, the server extension and notebooks call.

``Engine`` stores workflows as immutable versions, starts runs (nothing is stored or queued
for a flow that does not compile), controls them (cancel, retry, replay) and reads them back.
It is synchronous and thread-safe.
"""

from __future__ import annotations

import difflib
import getpass
import json
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rq.command import send_stop_job_command

from .debugging import DebugLoop
from .environments import EnvStore
from .errors import (
    BackendUnavailable,
    FlowError,
    NexusFlowError,
    NodeConfigError,
    NotFoundError,
)
from .masking import NO_MASKER, Masker, RunSecrets
from .model.compiler import CompiledFlow, check_param_values, compile_flow
from .model.document import FlowInput, dumps_canonical, load_document, read_flow
from .runstate.db import get_pool, jsonb, run_tx, with_retry
from .runstate.store import Binding, RunStore
from .runstate.transitions import Effects
from .services import resolve_backends
from .settings import Settings
from .transport import presence
from .transport.broker import ALL_EVENTS_KEY, Broker, check_redis, event, events_key
from .transport.presence import WorkerInfo

logger = logging.getLogger(__name__)

FlowLike = CompiledFlow | FlowInput
"""What the engine takes as a flow: compiled already, or anything :func:`read_flow` reads."""


def _compiled(flow: FlowLike) -> CompiledFlow:
    return flow if isinstance(flow, CompiledFlow) else compile_flow(read_flow(flow))


def _file_source(compiled: CompiledFlow) -> str | None:
    source = compiled.document.source
    return str(Path(source).resolve()) if source else None


def local_owner() -> str:
    """Return whose files this process sees: the Hub user (``JUPYTERHUB_USER``), else the OS user.

    On a JupyterHub every user has their own server and root folder (often the same path,
    ``/home/jovyan``, for everyone), so a file's path alone does not say whose file it is.
    """
    hub_user = os.environ.get("JUPYTERHUB_USER")
    if hub_user:
        return hub_user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid-{os.getuid()}"


def workflow_key(kind: str, what: str, owner: str) -> str:
    """Return the key an ad-hoc flow is filed under: ``file`` (a path) or ``name``, per owner.

    The owner is part of the key, so two users' files at the same path (or two users' flows of
    the same name) are two workflows; deleting a workflow releases its key.
    """
    from urllib.parse import quote

    return f"{kind}:{quote(owner, safe='')}:{what}"


def file_workflow_key(path: str | Path, owner: str | None = None) -> str:
    """Return the key of the flow file at ``path`` (absolute, symlinks resolved) for ``owner``."""
    return workflow_key("file", os.path.realpath(path), owner or local_owner())


PIN_TRIGGERS = frozenset({"manual", "notebook"})
"""The only triggers whose runs may use pinned outputs (started by hand, to try a flow)."""


class Engine(DebugLoop):
    """Start, control and read runs; store workflows and their versions; the debug loop
    (``debugging.py``: a node's recorded context, resuming with a fix, one-node tests)."""

    def __init__(self, settings: Settings | None = None) -> None:
        configured = settings or Settings.from_env()
        self.configured = configured
        """The settings as given, before the embedded services filled the URLs in."""
        self.settings = resolve_backends(configured)
        try:
            self.pool = get_pool(self.settings.database_url)  # type: ignore[arg-type]
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{exc}; {backend_advice(configured, 'postgres')}"
                                     ) from exc
        self.store = RunStore(self.pool)
        self.broker = Broker(self.settings)
        self.redis = self.broker.redis
        self._run_secrets: RunSecrets | None = None

    def close(self) -> None:
        """Do nothing: the pool and Redis client are shared by the process (closed at exit)."""

    @property
    def environments(self) -> EnvStore:
        """The environments, their variables, roles and promotions (``environments.py``)."""
        return EnvStore(self.pool)

    def check(self) -> None:
        """Raise ``BackendUnavailable`` when Redis does not answer (PostgreSQL is checked on
        connect), saying what to do."""
        try:
            check_redis(self.redis, self.settings.redis_url or "")
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{exc}; {backend_advice(self.configured, 'redis')}"
                                     ) from exc

    def _publish(self, effects: Effects) -> None:
        try:
            self.broker.publish(effects.pushes, effects.events)
        except NexusFlowError:
            pass  # committed in PostgreSQL: the reconciler pushes it when Redis is back

    # ------------------------------------------------------------------ workflows
    def save_workflow(self, doc: FlowLike, *, workflow_id: str | None = None,
                      name: str | None = None, actor: str | None = None) -> dict[str, Any]:
        """Store a flow as a new immutable version (none when it equals the latest)."""
        compiled = _compiled(doc)
        wid, version, _created = run_tx(
            self.pool, lambda conn: self.store.save_version(
                conn, compiled, workflow_id=workflow_id, name=name, actor=actor))
        return self._version_row(wid, version)

    def _version_row(self, workflow_id: str, version: int) -> dict[str, Any]:
        rows = self._versions(workflow_id, version)
        return rows[0]

    def _versions(self, workflow_id: str, version: int | None = None,
                  graph: bool = False) -> list[dict[str, Any]]:
        _check_uuid(workflow_id, "workflow")
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT v.workflow_id, v.name, v.version, v.content_hash, v.created_at,"
                " v.created_by" + (", v.graph_json" if graph else "") +
                " FROM workflow_versions v JOIN workflows w ON w.id=v.workflow_id"
                " WHERE v.workflow_id=%s AND w.deleted_at IS NULL"
                + (" AND v.version=%s" if version is not None else "") +
                " ORDER BY v.version DESC",
                (workflow_id, version) if version is not None else (workflow_id,),
            ).fetchall()
        if not rows:
            what = f"version {version} of workflow" if version is not None else "workflow"
            raise NotFoundError(f"no {what} {workflow_id}")
        out = []
        for r in rows:
            item = {"workflow_id": str(r["workflow_id"]), "name": r["name"],
                    "version": r["version"], "hash": r["content_hash"],
                    "created_at": r["created_at"].isoformat(), "created_by": r["created_by"]}
            if graph:
                item["graph"] = r["graph_json"]
            out.append(item)
        return out

    def list_workflows(self) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (w.id) w.id, v.name, v.version, v.content_hash,"
                " w.created_at, w.created_by, v.created_at AS updated_at FROM workflows w"
                " JOIN workflow_versions v ON v.workflow_id=w.id WHERE w.deleted_at IS NULL"
                " ORDER BY w.id, v.version DESC").fetchall()
        return sorted(({"workflow_id": str(r["id"]), "name": r["name"], "version": r["version"],
                        "hash": r["content_hash"], "created_at": r["created_at"].isoformat(),
                        "updated_at": r["updated_at"].isoformat(), "created_by": r["created_by"]}
                       for r in rows), key=lambda r: r["updated_at"], reverse=True)

    def get_workflow(self, workflow_id: str, version: int | None = None) -> dict[str, Any]:
        return self._versions(workflow_id, version, graph=True)[0]

    def list_versions(self, workflow_id: str) -> list[dict[str, Any]]:
        return self._versions(workflow_id)

    def diff_versions(self, workflow_id: str, a: int, b: int) -> str:
        """Return a unified diff of two versions' canonical documents."""
        old, new = (self.get_workflow(workflow_id, v)["graph"] for v in (a, b))
        return "".join(difflib.unified_diff(
            dumps_canonical(old).splitlines(True), dumps_canonical(new).splitlines(True),
            f"v{a}", f"v{b}"))

    def rollback_workflow(self, workflow_id: str, version: int, *,
                          actor: str | None = None) -> dict[str, Any]:
        """Make an old version current again (as a new version with the same graph)."""
        graph = self.get_workflow(workflow_id, version)["graph"]
        compiled = compile_flow(load_document(graph))
        wid, new_version, _created = run_tx(self.pool, lambda conn: self.store.save_version(
            conn, compiled, workflow_id=workflow_id, actor=actor))
        return self._version_row(wid, new_version)

    def _version_for(self, conn: Any, workflow_id: str, env: str | None) -> int:
        """Return the version a start of ``workflow_id`` without a version runs: the one
        promoted to ``env``, else (in ``dev`` or with no environment) the latest."""
        if env is not None:
            promoted = self.environments.promoted_version(conn, workflow_id, env)
            if promoted is not None:
                return promoted
            if env != "dev":
                from .environments import EnvironmentError

                raise EnvironmentError(
                    f"no version of workflow {workflow_id} is promoted to {env!r}: promote one "
                    f"first (`nexusflow promote {workflow_id} --version N --env {env}`)")
        row = conn.execute("SELECT max(v.version) AS v FROM workflow_versions v"
                           " JOIN workflows w ON w.id = v.workflow_id"
                           " WHERE v.workflow_id=%s AND w.deleted_at IS NULL",
                           (workflow_id,)).fetchone()
        if row is None or row["v"] is None:
            raise NotFoundError(f"no workflow {workflow_id}")
        return int(row["v"])

    def version_to_run(self, workflow_id: str, env: str | None = None) -> int:
        """Return the version a run of ``workflow_id`` in ``env`` runs when none is given."""
        _check_uuid(workflow_id, "workflow")
        with self.pool.connection() as conn:
            return self._version_for(conn, workflow_id, env)

    # ------------------------------------------------------------------ promotion
    def promote(self, workflow_id: str, version: int, env: str, *, actor: str | None = None,
                note: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Promote version ``version`` of a workflow to environment ``env``: its triggers of
        that environment run it from now on (a rollback is the promotion of an earlier one).

        Refused, with one error, when the environment is unknown, the version does not
        compile (``FlowError`` naming the pointer), or the environment lacks a variable,
        secret or connection it names. Returns what changes (``from_version``, ``nodes``,
        ``edges``, ``text``: a unified diff); ``dry_run`` records nothing.
        """
        from .environments import EnvironmentError, graph_changes

        _check_uuid(workflow_id, "workflow")
        envs = self.environments
        envs.get(env)
        target = self.get_workflow(workflow_id, version)
        try:
            compile_flow(load_document(target["graph"]))
        except FlowError as exc:
            raise FlowError(
                f"version {version} of workflow {workflow_id} does not compile, so it cannot "
                f"be promoted to {env!r}: {exc.message}", exc.pointer,
                source=f"workflow {target.get('name') or workflow_id} v{version}") from None

        def tx(conn: Any) -> dict[str, Any]:
            # Promotions of a workflow take turns (the history's "previous" stays true).
            if conn.execute("SELECT 1 FROM workflows WHERE id = %s AND deleted_at IS NULL"
                            " FOR UPDATE", (workflow_id,)).fetchone() is None:
                raise NotFoundError(f"no workflow {workflow_id}")
            missing = envs.missing_for(conn, env, self.store.plan_for(conn, workflow_id,
                                                                      version))
            if missing:
                raise EnvironmentError(f"version {version} cannot be promoted to {env!r}: "
                                       + "; ".join(missing))
            current = envs.promoted_version(conn, workflow_id, env)
            old = None if current is None else self.get_workflow(workflow_id, current)["graph"]
            out: dict[str, Any] = {
                "workflow_id": workflow_id, "env": env, "version": version,
                "from_version": current, "unchanged": current == version,
                "dry_run": dry_run, **graph_changes(old, target["graph"]),
                "text": "" if old is None else "".join(difflib.unified_diff(
                    dumps_canonical(old).splitlines(True),
                    dumps_canonical(target["graph"]).splitlines(True),
                    f"{env}: v{current}", f"v{version}")),
            }
            if not dry_run and current != version:
                out["promotion"] = envs.record_promotion(conn, workflow_id, env, version,
                                                         current, actor, note)
            return out

        return run_tx(self.pool, tx)

    def promotions(self, workflow_id: str, env: str | None = None) -> dict[str, Any]:
        """Return the versions promoted to each environment and the promotion history."""
        _check_uuid(workflow_id, "workflow")
        self.get_workflow(workflow_id)
        envs = self.environments
        return {"workflow_id": workflow_id, "current": envs.current_promotions(workflow_id),
                "history": envs.promotions(workflow_id, env)}

    def delete_workflow(self, workflow_id: str) -> None:
        _check_uuid(workflow_id, "workflow")
        with self.pool.connection() as conn, conn.transaction():
            # The key is released: the next run of that file (or name) files a new workflow,
            # never this one with its versions and runs.
            row = conn.execute("UPDATE workflows SET deleted_at=now(), key=NULL WHERE id=%s"
                               " AND deleted_at IS NULL RETURNING id", (workflow_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no workflow {workflow_id}")

    # ------------------------------------------------------------------ runs
    def start_run(self, flow: FlowLike | None = None, *, workflow_id: str | None = None,
                  version: int | None = None, inputs: Mapping[str, Any] | None = None,
                  trigger: str = "manual", actor: str | None = None,
                  source: str | None = None, dedupe_key: str | None = None,
                  key: str | None = None,
                  authorize: Callable[[Binding], None] | None = None,
                  base_dir: str | None = None, base_name: str | None = None,
                  file_key: Callable[[str], str] | None = None,
                  files: Mapping[str, tuple[str, Any]] | None = None,
                  use_pins: bool = False, cache: bool = True, env: str | None = None) -> str:
        """Compile, store and start a run; return its id. Nothing is stored if it fails.

        ``env``: the environment the run runs in (``environments.py``): it must exist and
        hold every variable, secret and connection the flow names, else nothing starts and
        the error names what is missing. ``None``: ``dev``, unchecked.

        ``dedupe_key`` makes the start idempotent: the same key returns the same run.
        ``use_pins``: nodes with a pinned output give it instead of running (runs started by
        hand only, never by a trigger). ``cache=False``: no node is served from the cache.

        A ``flow`` without ``workflow_id`` is filed under ``key``: by default the file it came
        from (``source``) or its name, for this process's user (:func:`local_owner`). The
        server passes the key of the file in its own root and an ``authorize`` callback that
        checks the caller's role on the workflow found (see ``RunStore.save_version``).

        The flows the run's sub-flow nodes and ``on_failure`` name are resolved, checked and
        pinned in the same transaction (``runstate/subflows.py``): paths are relative to
        ``base_dir`` (default: the working directory; the server passes its root) and filed
        with ``file_key`` (default: this process's user) under the same ``authorize``;
        ``files`` (relative path -> (real path, document)) stands in for a folder this process
        does not have.
        """
        inputs = dict(inputs or {})
        json.dumps(inputs)  # inputs must be JSON: fail here, before anything is stored
        if use_pins and trigger not in PIN_TRIGGERS:
            raise NexusFlowError(f"a {trigger} run never uses pinned outputs: pins are for "
                                 "runs started by hand")
        options = {k: v for k, v in (("use_pins", use_pins), ("cache", cache))
                   if v != (k == "cache")}
        compiled: CompiledFlow | None = None
        if flow is not None:
            compiled = _compiled(flow)
            source = source or _file_source(compiled)
            _apply_param_defaults(compiled, inputs)
            check_param_values(compiled.document.params, inputs)
        elif workflow_id is None:
            raise NotFoundError("start_run needs a flow or a workflow_id")

        def tx(conn: Any) -> tuple[str, Effects]:
            wid, ver = workflow_id, version
            if compiled is not None:
                filed = None if workflow_id else key or (
                    file_workflow_key(source) if source and os.path.isabs(source)
                    else workflow_key("name", compiled.document.name, local_owner()))
                wid, ver, _ = self.store.save_version(
                    conn, compiled, workflow_id=workflow_id, key=filed, actor=actor,
                    authorize=authorize)
            elif ver is None:
                _check_uuid(wid, "workflow")
                ver = self._version_for(conn, str(wid), env)
            else:
                _check_uuid(wid, "workflow")
            assert wid is not None and ver is not None  # given, stored or looked up above
            plan = self.store.plan_for(conn, wid, ver)
            if compiled is None:  # a stored version: its params' enums, checked here
                check_param_values(plan.document.get("params") or {}, inputs)
            env_name, env_vars = self.environments.for_run(
                conn, env, plan, local_connections=self.settings.connections)
            pins = self._pin_subflows(conn, wid, ver, source, actor=actor, authorize=authorize,
                                      base_dir=base_dir, base_name=base_name,
                                      file_key=file_key, files=files)
            run_id, effects = self.store.create_run(conn, wid, ver, inputs, trigger=trigger,
                                                    source=source, actor=actor,
                                                    dedupe_key=dedupe_key, subflows=pins,
                                                    env=env_name, env_vars=env_vars)
            if options:  # a run made by this transaction (not one found by its dedupe key)
                conn.execute("UPDATE executions SET options=%s WHERE id=%s"
                             " AND created_at = now()", (jsonb(options), run_id))
            return run_id, effects

        run_id, effects = with_retry(lambda: run_tx(self.pool, tx), what="start the run",
                                     deadline_s=15)
        self._publish(effects)
        return run_id

    def _pin_subflows(self, conn: Any, workflow_id: str, version: int, source: str | None, *,
                      actor: str | None, authorize: Callable[[Binding], None] | None,
                      base_dir: str | None, base_name: str | None,
                      file_key: Callable[[str], str] | None,
                      files: Mapping[str, tuple[str, Any]] | None = None) -> dict[str, Any]:
        """Resolve and pin what a version's nodes and ``on_failure`` call (nothing to do,
        and no query, for a flow that calls nothing)."""
        from .nodes import get_node_type
        from .runstate.subflows import SubflowScope, resolve_subflows

        plan = self.store.plan_for(conn, workflow_id, version)
        if plan.document.get("on_failure") is None and not any(
                (t := get_node_type(n.type)) is not None and t.subflow_key
                and n.config.get(t.subflow_key) is not None for n in plan.nodes.values()):
            return {}
        scope = SubflowScope(
            base_dir=base_dir or os.getcwd(),
            base_name=base_name or ("the working directory" if base_dir is None
                                    else "the server's root folder"),
            file_key=file_key or file_workflow_key, actor=actor, authorize=authorize,
            files=files)
        name = plan.document.get("name") or "flow"
        idents = [f"workflow:{workflow_id}"]
        if source:
            real = os.path.realpath(source if os.path.isabs(source)
                                    else os.path.join(scope.base_dir, source))
            name = os.path.basename(real)
            idents.append(f"file:{real}")
        try:
            return resolve_subflows(self.store, conn, plan, scope,
                                    identities=[(tuple(idents), name)])
        except NodeConfigError as exc:
            if exc.source is None and source:  # name the flow being started, as compile does
                raise NodeConfigError(exc.message, exc.pointer, source=source) from exc
            raise

    def workflow_for_key(self, key: str) -> str | None:
        """Return the live workflow filed under ``key`` (see :func:`workflow_key`), or ``None``."""
        return self.store.workflow_for_key(key)

    def get_run(self, run_id: str, *, outputs: bool = True) -> dict[str, Any]:
        """Return a run with its nodes; a queued node that no live worker can take (nobody
        serves its queue) says so in ``waiting``: ``{"kind": "worker", "queue", "message"}``,
        the message saying what to start (a node in state ``waiting`` says what it waits for
        the same way)."""
        run = self.store.get_run(run_id, outputs=outputs)
        self._add_item_counts(run)
        run = self._masker(run_id, run).value(run)
        if run["status"] == "running" and any(
                n["state"] == "queued" for n in run["nodes"].values()):
            for item in self.waiting(run_id):
                run["nodes"][item["node"]]["waiting"] = _worker_wait(item)
        return run

    # ------------------------------------------------------------------ waiting nodes
    def waiting(self, run_id: str | None = None, *,
                live: list[WorkerInfo] | None = None) -> list[dict[str, Any]]:
        """Return the queued nodes (of ``run_id``, or of every running run) that no live
        worker serves: ``{"run", "node", "idx", "attempt", "queue", "message"}`` each."""
        if live is None:
            try:
                live = presence.live_workers(self.redis)
            except Exception:  # Redis away: say nothing rather than something wrong
                logger.debug("cannot read the live workers", exc_info=True)
                return []
        served = {q for w in live for q in w.queues}
        unserved = [q for q in presence.QUEUES if q not in served]
        if not unserved:
            return []
        # A plugin type's own queue name goes through the default queue (Broker.queue_for).
        lane = "CASE WHEN n.queue = 'sandbox' THEN 'sandbox' ELSE 'default' END"
        sql = (f"SELECT n.execution_id::text AS run_id, n.node_id, n.idx, n.attempt, {lane}"
               " AS lane FROM node_runs n")
        if run_id is not None:
            _check_uuid(run_id, "run")
            sql += f" WHERE n.execution_id = %s AND n.state = 'queued' AND {lane} = ANY(%s)"
            args: tuple[Any, ...] = (run_id, unserved)
        else:
            sql += (" JOIN executions e ON e.id = n.execution_id WHERE n.state = 'queued'"
                    f" AND e.status = 'running' AND {lane} = ANY(%s)")
            args = (unserved,)
        with self.pool.connection() as conn:
            rows = conn.execute(sql + " ORDER BY n.execution_id, n.idx LIMIT 1000", args
                                ).fetchall()
        return [{"run": r["run_id"], "node": r["node_id"], "idx": r["idx"],
                 "attempt": r["attempt"], "queue": r["lane"],
                 "message": presence.no_worker_message(r["lane"])} for r in rows]

    def report_waiting(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Append a ``waiting`` event, once per node attempt, for each queued node that no live
        worker serves (of ``run_id``, or of every running run); return every such node.

        The event is ``{"run", "node", "state": "queued", "attempt", "at", "waiting":
        {"kind": "worker", "queue": "sandbox", "message": "waiting: no live worker serves
        queue 'sandbox' (start ...)"}}``: canvases, the CLI and notebooks show the message
        until the node's next event.
        """
        items = self.waiting(run_id)
        if not items:
            return items
        pipe = self.redis.pipeline(transaction=False)
        for item in items:
            pipe.set(f"{events_key(item['run'])}:waiting:{item['idx']}:{item['attempt']}",
                     item["queue"], nx=True, ex=24 * 3600)
        fresh = [item for item, new in zip(items, pipe.execute(), strict=True) if new]
        events = []
        for item in fresh:
            ev = event(item["run"], item["node"], "queued", item["attempt"])
            ev["waiting"] = _worker_wait(item)
            events.append(ev)
        if events:
            self.broker.publish(events=events)
        return items

    def _add_item_counts(self, run: dict[str, Any]) -> None:
        """Give each map node of ``run`` its item counts (``items``: total, done, failed...)."""
        plan = self.store.plans.get((str(run["workflow_id"]), int(run["version"])))
        if plan is None:
            with self.pool.connection() as conn:
                plan = self.store.plan_for(conn, run["workflow_id"], run["version"])
        if not any(n.type == "map" for n in plan.nodes.values()):
            return
        for idx, counts in self.store.map_progress(run["run_id"]).items():
            node = run["nodes"].get(plan.order[idx])
            if node is not None:
                node["items"] = counts

    def map_items(self, run_id: str, node_id: str, *, offset: int = 0, limit: int = 50,
                  state: str | None = None) -> dict[str, Any]:
        """Return one page of a map node's items: ``{total, counts, offset, items}``, each item
        ``{index, state, attempts, item, output, error, worker, duration_ms, started_at,
        ended_at}`` (secrets masked); ``state`` keeps only the items in that state."""
        idx = self._map_idx(run_id, node_id)
        page = self.store.map_items(run_id, idx, offset=max(0, int(offset)),
                                    limit=max(1, min(int(limit), 1000)), state=state)
        return self._masker(run_id).value(page)

    def map_item(self, run_id: str, node_id: str, index: int) -> dict[str, Any]:
        """Return one item of a map node with its log and every attempt (secrets masked)."""
        idx = self._map_idx(run_id, node_id)
        found = self.store.map_item_attempts(run_id, idx, int(index))
        if found is None:
            raise NotFoundError(f"map {node_id!r} of run {run_id} has no item {index}")
        return self._masker(run_id).value(found)

    def _map_idx(self, run_id: str, node_id: str) -> int:
        with self.pool.connection() as conn:
            head = self.store.run_header(conn, run_id)
            plan = self.store.plan_for(conn, head["workflow_id"], head["version"])
        if node_id not in plan.idx_of:
            raise NotFoundError(f"run {run_id} has no node {node_id!r}")
        if plan.nodes[node_id].type != "map":
            raise NotFoundError(f"node {node_id!r} of run {run_id} is a "
                                f"{plan.nodes[node_id].type} node, not a map: it has no items")
        return plan.idx_of[node_id]

    def _masker(self, run_id: str, head: Mapping[str, Any] | None = None) -> Masker:
        """Return the masker of a run (``head``: its header, when already read).

        Reads go through the same masking as the record, which workers already masked: this
        also covers records made before that (or by an older worker).
        """
        plan = None if head is None else self.store.plans.get(
            (str(head["workflow_id"]), int(head["version"])))
        if plan is None:
            with self.pool.connection() as conn:
                if head is None:
                    head = self.store.run_header(conn, run_id)
                plan = self.store.plan_for(conn, head["workflow_id"], head["version"])
        names = plan.secret_names
        if not names:
            return NO_MASKER
        if self._run_secrets is None:
            from .connections import run_values
            from .secrets import SecretStore

            self._run_secrets = RunSecrets(run_values(SecretStore(self.pool,
                                                                  settings=self.settings)))
        return self._run_secrets.masker(str(run_id), names)

    def list_runs(self, *, limit: int = 50, workflow_id: str | None = None,
                  source: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        if workflow_id is not None:
            _check_uuid(workflow_id, "workflow")
        return self.store.list_runs(limit=limit, workflow_id=workflow_id, source=source,
                                    status=status)

    def node_attempts(self, run_id: str, node_id: str) -> list[dict[str, Any]]:
        """Return the node's attempts, the running one last with its log so far."""
        attempts = self.store.node_attempts(run_id, node_id)
        running = self._running_attempt(run_id, node_id, attempts)
        if running is not None:
            attempts.append(running)
        if not attempts:
            return attempts
        masker = self._masker(run_id)
        return [masker.value(a) if masker else a for a in attempts]

    def _running_attempt(self, run_id: str, node_id: str,
                         recorded: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Return the attempt still running, from the log its worker keeps in Redis (none
        once the attempt is recorded, or when Redis does not answer: the record is the truth)."""
        try:
            live = self.broker.live_log(str(run_id), node_id)
        except Exception as exc:  # the log so far is a courtesy, never a reason to fail a read
            logger.debug("no live log of %s in run %s: %s", node_id, run_id, exc)
            return None
        if live is None or not isinstance(live.get("attempt"), int):
            return None
        if any(a.get("attempt") == live["attempt"] for a in recorded):
            return None
        return {"attempt": live["attempt"], "status": "running", "input": None, "output": None,
                "error": None, "log": str(live.get("log") or ""), "worker": None,
                "duration_ms": None, "started_at": None, "ended_at": None}

    def describe_flow(self, request: str, *, name: str | None = None) -> dict[str, Any]:
        """Ask the configured model (``ai_base_url``, ``ai_model``, ``ai_key_secret``) for a
        flow that does what ``request`` says; return the proposal ``{"flow", "model", "usage",
        "attempts", "faults"}``. Nothing is saved or run (docs/ai.md)."""
        from .describe import configured_model, describe_flow
        from .secrets import SecretStore

        secrets = SecretStore(self.pool, settings=self.settings)
        model = configured_model(self.settings, secret=secrets.get)
        return describe_flow(request, model, name=name).to_dict()

    def cancel_run(self, run_id: str) -> None:
        """Cancel a run: nothing new starts; running nodes stop at once.

        RQ's stop-job command goes to the worker of each running node: a forking worker
        kills the work-horse, a simple worker's lease keeper checks the run now. Should the
        command be lost, the next heartbeat sees the cancel anyway.
        """
        self.store.get_run(run_id, outputs=False)
        # A deadlock with a finishing child run (both lock parent and child rows) is retried.
        effects = with_retry(lambda: self.store.cancel(run_id), what=f"cancel run {run_id}",
                             deadline_s=15)
        self._publish(effects)
        with self.pool.connection() as conn:  # the run's nodes and its child runs' nodes
            running = conn.execute(
                "WITH RECURSIVE tree(id) AS (SELECT %s::uuid UNION"
                " SELECT e.id FROM executions e JOIN tree t ON e.parent_run = t.id)"
                " SELECT DISTINCT job FROM node_runs WHERE execution_id IN (SELECT id FROM tree)"
                " AND state='running' AND job IS NOT NULL UNION SELECT DISTINCT job"
                " FROM map_leases WHERE execution_id IN (SELECT id FROM tree)"
                " AND job IS NOT NULL", (run_id,)).fetchall()
        for r in running:  # a forking worker stops the work-horse at once
            try:
                send_stop_job_command(self.redis, r["job"])
            except Exception:  # the heartbeat sees the cancel anyway
                logger.debug("could not send stop-job for %s", r["job"], exc_info=True)

    def retry_run(self, run_id: str, from_node: str | None = None) -> str:
        """Run a finished run's failed, skipped and canceled nodes again (or from a node)."""
        effects = self.store.retry(run_id, from_node)
        self._publish(effects)
        return run_id

    def replay_run(self, run_id: str, *, actor: str | None = None) -> str:
        """Start a new run with the same workflow version and inputs."""
        head = self.store.get_run(run_id, outputs=False)

        def tx(conn: Any) -> tuple[str, Effects]:
            pins = conn.execute("SELECT subflows FROM executions WHERE id=%s",
                                (run_id,)).fetchone()
            return self.store.create_run(conn, head["workflow_id"], head["version"],
                                         head["inputs"], trigger="replay", source=head["source"],
                                         actor=actor, replay_of=run_id,
                                         subflows=pins["subflows"] if pins else None,
                                         env=head["env"], env_vars=head["env_vars"])

        new_id, effects = run_tx(self.pool, tx)
        self._publish(effects)
        return new_id

    # ------------------------------------------------------------------ waiting nodes
    def waiting_node(self, run_id: str, node_id: str) -> dict[str, Any]:
        """Return a node's state and what it waits for (kind, message, approvers, since,
        timeout_at, child run)."""
        _check_uuid(run_id, "run")
        return self._masker(run_id).value(self.store.waiting_node(run_id, node_id))

    def decide(self, run_id: str, node_id: str, approved: bool, *, comment: str | None = None,
               actor: str | None = None, groups: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Approve (or reject) the approval node ``node_id`` waiting in ``run_id``; return the
        decision (the node's output: approved, decided_by, decided_at, comment).

        ``PermissionDenied`` when the node lists approvers and ``actor`` (default: this
        process's user) is not one of them (by name, or ``group:G`` for a member of
        ``groups``); ``RunStateError`` when the node does not wait for a decision (decided
        already, not reached yet, timed out).
        """
        _check_uuid(run_id, "run")
        if comment is not None and len(comment) > 10_000:
            raise NexusFlowError("a decision's comment may hold 10,000 characters at most")
        output, effects = self.store.decide(run_id, node_id, bool(approved),
                                            actor=actor or local_owner(), comment=comment,
                                            groups=groups)
        self._publish(effects)
        return output

    def resume_target(self, token: str) -> dict[str, Any]:
        """Return ``{run_id, node_id, state, max_body_bytes?}`` of a resume token's node."""
        from .nodes.flowcontrol import resume_token_sha256

        return self.store.resume_target(resume_token_sha256(token))

    def resume(self, token: str, payload: Any) -> dict[str, Any]:
        """Resume the wait node a resume token belongs to, with ``payload`` as its output
        (the token is used up); return ``{run_id, node_id}``."""
        from .nodes.flowcontrol import resume_token_sha256

        json.dumps(payload)  # JSON, or fail before anything is written
        done, effects = self.store.resume(resume_token_sha256(token), payload)
        self._publish(effects)
        return done

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """Return the child runs of a run (its sub-flows), oldest first."""
        _check_uuid(run_id, "run")
        return self.store.child_runs(run_id)

    # ------------------------------------------------------------------ pools
    def list_pools(self) -> list[dict[str, Any]]:
        """Return every pool: name, size, description, running (slots held), waiting."""
        return self.store.list_pools()

    def get_pool(self, name: str) -> dict[str, Any]:
        return self.store.get_pool(name)

    def set_pool(self, name: str, size: int, *, description: str | None = None,
                 actor: str | None = None) -> dict[str, Any]:
        """Create or resize a pool (a bigger one starts waiting nodes at once)."""
        self._publish(self.store.set_pool(name, size, description=description,
                                          actor=actor or local_owner()))
        return self.store.get_pool(name)

    def delete_pool(self, name: str) -> None:
        """Delete a pool no node uses now (``RunStateError`` otherwise)."""
        self.store.delete_pool(name)

    # ------------------------------------------------------------------ events
    def read_events(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
                    count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Return a run's events after a stream id; the history is rebuilt if Redis lost it."""
        items = self.broker.read_events(events_key(run_id), after, block_ms=block_ms,
                                        count=count)
        if not items and after in ("0", "0-0"):
            derived = self.store.derived_events(run_id)
            masker = self._masker(run_id)
            return [(f"0-{i + 1}", masker.value(ev)) for i, ev in enumerate(derived)]
        return items

    def read_all_events(self, after: str = "$", block_ms: int | None = None,
                        count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        return self.broker.read_events(ALL_EVENTS_KEY, after, block_ms=block_ms, count=count)


def _worker_wait(item: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a queued node nobody serves shows in ``waiting`` (as waiting nodes do)."""
    return {"kind": "worker", "queue": item["queue"], "message": item["message"]}


def backend_advice(settings: Settings, backend: str) -> str:
    """Say what to do when ``backend`` (``postgres`` or ``redis``) does not answer.

    ``settings`` are those configured (before the embedded services filled the URLs in), so
    the advice names what the user chose: a server of their own, or the embedded one.
    """
    name, var, url = (("PostgreSQL", "NEXUSFLOW_DATABASE_URL", settings.database_url)
                      if backend == "postgres" else
                      ("Redis", "NEXUSFLOW_REDIS_URL", settings.redis_url))
    if url:
        return (f"start that server or correct {var}, or unset {var} to use the {name} "
                "that Nexus-Flow embeds and starts by itself")
    return (f"the embedded {name} in {settings.data_dir} does not answer: `nexusflow services "
            "status` shows it and its log; `nexusflow services stop` then `nexusflow services "
            f"start` restarts it (or set {var} to a server of your own)")


def _apply_param_defaults(compiled: CompiledFlow, inputs: dict[str, Any]) -> None:
    for name, spec in compiled.document.params.items():
        if name not in inputs and "default" in spec:
            inputs[name] = spec["default"]


def _check_uuid(value: Any, what: str) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise NotFoundError(f"no {what} {value!r} ({what} ids are UUIDs)") from None


__all__ = ["Engine", "backend_advice", "file_workflow_key", "jsonb", "local_owner",
           "workflow_key"]

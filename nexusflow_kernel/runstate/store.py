"""PostgreSQL is the record: workflows, runs, node states, leases and attempt logs.

``RunStore`` stores versions and starts runs, answers the reconciler, and cancels and
retries runs; the node transitions (claim, renew, finish) are in ``transitions.py`` and the
read-only views in ``runviews.py``, both mixed in. Every state change happens in one
transaction and returns the pushes and events to send to Redis *after* the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import defaults
from ..errors import NotFoundError, RunStateError
from ..model.compiler import CompiledFlow
from ..transport.broker import event
from .db import Conn, Pool, jsonb
from .flowcontrol import FlowControl
from .maps import MapTransitions
from .plan import POOL_QUEUE, NodeState, RunStatus
from .resume import RunUpdates
from .runplan import PlanCache, RunPlan
from .runviews import RunViews
from .transitions import Effects, Outcome, queue_for_type


@dataclass(frozen=True)
class Binding:
    """What filing a flow under a workflow is about to do (see ``RunStore.save_version``)."""

    conn: Conn
    """The transaction doing it (an ``authorize`` callback may read and write in it)."""
    workflow_id: str
    created: bool
    """The workflow is new (made in this transaction)."""
    changed: bool
    """A new version will be stored (the flow differs from the latest version)."""
    latest: int | None
    """The latest version before this one (``None`` for a new workflow)."""
    created_by: str | None
    """Who created the workflow."""
    source: str | None = None
    """What is being filed or run, for messages: the file's path or ``workflow <id>`` (a
    sub-flow or an ``on_failure`` flow; ``None``: the flow the caller started)."""
    graph: dict[str, Any] | None = None
    """The flow document that will run (to check what it needs, e.g. code nodes)."""
    reference: bool = False
    """A stored workflow named by id (a sub-flow): only the caller's role on it counts, never
    who owns a file."""


class RunStore(FlowControl, MapTransitions, RunViews, RunUpdates):
    """Reads and writes run state; one per process, thread-safe (pooled connections)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.plans = PlanCache()

    # ------------------------------------------------------------------ plans and versions
    def plan_for(self, conn: Conn, workflow_id: Any, version: int) -> RunPlan:
        key = (str(workflow_id), int(version))
        plan = self.plans.get(key)
        if plan is None:
            row = conn.execute(
                "SELECT graph_json, plan FROM workflow_versions"
                " WHERE workflow_id=%s AND version=%s",
                key,
            ).fetchone()
            if row is None:
                raise NotFoundError(f"workflow {key[0]} has no version {key[1]}")
            plan = RunPlan.build(row["graph_json"], row["plan"])
            self.plans.put(key, plan)
        return plan

    def save_version(self, conn: Conn, compiled: CompiledFlow, *,
                     workflow_id: str | None = None, key: str | None = None,
                     name: str | None = None, actor: str | None = None,
                     authorize: Callable[[Binding], None] | None = None,
                     ) -> tuple[str, int, bool]:
        """Store ``compiled`` as the next immutable version unless the latest has its hash.

        Without ``workflow_id`` the flow is filed under ``key`` (a new workflow when no live
        one has it; a deleted workflow never has a key) or, without a key, as a new workflow.
        ``authorize`` is called with the :class:`Binding` before anything is written, in this
        transaction; it raises to refuse (a new workflow is rolled back with it).
        """
        name = name or compiled.document.name
        created = workflow_id is None
        if workflow_id is None:
            workflow_id, created = self._workflow_for_key(conn, key, name, actor)
        wf = conn.execute(
            "SELECT id, created_by FROM workflows WHERE id=%s AND deleted_at IS NULL FOR UPDATE",
            (workflow_id,),
        ).fetchone()
        if wf is None:
            raise NotFoundError(f"no workflow {workflow_id}")
        latest = conn.execute(
            "SELECT version, content_hash FROM workflow_versions WHERE workflow_id=%s"
            " ORDER BY version DESC LIMIT 1",
            (workflow_id,),
        ).fetchone()
        same = latest is not None and latest["content_hash"] == compiled.hash and \
            self._same_graph(conn, workflow_id, latest["version"], compiled)
        if authorize is not None:
            authorize(Binding(conn, workflow_id, created, not same,
                              latest["version"] if latest else None, wf["created_by"]))
        if same and latest is not None:
            return workflow_id, latest["version"], False
        version = (latest["version"] + 1) if latest else 1
        conn.execute(
            "INSERT INTO workflow_versions (workflow_id, version, name, graph_json, plan,"
            " content_hash, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (workflow_id, version, name, jsonb(compiled.document.data), jsonb(compiled.plan()),
             compiled.hash, actor),
        )
        conn.execute("UPDATE workflows SET name=%s WHERE id=%s", (name, workflow_id))
        return workflow_id, version, True

    @staticmethod
    def reference_binding(conn: Conn, workflow_id: str, latest: int, created_by: str | None,
                          *, source: str, graph: dict[str, Any] | None) -> Binding:
        """Return the ``Binding`` an ``authorize`` callback gets for a stored workflow that a
        run calls by id (a sub-flow): nothing is filed, only the caller's role counts."""
        return Binding(conn, workflow_id, False, False, latest, created_by, source=source,
                       graph=graph, reference=True)

    @staticmethod
    def _workflow_for_key(conn: Conn, key: str | None, name: str,
                          actor: str | None) -> tuple[str, bool]:
        """Return ``(workflow id, created)``: the live workflow filed under ``key``, or a new one.

        Deleting a workflow releases its key (``Engine.delete_workflow``), so a key never leads
        back to a deleted workflow and its history.
        """
        if key is None:
            row = conn.execute(
                "INSERT INTO workflows (id, name, created_by) VALUES (%s, %s, %s) RETURNING id",
                (uuid.uuid4(), name, actor),
            ).fetchone()
            assert row is not None  # INSERT ... RETURNING gives the row
            return str(row["id"]), True
        for _ in range(3):  # a concurrent delete may release the key between the two
            row = conn.execute(
                "INSERT INTO workflows (id, name, key, created_by) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING RETURNING id",
                (uuid.uuid4(), name, key, actor),
            ).fetchone()
            if row is not None:
                return str(row["id"]), True
            row = conn.execute("SELECT id FROM workflows WHERE key=%s FOR UPDATE",
                               (key,)).fetchone()
            if row is not None:
                return str(row["id"]), False
        raise RunStateError(f"the workflow filed under {key!r} keeps changing; try again")

    def workflow_for_key(self, key: str) -> str | None:
        """Return the id of the live workflow filed under ``key``, or ``None``."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT id FROM workflows WHERE key=%s AND deleted_at IS NULL",
                               (key,)).fetchone()
        return str(row["id"]) if row else None

    @staticmethod
    def _same_graph(conn: Conn, workflow_id: str, version: int,
                    compiled: CompiledFlow) -> bool:
        row = conn.execute(
            "SELECT graph_json FROM workflow_versions WHERE workflow_id=%s AND version=%s",
            (workflow_id, version),
        ).fetchone()
        return row is not None and row["graph_json"] == compiled.document.data

    # ------------------------------------------------------------------ starting a run
    def create_run(self, conn: Conn, workflow_id: str, version: int,
                   inputs: dict[str, Any], *, trigger: str, source: str | None,
                   actor: str | None, replay_of: str | None = None,
                   dedupe_key: str | None = None, subflows: dict[str, Any] | None = None,
                   parent: tuple[str, str, int | None] | None = None,
                   depth: int = 0, env: str | None = None,
                   env_vars: dict[str, Any] | None = None) -> tuple[str, Effects]:
        """Insert the execution and one row per node; roots become ``queued``.

        With ``dedupe_key``, a run already started with that key is returned instead (no
        second run): triggers use it so a redelivered message or a re-fired schedule slot
        never starts two runs. ``subflows`` pins the versions of the flows its nodes call
        (``subflows.resolve_subflows``); ``parent`` is ``(run, node, item)`` of a child run.
        ``env``/``env_vars``: the environment the run runs in and its variables (a child run
        inherits its parent's; default ``dev`` without variables).
        A run beyond its flow's ``max_active_runs`` is stored ``queued``, its roots not yet.
        """
        plan = self.plan_for(conn, workflow_id, version)
        limit = plan.document.get("max_active_runs") if plan.order else None
        # A flow with max_active_runs: its starts take turns on the workflow row, so two of
        # them cannot both count a free place.
        if conn.execute("SELECT 1 FROM workflows WHERE id=%s AND deleted_at IS NULL"
                        + (" FOR UPDATE" if limit else " FOR SHARE"),
                        (workflow_id,)).fetchone() is None:
            # A deleted workflow's history stays with it; nothing starts it again (a replay,
            # a trigger, an id someone kept).
            raise NotFoundError(f"no workflow {workflow_id} (it was deleted, or never existed)")
        self.check_pools(conn, plan)
        status = RunStatus.QUEUED if limit and not self.may_start(
            conn, workflow_id, limit, queued_ahead=True) else RunStatus.RUNNING
        run_id = str(uuid.uuid4())
        parent_run, parent_node, parent_item = parent or (None, None, None)
        row = conn.execute(
            "INSERT INTO executions (id, workflow_id, version, status, trigger, inputs, source,"
            " created_by, replay_of, remaining, dedupe_key, subflows, parent_run, parent_node,"
            " parent_item, depth, env, env_vars)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"
            " COALESCE(%s, (SELECT p.env FROM executions p WHERE p.id = %s), 'dev'),"
            " COALESCE(%s, (SELECT p.env_vars FROM executions p WHERE p.id = %s), '{}'))"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
            (run_id, workflow_id, version, status, trigger, jsonb(inputs), source, actor,
             replay_of, len(plan.order), dedupe_key,
             jsonb(subflows) if subflows else None, parent_run, parent_node, parent_item,
             depth, env, parent_run, None if env_vars is None else jsonb(env_vars),
             parent_run),
        ).fetchone()
        if row is None:
            existing = conn.execute("SELECT id FROM executions WHERE dedupe_key=%s",
                                    (dedupe_key,)).fetchone()
            assert existing is not None  # the conflicting run holds the key
            return str(existing["id"]), Effects()
        effects = Effects([], [event(run_id, None, status)])
        start = status == RunStatus.RUNNING
        ready: list[tuple[str, str]] = []
        rows = []
        for idx, node_id in enumerate(plan.order):
            node = plan.nodes[node_id]
            root = start and not plan.parents[node_id]
            queue = queue_for_type(node.type)
            rows.append((run_id, idx, node_id, NodeState.QUEUED if root else NodeState.PENDING,
                         1 if root else 0, 1 if root else 0, _max_attempts(node),
                         POOL_QUEUE if node.pool else queue, "now" if root else None,
                         len(plan.parents[node_id]), node.pool, queue if node.pool else None))
            if root:
                ready.append((node_id, POOL_QUEUE if node.pool else queue))
                effects.events.append(event(run_id, node_id, NodeState.QUEUED, 1))
        _insert_node_rows(conn, rows)
        self._dispatch_ready(conn, run_id, plan, ready, effects)
        if not plan.order:
            conn.execute("UPDATE executions SET status='succeeded', ended_at=clock_timestamp()"
                         " WHERE id=%s",
                         (run_id,))
            effects.events.append(event(run_id, None, RunStatus.SUCCEEDED))
        return run_id, effects

    # ------------------------------------------------------------------ reconciler queries
    def expired_leases(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT n.execution_id::text AS run_id, n.idx, n.node_id, n.attempt,"
                " n.lease_token, n.max_attempts, n.job, e.workflow_id, e.version"
                " FROM node_runs n"
                " JOIN executions e ON e.id = n.execution_id"
                " WHERE n.state='running' AND n.lease_until < now() LIMIT %s",
                (limit,),
            ).fetchall()

    def reclaim_lost(self, row: dict[str, Any]) -> Effects | None:
        """Record a lost attempt (its lease expired) and retry or fail the node."""
        with self.pool.connection() as conn, conn.transaction():
            plan = self.plan_for(conn, row["workflow_id"], row["version"])
            still = conn.execute(
                "SELECT 1 FROM node_runs WHERE execution_id=%s AND idx=%s AND state='running'"
                " AND lease_token=%s AND lease_until < now() FOR UPDATE",
                (row["run_id"], row["idx"], row["lease_token"]),
            ).fetchone()
            if still is None:
                return None
            outcome = Outcome("lost", error="worker lost: its lease expired (killed or cut off)",
                              retryable=True, retry_delay=0.0)
            done = self._finish(conn, row["run_id"], row["idx"], row["node_id"], row["attempt"],
                                row["lease_token"], plan, outcome)
            return done[0] if done is not None else None

    def stale_queued(self, grace_s: float, limit: int = 1000) -> list[dict[str, Any]]:
        """Return queued or due scheduled nodes whose job may be missing from Redis, and
        waiting nodes whose timeout passed (their wake-up job may be missing too).

        Pooled nodes still waiting for a slot have no job (``grant_pools`` hands them out)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT execution_id::text AS run_id, idx, attempt, queue, state,"
                " (state = 'waiting' OR (state = 'scheduled' AND resume_state IS NOT NULL))"
                " AS wake FROM node_runs"
                " WHERE (state='queued' AND queue <> %s"
                "  AND enqueued_at < now() - make_interval(secs => %s))"
                " OR (state IN ('scheduled', 'waiting')"
                "  AND due_at < now() - make_interval(secs => %s))"
                " ORDER BY enqueued_at LIMIT %s",
                (POOL_QUEUE, grace_s, grace_s, limit),
            ).fetchall()

    def touch_queued(self, items: Iterable[tuple[str, int]]) -> None:
        items = list(items)
        if not items:
            return
        with self.pool.connection() as conn, conn.transaction():
            conn.cursor().executemany(
                "UPDATE node_runs SET enqueued_at=clock_timestamp()"
                " WHERE execution_id=%s AND idx=%s"
                " AND state IN ('queued','scheduled')",
                items,
            )

    # ------------------------------------------------------------------ run control
    def cancel(self, run_id: str) -> Effects:
        """Cancel a running (or queued) run, and the child runs its nodes wait for."""
        with self.pool.connection() as conn, conn.transaction():
            self.lock_maps(conn, run_id)
            run = conn.execute("SELECT status FROM executions WHERE id=%s FOR UPDATE",
                               (run_id,)).fetchone()
            if run is None:
                raise NotFoundError(f"no run {run_id}")
            if run["status"] not in (RunStatus.RUNNING, RunStatus.QUEUED):
                raise RunStateError(f"run {run_id} is already {run['status']}")
            effects = Effects()
            self._cancel_in(conn, run_id, effects)
            return effects

    def _cancel_in(self, conn: Conn, run_id: str, effects: Effects) -> None:
        """Cancel ``run_id`` (locked by the caller) in this transaction, with its child runs
        (canceled after this run, so their end resolves nothing of it)."""
        conn.execute("UPDATE executions SET status='canceled' WHERE id=%s", (run_id,))
        for child in conn.execute(
                "SELECT id FROM executions WHERE parent_run=%s AND status IN ('running','queued')"
                " FOR UPDATE", (run_id,)).fetchall():
            self._cancel_in(conn, str(child["id"]), effects)
        rows = conn.execute(
            "UPDATE node_runs SET state='canceled', ended_at=clock_timestamp()"
            " WHERE execution_id=%s AND state IN ('pending','queued','scheduled','waiting')"
            " RETURNING node_id, pool",
            (run_id,),
        ).fetchall()
        conn.execute("DELETE FROM nexusflow_resume_tokens WHERE execution_id=%s", (run_id,))
        for r in rows:
            effects.events.append(event(run_id, r["node_id"], NodeState.CANCELED))
        pools = {r["pool"] for r in rows if r["pool"]}
        if pools:
            self._grant_pools(conn, pools, effects)
        ended_maps = self.cancel_maps(conn, run_id, effects)
        self._finalize_if_done(conn, run_id, len(rows) + ended_maps, effects)

    def retry(self, run_id: str, from_node: str | None = None) -> Effects:
        """Re-open a finished run: failed/canceled/skipped nodes (or ``from_node`` on) go again.
        A sub-flow's child run is refused (``refuse_child_retry``): its parent resumes it."""
        with self.pool.connection() as conn, conn.transaction():
            refuse_child_retry(conn, run_id)
            return self._retry_in(conn, run_id, from_node)

    def _update_in(self, conn: Conn, run_id: str, version: int,
                   subflows: dict[str, Any] | None, actor: str | None) -> Effects | None:
        """Resume the finished run with ``version`` of its workflow, in the caller's
        transaction (a parent resuming its failed child with a newer sub-flow version); its
        failed nodes run again with that version and its succeeded ones keep their outputs.
        ``None``, with nothing written, when the version does not fit what the run did."""
        from .resume import IncompatibleUpdate

        run = self.lock_finished_run(conn, run_id)
        new = self.plan_for(conn, run["workflow_id"], version)
        try:
            decided, states = self.plan_update(conn, run_id, run, new, version)
        except IncompatibleUpdate:
            return None
        return self.apply_update(conn, run_id, run, new, version, decided, states,
                                 actor=actor, subflows=subflows)

    def _retry_in(self, conn: Conn, run_id: str, from_node: str | None = None) -> Effects:
        """``retry`` in the caller's transaction (a parent resuming its failed child)."""
        run = conn.execute(
            "SELECT status, workflow_id, version FROM executions WHERE id=%s FOR UPDATE",
            (run_id,),
        ).fetchone()
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        if run["status"] in (RunStatus.RUNNING, RunStatus.QUEUED):
            raise RunStateError(f"run {run_id} is still {run['status']}; cancel it first")
        if conn.execute("SELECT 1 FROM node_runs WHERE execution_id=%s AND state='running'"
                        " LIMIT 1", (run_id,)).fetchone():
            raise RunStateError(f"run {run_id} was canceled but a node is still stopping;"
                                " try again in a few seconds")
        plan = self.plan_for(conn, run["workflow_id"], run["version"])
        rows = conn.execute("SELECT node_id, state, branch FROM node_runs"
                            " WHERE execution_id=%s", (run_id,)).fetchall()
        states = {r["node_id"]: (r["state"], r["branch"]) for r in rows}
        if from_node is not None:
            if from_node not in plan.idx_of:
                raise NotFoundError(f"run {run_id} has no node {from_node!r}")
            import networkx as nx

            graph = nx.DiGraph((p, c) for p, kids in plan.children.items() for c, _ in kids)
            graph.add_nodes_from(plan.order)
            reset = {from_node} | nx.descendants(graph, from_node)
            # Maps from that node on run all their items again (a plain retry re-runs only
            # the items that did not succeed).
            self.forget_maps(conn, run_id, [plan.idx_of[n] for n in reset])
        else:
            reset = {n for n, (s, _b) in states.items() if s != NodeState.SUCCEEDED}
            if not reset:
                raise RunStateError(f"run {run_id} has nothing to retry: every node succeeded")
        conn.execute(
            "UPDATE node_runs SET state='pending', output=NULL, branch=NULL, error=NULL,"
            " resume_state=NULL, due_at=NULL, started_at=NULL, ended_at=NULL,"
            " n_done=0, n_success=0, n_failed=0,"
            " queue=CASE WHEN pool IS NULL THEN queue ELSE %s END"  # a slot again
            " WHERE execution_id=%s AND idx = ANY(%s)",
            (POOL_QUEUE, run_id, [plan.idx_of[n] for n in reset]),
        )
        limit = plan.document.get("max_active_runs")
        status = RunStatus.QUEUED if limit and not self.may_start(
            conn, run["workflow_id"], limit, queued_ahead=False,
            lock=True) else RunStatus.RUNNING
        conn.execute(
            "UPDATE executions SET status=%s, ended_at=NULL, remaining=%s WHERE id=%s",
            (status, len(reset), run_id),
        )
        effects = Effects([], [event(run_id, None, status)])
        if status == RunStatus.RUNNING:
            self._kickoff(conn, run_id, plan, effects)
        return effects

    def _kickoff(self, conn: Conn, run_id: str, plan: Any, effects: Effects) -> None:
        """Start a run's pending nodes (a fresh run's roots, or the nodes a retry reopened):
        parents that keep their result are counted into their pending children again,
        exactly as when they first finished; pending roots are queued. The run is
        ``running``."""
        rows = conn.execute("SELECT node_id, state, branch FROM node_runs"
                            " WHERE execution_id=%s", (run_id,)).fetchall()
        states = {r["node_id"]: (r["state"], r["branch"]) for r in rows}
        reset = {n for n, (s, _b) in states.items() if s == NodeState.PENDING}
        kept = [(p, *states[p]) for p in plan.order if p not in reset
                and any(c in reset for c, _h in plan.children[p])]
        ready, skipped = self._decide_successors(conn, run_id, plan, kept, effects)
        roots = [n for n in plan.order if n in reset and not plan.parents[n]]
        ready += self._queue(conn, run_id, plan, roots, effects)
        self._dispatch_ready(conn, run_id, plan, ready, effects)
        if skipped:
            self._finalize_if_done(conn, run_id, skipped, effects)


_NODE_COLUMNS = ("execution_id, idx, node_id, state, attempt, tries, max_attempts, queue,"
                 " enqueued_at, n_parents, pool, pool_queue")


def _insert_node_rows(conn: Conn, rows: list[tuple[Any, ...]]) -> None:
    """Insert a new run's node rows: by COPY, or (a child run started by a finishing
    transaction, which runs in pipeline mode, where COPY is not allowed) by one pipelined
    INSERT per row."""
    from psycopg import pq

    if conn.pgconn.pipeline_status == pq.PipelineStatus.OFF:
        with conn.cursor().copy(f"COPY node_runs ({_NODE_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    conn.cursor().executemany(
        f"INSERT INTO node_runs ({_NODE_COLUMNS}) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s, %s, %s)", rows)


def _max_attempts(node: Any) -> int:
    retry = node.retry or {}
    return int(retry.get("max_attempts", defaults.DEFAULT_MAX_ATTEMPTS))


__all__ = ["Binding", "RunStore"]


def refuse_child_retry(conn: Conn, run_id: str) -> None:
    """Raise ``RunStateError`` when ``run_id`` is a sub-flow's child run, naming the run to
    retry instead. Retried alone, a child that then succeeded would leave its parent failed
    (the parent's node ended with it), and the parent's next retry would start another child;
    retried through its parent, the failed sub-flow node resumes this same child run."""
    row = conn.execute(
        "SELECT parent_run::text AS parent_run, parent_node, parent_item FROM executions"
        " WHERE id=%s", (run_id,)).fetchone()
    if row is None or row["parent_run"] is None:
        return
    item = "" if row["parent_item"] is None else f" item {row['parent_item']} of"
    raise RunStateError(
        f"run {run_id} is the sub-flow run of{item} node {row['parent_node']!r} of run "
        f"{row['parent_run']}: retry that run instead (`nexusflow retry {row['parent_run']}`, "
        "with --update to use the sub-flow as it is now); it resumes this run in place")

"""Resume a finished run with another version of its flow, keeping what succeeded.

``retry --update``: the failed nodes (or a named node and everything after it) run again
with the flow as it is now, in the same run. Every node that succeeded keeps its output and
does not run again, so the new version must still fit what already ran: a succeeded node that
is kept must still be in the flow, wired to the same parents (through the same handles).
Anything else is refused, naming the node, and nothing is written.

Nodes of the new version the run did not have are added; nodes the new version dropped are
removed from the run when they did not succeed (their attempt logs stay). Every node row
records the version it runs with (``node_runs.version``), the run follows the new version
(``executions.version``), and each update is kept in ``run_updates``.

``node_runs.idx`` is a node's position in its version's topological order (it names the RQ
jobs): rows are renumbered for the new order, through negative numbers so that no two rows
ever hold the same index within the statement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from ..errors import NotFoundError, RunStateError
from ..transport.broker import event
from .db import Conn, jsonb
from .plan import POOL_QUEUE, NodeState, RunStatus
from .runplan import RunPlan
from .transitions import Effects, queue_for_type


class IncompatibleUpdate(RunStateError):
    """The flow's new version does not fit what the run already did (names the node)."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.node = node


@dataclass
class UpdatePlan:
    """What resuming a run with a new version does (decided before anything is written)."""

    kept: list[str]
    """Nodes that keep their result (succeeded, or final and outside the retried part)."""
    rerun: list[str]
    """Nodes of the new version that run (again) with it, in its order."""
    added: list[str]
    """Nodes the run did not have (a subset of ``rerun``)."""
    removed: list[str]
    """Nodes dropped by the new version (none of them had succeeded and been kept)."""
    stale: list[str] = field(default_factory=list)
    """Kept succeeded nodes whose definition changed: their output is from the old one (use
    ``from_node`` to run them again)."""


def _parents(plan: RunPlan, node: str) -> list[tuple[str, str | None]]:
    return sorted(((p, plan.handle_of.get((p, node))) for p in plan.parents.get(node, ())),
                  key=lambda item: (item[0], item[1] or ""))


def _describe(edges: list[tuple[str, str | None]]) -> str:
    if not edges:
        return "no parents"
    return ", ".join(p + (f" ({h})" if h else "") for p, h in edges)


def decide_update(run_id: str, old: RunPlan, new: RunPlan, states: dict[str, str],
                  from_node: str | None, new_version: int) -> UpdatePlan:
    """Return what resuming the run does, or raise ``IncompatibleUpdate``/``NotFoundError``.

    ``states`` maps the run's nodes to their state now. Pure: nothing is read or written.
    """
    if from_node is not None:
        if from_node not in new.nodes:
            raise NotFoundError(f"version {new_version} of the flow of run {run_id} has no "
                                f"node {from_node!r} to retry from")
        graph = nx.DiGraph((p, c) for p, kids in new.children.items() for c, _h in kids)
        graph.add_nodes_from(new.order)
        again = {from_node} | nx.descendants(graph, from_node)
        kept = [n for n in states if n not in again]
    else:
        kept = [n for n, s in states.items() if s == NodeState.SUCCEEDED]
    for n in kept:
        if states[n] != NodeState.SUCCEEDED:
            continue
        if n not in new.nodes:
            raise IncompatibleUpdate(
                f"node {n!r} succeeded in run {run_id}, but version {new_version} of the flow "
                f"no longer has it: a succeeded node cannot be removed from a run that resumes "
                f"(start a new run, or retry from a node above it)", n)
        before, after = _parents(old, n), _parents(new, n)
        if before != after:
            raise IncompatibleUpdate(
                f"node {n!r} succeeded in run {run_id} with inputs from {_describe(before)}; "
                f"version {new_version} of the flow wires it to {_describe(after)}: its output "
                f"would not match its inputs (start a new run, or retry from {n!r} or a node "
                "above it)", n)
    kept_set = set(kept)
    removed = [n for n in states if n not in new.nodes]
    rerun = [n for n in new.order if n not in kept_set]
    if not rerun:
        raise RunStateError(f"run {run_id} has nothing to retry: every node succeeded "
                            "(retry from a node to run it again)")
    stale = [n for n in kept if states[n] == NodeState.SUCCEEDED and n in new.nodes
             and n in old.nodes and old.nodes[n] != new.nodes[n]]
    return UpdatePlan(kept=[n for n in kept if n in new.nodes], rerun=rerun,
                      added=[n for n in rerun if n not in states], removed=removed, stale=stale)


def _max_attempts(plan: RunPlan, node: str) -> int:
    from .. import defaults

    retry = plan.nodes[node].retry or {}
    return int(retry.get("max_attempts", defaults.DEFAULT_MAX_ATTEMPTS))


def _queues(plan: RunPlan, node: str) -> tuple[str, str | None, str | None]:
    """Return a reopened node's ``(queue, pool, pool_queue)``: a pooled node waits in the
    ``pool`` queue for a slot (its real queue kept in ``pool_queue``), as a new run's does."""
    queue = queue_for_type(plan.nodes[node].type)
    pool = plan.nodes[node].pool
    return (POOL_QUEUE, pool, queue) if pool else (queue, None, None)


class RunUpdates:
    """Resuming a run with another version (mixed into ``RunStore``)."""

    if TYPE_CHECKING:  # RunStore's and its other mixins' (RunStore has all of them)
        def plan_for(self, conn: Conn, workflow_id: Any, version: int) -> RunPlan: ...

        def _kickoff(self, conn: Conn, run_id: str, plan: Any, effects: Effects) -> None: ...

        @staticmethod
        def may_start(conn: Conn, workflow_id: Any, limit: int, *, queued_ahead: bool,
                      lock: bool = False) -> bool: ...

        @staticmethod
        def check_pools(conn: Conn, plan: RunPlan) -> None: ...

    def lock_finished_run(self, conn: Conn, run_id: str) -> dict[str, Any]:
        """Lock a run that may be retried; raise ``RunStateError`` while it is active."""
        run = conn.execute(
            "SELECT status, workflow_id, version, source FROM executions WHERE id=%s"
            " FOR UPDATE", (run_id,)).fetchone()
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        if run["status"] in (RunStatus.RUNNING, RunStatus.QUEUED):
            raise RunStateError(f"run {run_id} is still {run['status']}; cancel it first")
        if conn.execute("SELECT 1 FROM node_runs WHERE execution_id=%s AND state='running'"
                        " LIMIT 1", (run_id,)).fetchone():
            raise RunStateError(f"run {run_id} was canceled but a node is still stopping;"
                                " try again in a few seconds")
        return run

    def plan_update(self, conn: Conn, run_id: str, run: dict[str, Any], new: RunPlan,
                    new_version: int, from_node: str | None = None,
                    ) -> tuple[UpdatePlan, dict[str, str]]:
        """Decide what resuming the locked run with ``new`` does; write nothing. Return the
        decision and the run's node states (raise ``IncompatibleUpdate`` when it does not fit)."""
        old = self.plan_for(conn, run["workflow_id"], int(run["version"]))
        rows = conn.execute("SELECT node_id, state FROM node_runs WHERE execution_id=%s",
                            (run_id,)).fetchall()
        states = {r["node_id"]: r["state"] for r in rows}
        self.check_pools(conn, new)
        return decide_update(run_id, old, new, states, from_node, new_version), states

    def apply_update(self, conn: Conn, run_id: str, run: dict[str, Any], new: RunPlan,
                     new_version: int, decided: UpdatePlan, states: dict[str, str], *,
                     from_node: str | None = None, actor: str | None = None,
                     subflows: dict[str, Any] | None = None) -> Effects:
        """Resume the locked, finished run with ``new`` (the plan of ``new_version``), as
        ``decided`` by ``plan_update``, in the caller's transaction; return the effects.

        ``new`` is built by the caller, not read through the plan cache: the version may be
        stored in this same transaction, and a rolled back version must never be cached.
        ``subflows`` are the sub-flow pins of the new version (``None``: keep the run's).
        """
        old_version = int(run["version"])
        # Every row not yet stamped ran with the run's version so far.
        conn.execute("UPDATE node_runs SET version=%s WHERE execution_id=%s AND version IS NULL",
                     (old_version, run_id))
        if decided.removed:
            conn.execute("DELETE FROM node_runs WHERE execution_id=%s AND node_id = ANY(%s)",
                         (run_id, decided.removed))
        present = [n for n in new.order if n in states]
        conn.execute(
            "UPDATE node_runs n SET idx = -1 - u.idx FROM unnest(%s::text[], %s::int[])"
            " AS u(node_id, idx) WHERE n.execution_id=%s AND n.node_id = u.node_id",
            (present, [new.idx_of[n] for n in present], run_id))
        conn.execute("UPDATE node_runs SET idx = -1 - idx WHERE execution_id=%s AND idx < 0",
                     (run_id,))
        again = [n for n in decided.rerun if n in states]
        if again:
            queues = [_queues(new, n) for n in again]
            conn.execute(
                "UPDATE node_runs n SET state='pending', output=NULL, branch=NULL, error=NULL,"
                " resume_state=NULL, due_at=NULL, started_at=NULL, ended_at=NULL,"
                " n_done=0, n_success=0, n_failed=0, cache_key=NULL, cached_from=NULL,"
                " pinned=false, version=%s, n_parents=u.n_parents,"
                " max_attempts=u.max_attempts, queue=u.queue, pool=u.pool,"
                " pool_queue=u.pool_queue"
                " FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[], %s::text[],"
                " %s::text[]) AS u(node_id, n_parents, max_attempts, queue, pool, pool_queue)"
                " WHERE n.execution_id=%s AND n.node_id = u.node_id",
                (new_version, again, [len(new.parents[n]) for n in again],
                 [_max_attempts(new, n) for n in again], [q[0] for q in queues],
                 [q[1] for q in queues], [q[2] for q in queues], run_id))
        if decided.added:
            with conn.cursor().copy(
                "COPY node_runs (execution_id, idx, node_id, state, attempt, tries,"
                " max_attempts, queue, n_parents, pool, pool_queue, version) FROM STDIN"
            ) as copy:
                for n in decided.added:
                    queue, pool, pool_queue = _queues(new, n)
                    copy.write_row((run_id, new.idx_of[n], n, NodeState.PENDING, 0, 0,
                                    _max_attempts(new, n), queue, len(new.parents[n]), pool,
                                    pool_queue, new_version))
        limit = new.document.get("max_active_runs")
        status = RunStatus.QUEUED if limit and not self.may_start(
            conn, run["workflow_id"], limit, queued_ahead=False, lock=True) \
            else RunStatus.RUNNING
        conn.execute(
            "UPDATE executions SET status=%s, ended_at=NULL, remaining=%s, version=%s,"
            " subflows=COALESCE(%s, subflows) WHERE id=%s",
            (status, len(decided.rerun), new_version,
             jsonb(subflows) if subflows is not None else None, run_id))
        conn.execute(
            "INSERT INTO run_updates (execution_id, seq, from_version, to_version, from_node,"
            " rerun, actor) SELECT %s, coalesce(max(seq), 0) + 1, %s, %s, %s, %s, %s"
            " FROM run_updates WHERE execution_id=%s",
            (run_id, old_version, new_version, from_node, decided.rerun, actor, run_id))
        effects = Effects([], [event(run_id, None, status)])
        if status == RunStatus.RUNNING:
            self._kickoff(conn, run_id, new, effects)
        return effects


__all__ = ["IncompatibleUpdate", "RunUpdates", "UpdatePlan", "decide_update"]

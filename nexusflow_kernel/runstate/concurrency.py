"""Concurrency limits: a flow's ``max_active_runs`` and pools of slots shared by all runs.

``RunStore`` inherits these.

- **max_active_runs.** A run that would exceed its flow's limit is stored ``queued`` (its
  nodes pending, nothing pushed). When a run of the flow ends, the oldest queued run starts,
  in the transaction that ended the other one. Starts of a limited flow take turns on the
  workflow's row, so two of them never both see a free place.
- **Pools.** A node with ``pool: NAME`` is queued on the pseudo-queue ``pool``, which no run
  job claims; ``_grant_pools`` gives the oldest waiting nodes the free slots (queue becomes the
  node type's own, and a run job is pushed). Slots in use are *counted* from the node rows
  (granted and not yet claimed, running, or waiting for a retry), never kept as a counter, so
  a slot comes back whenever its node stops holding it: finished, failed, canceled, or lost
  with a killed worker (the reconciler's lease expiry records the loss). Grants for one pool
  take turns on the pool's row. Nobody waits in a worker for a slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import NexusFlowError, NodeConfigError, NotFoundError, RunStateError
from ..transport.broker import event
from .db import Conn, Pool
from .plan import POOL_QUEUE, RunStatus
from .runplan import RunPlan
from .transitions import Effects, NodeTransitions

POOL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_POOL_SIZE = 1_000_000

# A pooled node holds a slot from its grant until it stops: granted (queued on its real
# queue), running, or waiting for a retry or a delay (``scheduled``).
_USED = ("(state IN ('running', 'scheduled')"
         " OR (state = 'queued' AND queue <> '" + POOL_QUEUE + "'))")


class Concurrency(NodeTransitions):
    """``max_active_runs`` and pools (mixed into ``RunStore``)."""

    pool: Pool

    def _kickoff(self, conn: Conn, run_id: str, plan: Any, effects: Effects) -> None:
        raise NotImplementedError  # RunStore's

    # ------------------------------------------------------------------ max_active_runs
    @staticmethod
    def may_start(conn: Conn, workflow_id: Any, limit: int, *, queued_ahead: bool,
                  lock: bool = False) -> bool:
        """Whether a run of a flow limited to ``limit`` active runs may start now.

        ``queued_ahead``: a queued run of the flow also keeps it waiting (runs start in
        order). ``lock`` takes the workflow row first (the caller did not already).
        """
        if lock:
            conn.execute("SELECT 1 FROM workflows WHERE id=%s FOR UPDATE", (workflow_id,))
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'running') AS running,"
            " count(*) FILTER (WHERE status = 'queued') AS queued"
            " FROM executions WHERE workflow_id=%s AND status IN ('running', 'queued')",
            (workflow_id,)).fetchone()
        assert row is not None  # an aggregate gives one row
        if queued_ahead and row["queued"]:
            return False
        return int(row["running"]) < limit

    def _promote_queued(self, conn: Conn, workflow_id: Any, effects: Effects) -> None:
        """Start the flow's oldest queued runs while its ``max_active_runs`` allows."""
        if conn.execute("SELECT 1 FROM executions WHERE workflow_id=%s AND status='queued'"
                        " LIMIT 1", (workflow_id,)).fetchone() is None:
            return
        conn.execute("SELECT 1 FROM workflows WHERE id=%s FOR UPDATE", (workflow_id,))
        while True:
            nxt = conn.execute(
                "SELECT id, version FROM executions WHERE workflow_id=%s AND status='queued'"
                " ORDER BY created_at, id LIMIT 1 FOR UPDATE", (workflow_id,)).fetchone()
            if nxt is None:
                return
            plan = self.plan_for(conn, workflow_id, nxt["version"])
            limit = plan.document.get("max_active_runs")
            if limit and not self.may_start(conn, workflow_id, limit, queued_ahead=False):
                return
            run_id = str(nxt["id"])
            conn.execute(
                "UPDATE executions SET status='running', started_at=CASE WHEN EXISTS ("
                " SELECT 1 FROM node_runs WHERE execution_id=%s AND state <> 'pending')"
                " THEN started_at ELSE clock_timestamp() END WHERE id=%s", (run_id, run_id))
            effects.events.append(event(run_id, None, RunStatus.RUNNING))
            self._kickoff(conn, run_id, plan, effects)

    # ------------------------------------------------------------------ pools
    @staticmethod
    def check_pools(conn: Conn, plan: RunPlan) -> None:
        """Raise ``NodeConfigError`` naming the node when a pool it names does not exist."""
        names = sorted({n.pool for n in plan.nodes.values() if n.pool})
        if not names:
            return
        found = {r["name"] for r in conn.execute(
            "SELECT name FROM nexusflow_pools WHERE name = ANY(%s)", (names,))}
        for i, node in enumerate(plan.nodes.values()):
            if node.pool and node.pool not in found:
                raise NodeConfigError(
                    f"node {node.id!r}: pool {node.pool!r} does not exist (create it with "
                    f"`nexusflow pools set {node.pool} SIZE`)", f"/nodes/{i}/pool")

    def _grant_pools(self, conn: Conn, pools: Iterable[str], effects: Effects) -> None:
        """Give free slots of ``pools`` to their oldest waiting nodes; push their run jobs."""
        for name in sorted(set(pools)):  # one order everywhere: no deadlock between grants
            row = conn.execute("SELECT size FROM nexusflow_pools WHERE name=%s FOR UPDATE",
                               (name,)).fetchone()
            if row is None:
                continue  # deleted while nodes wait: they wait until it is set again
            used = conn.execute(f"SELECT count(*) AS n FROM node_runs WHERE pool=%s AND {_USED}",
                                (name,)).fetchone()
            free = int(row["size"]) - int(used["n"] if used else 0)
            if free <= 0:
                continue
            granted: dict[str, list[tuple[str, str]]] = {}
            for r in conn.execute(
                    "UPDATE node_runs n SET queue = n.pool_queue, enqueued_at = clock_timestamp()"
                    " FROM (SELECT execution_id, idx FROM node_runs"
                    "  WHERE pool=%s AND state='queued' AND queue=%s"
                    "  ORDER BY enqueued_at, execution_id, idx LIMIT %s FOR UPDATE SKIP LOCKED) g"
                    " WHERE n.execution_id = g.execution_id AND n.idx = g.idx"
                    " RETURNING n.execution_id::text AS run_id, n.node_id, n.queue",
                    (name, POOL_QUEUE, free)):
                granted.setdefault(r["run_id"], []).append((r["node_id"], r["queue"]))
            for run_id, ready in granted.items():
                self._push_ready(run_id, ready, effects)

    def grant_all_pools(self) -> Effects:
        """Grant free slots of every pool with waiting nodes (the reconciler's repair pass);
        return the effects to publish."""
        effects = Effects()
        with self.pool.connection() as conn, conn.transaction():
            names = [r["pool"] for r in conn.execute(
                "SELECT DISTINCT pool FROM node_runs WHERE pool IS NOT NULL"
                " AND state='queued' AND queue=%s", (POOL_QUEUE,))]
            if names:
                self._grant_pools(conn, names, effects)
        return effects

    def list_pools(self) -> list[dict[str, Any]]:
        """Return every pool with its size and use: ``running`` (slots held) and ``waiting``."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT p.name, p.size, p.description, p.updated_by, p.updated_at,"
                f" (SELECT count(*) FROM node_runs n WHERE n.pool = p.name AND {_USED})"
                " AS running,"
                " (SELECT count(*) FROM node_runs n WHERE n.pool = p.name"
                "  AND n.state = 'queued' AND n.queue = %s) AS waiting"
                " FROM nexusflow_pools p ORDER BY p.name", (POOL_QUEUE,)).fetchall()
        return [{"name": r["name"], "size": r["size"], "description": r["description"],
                 "running": int(r["running"]), "waiting": int(r["waiting"]),
                 "updated_by": r["updated_by"],
                 "updated_at": r["updated_at"].isoformat().replace("+00:00", "Z")}
                for r in rows]

    def get_pool(self, name: str) -> dict[str, Any]:
        for item in self.list_pools():
            if item["name"] == name:
                return item
        raise NotFoundError(f"no pool {name!r} (create it with `nexusflow pools set {name} SIZE`)")

    def set_pool(self, name: str, size: int, *, description: str | None = None,
                 actor: str | None = None) -> Effects:
        """Create or resize a pool; a larger size hands its new slots out at once. Return the
        effects to publish."""
        check_pool(name, size)
        effects = Effects()
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO nexusflow_pools (name, size, description, updated_by)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET size=EXCLUDED.size,"
                " description=COALESCE(EXCLUDED.description, nexusflow_pools.description),"
                " updated_by=EXCLUDED.updated_by, updated_at=now()",
                (name, size, description, actor))
            self._grant_pools(conn, [name], effects)
        return effects

    def delete_pool(self, name: str) -> None:
        """Delete a pool that no node of a run uses now (running or waiting for a slot)."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT name FROM nexusflow_pools WHERE name=%s FOR UPDATE",
                               (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no pool {name!r}")
            busy = conn.execute(
                "SELECT count(*) AS n FROM node_runs WHERE pool=%s AND (state IN"
                " ('queued', 'running', 'scheduled'))", (name,)).fetchone()
            if busy and busy["n"]:
                raise RunStateError(
                    f"pool {name!r} is in use by {busy['n']} node(s) running or waiting for a "
                    "slot: let them finish (or cancel their runs) first, or resize it instead")
            conn.execute("DELETE FROM nexusflow_pools WHERE name=%s", (name,))


def check_pool(name: Any, size: Any) -> None:
    """Raise ``NexusFlowError`` saying what is wrong with a pool's name or size."""
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise NexusFlowError(f"pool name {name!r} is not allowed (letters, digits, '_', '.', "
                             "'-'; at most 64 characters)")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_POOL_SIZE:
        raise NexusFlowError(f"pool size {size!r} must be an integer in 0..{MAX_POOL_SIZE}")


__all__ = ["MAX_POOL_SIZE", "POOL_NAME", "Concurrency", "check_pool"]

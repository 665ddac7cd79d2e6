"""Map nodes in the record: expanding a map into items, claiming and recording items in batches.

``RunStore`` inherits these. A map node is claimed like any node; the worker evaluates its
``items`` and :meth:`MapTransitions.expand_map` stores one ``map_items`` row per item in the
same transaction that lets go of the map node's lease (the map node stays ``running`` with no
lease of its own: only its items have leases). Workers then claim items many at a time (one
statement, ``FOR UPDATE SKIP LOCKED``, within the map's ``concurrency``) and record a batch of
outcomes in one transaction, fenced per item by its lease token, which also claims their next
batch. The transaction that records the map's last item finishes the map node itself (its
output is the item outputs in item order) exactly as a node finishes: successors, count-down,
the next node for this worker.

Each item keeps its state, attempts (``map_item_attempts`` holds those that did not succeed;
the item's row the latest), output, error and log; an expired item lease is recorded as a lost
attempt and the item retried, as for nodes. Retrying a run re-runs only the items that did not
succeed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import defaults
from ..model.document import Node
from ..transport.broker import Push, event
from .db import Conn, Pool
from .flowcontrol import CHILD_RUN_ENDED
from .plan import NodeState, RunStatus
from .runplan import RunPlan
from .transitions import (
    LOST_RETRIES,
    Claim,
    Effects,
    Follow,
    KnownOutputs,
    NodeTransitions,
    Outcome,
    queue_for_type,
)

LOST_ERROR = "worker lost: its lease expired (killed or cut off)"

Take = int | Callable[[str], int]
"""How many items to claim: a number, or one by the type name of the map's inline node."""


@dataclass
class ItemClaim:
    """One item this worker holds the lease of."""

    item: int
    attempt: int
    value: Any


@dataclass
class ItemBatch:
    """Items of one map node claimed together (one lease token for all of them)."""

    run_id: str
    idx: int
    node_id: str
    token: str
    plan: RunPlan
    params: dict[str, Any]
    inputs: dict[str, Any]
    items: list[ItemClaim]

    @property
    def spec(self) -> Node:
        """The inline node each item runs (named after the map node)."""
        return inline_node(self.plan, self.node_id)


@dataclass
class ItemResult:
    """How one item attempt ended."""

    item: int
    attempt: int
    outcome: Outcome
    token: str | None = None
    """The item's lease token (default: its batch's)."""


@dataclass
class MapProgress:
    total: int
    running: int
    succeeded: int
    failed: int
    canceled: int

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.canceled

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "running": self.running,
                "succeeded": self.succeeded, "failed": self.failed, "canceled": self.canceled}


@dataclass
class _MapInfo:
    """What a run job keeps of a map between batches (its inputs do not change meanwhile)."""

    inputs: dict[str, Any] = field(default_factory=dict)


def inline_node(plan: RunPlan, node_id: str) -> Node:
    """Return the map node's inline node spec as a ``Node`` (its id: the map's)."""
    spec = plan.nodes[node_id].config.get("node") or {}
    return Node(id=node_id, type=spec.get("type", ""), config=dict(spec.get("config") or {}),
                retry=spec.get("retry"), timeout_s=spec.get("timeout_s"))


FLOW_QUEUE = "flow"
"""``map_runs.queue`` of a map whose items are child runs (``flow``): no worker claims its
items; the store starts a child run per item and records the item when the child ends."""

FLOW_BATCH = 500
"""Most child runs one transaction starts for a map of a flow."""


def is_flow_map(plan: RunPlan, node_id: str) -> bool:
    """Whether the map's items run a flow each (``flow``) rather than an inline node."""
    return plan.nodes[node_id].config.get("flow") is not None


def item_queue(plan: RunPlan, node_id: str) -> str:
    """Return the RQ queue (``default``/``sandbox``) the map's items run on (``flow`` for a
    map of a flow: its items are child runs)."""
    if is_flow_map(plan, node_id):
        return FLOW_QUEUE
    return queue_for_type(inline_node(plan, node_id).type)


def is_map(plan: RunPlan, node_id: str) -> bool:
    return plan.nodes[node_id].type == "map"


def _max_attempts(spec: Node) -> int:
    return int((spec.retry or {}).get("max_attempts", defaults.DEFAULT_MAX_ATTEMPTS))


def progress_event(run_id: str, node_id: str, attempt: int,
                   progress: MapProgress) -> dict[str, Any]:
    """The map node's ``running`` event with its item counts (``items``)."""
    ev = event(run_id, node_id, NodeState.RUNNING, attempt)
    ev["items"] = progress.as_dict()
    return ev


class MapTransitions(NodeTransitions):
    """Expanding maps, item claims, item records, lost items, reads (mixed into ``RunStore``)."""

    pool: Pool
    max_output_bytes: int = defaults.MAX_OUTPUT_BYTES
    """Largest map output (the item outputs as one JSON list); a worker sets its setting."""

    # ------------------------------------------------------------------ expanding a map
    def map_opened(self, run_id: str, idx: int) -> bool:
        """Whether the map node ``idx`` was expanded before in this run (a retry reopens it)."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM map_runs WHERE execution_id=%s AND idx=%s",
                                (run_id, idx)).fetchone() is not None

    def expand_map(self, claim: Claim, values: Sequence[Any], *, follow: Follow | None,
                   take: Take, cache_key: str | None = None,
                   ) -> tuple[Effects, ItemBatch | None] | None:
        """Store one queued item per value and let go of the map node's lease, in one
        transaction; claim the first ``take`` items for ``follow``. ``None``: the lease of
        the map node was lost meanwhile. ``cache_key`` (the map node's ``cache``) goes with
        its result when it succeeds."""
        plan = claim.plan
        spec = inline_node(plan, claim.node_id)
        config = plan.nodes[claim.node_id].config
        queue = item_queue(plan, claim.node_id)
        with self.pool.connection() as conn, conn.transaction():
            if not self._hold_map(conn, claim):
                return None
            conn.execute(
                "INSERT INTO map_runs (execution_id, idx, attempt, token, state, queue, total,"
                " concurrency, max_attempts, cache_key)"
                " VALUES (%s,%s,%s,%s,'running',%s,%s,%s,%s,%s)",
                (claim.run_id, claim.idx, claim.attempt, claim.token, queue, len(values),
                 config.get("concurrency"), _max_attempts(spec), cache_key))
            with conn.cursor().copy(
                    "COPY map_items (execution_id, idx, item, state, value) FROM STDIN") as copy:
                for i, value in enumerate(values):
                    copy.write_row((claim.run_id, claim.idx, i, "queued",
                                    json.dumps(value, separators=(",", ":"))))
            progress = MapProgress(len(values), 0, 0, 0, 0)
            return self._opened(conn, claim, progress, queue, follow, take)

    def reopen_map(self, claim: Claim, *, follow: Follow | None, take: Take,
                   known: KnownOutputs | None = None,
                   ) -> tuple[Effects, ItemBatch | None, Claim | None] | None:
        """Retry a map that ran before in this run: its items that did not succeed are queued
        again (a new attempt each), those that did keep their output. ``None``: lease lost."""
        with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            if not self._hold_map(conn, claim):
                return None
            conn.execute(
                "UPDATE map_items SET state='queued', tries=1, due_at=NULL,"
                " attempt = attempt + CASE WHEN started_at IS NULL THEN 0 ELSE 1 END,"
                " lease_token=NULL, output=NULL, error=NULL, log=NULL,"
                " started_at=NULL, ended_at=NULL, duration_ms=NULL"
                " WHERE execution_id=%s AND idx=%s AND state IN ('failed', 'canceled', 'running')",
                (claim.run_id, claim.idx))
            row = conn.execute(
                "UPDATE map_runs SET attempt=%s, token=%s, state='running', stop=false,"
                " running=0, failed=0, canceled=0, touched_at=clock_timestamp()"
                " WHERE execution_id=%s AND idx=%s"
                " RETURNING total, queue, succeeded",
                (claim.attempt, claim.token, claim.run_id, claim.idx)).fetchone()
            assert row is not None  # map_opened said so; runs are never deleted while running
            progress = MapProgress(row["total"], 0, row["succeeded"], 0, 0)
            if progress.done == progress.total:  # nothing left to run: the map ends now
                effects = Effects()
                done = self._complete_map(conn, claim.run_id, claim.idx, claim.node_id,
                                          claim.attempt, claim.token, claim.plan, progress,
                                          effects, follow=follow, params=claim.params,
                                          known=known)
                return effects, None, done
            opened = self._opened(conn, claim, progress, row["queue"], follow, take)
            return opened[0], opened[1], None

    @staticmethod
    def _hold_map(conn: Conn, claim: Claim) -> bool:
        """Take the map node's row (its lease): it stays running, with no lease to expire."""
        return conn.execute(
            "UPDATE node_runs SET lease_until=NULL WHERE execution_id=%s AND idx=%s"
            " AND state='running' AND lease_token=%s RETURNING 1",
            (claim.run_id, claim.idx, claim.token)).fetchone() is not None

    def _opened(self, conn: Conn, claim: Claim, progress: MapProgress, queue: str,
                follow: Follow | None, take: Take) -> tuple[Effects, ItemBatch | None]:
        effects = Effects([], [progress_event(claim.run_id, claim.node_id, claim.attempt,
                                              progress)])
        if queue == FLOW_QUEUE:  # its items are child runs: start them here
            self._start_flow_items(conn, claim.run_id, claim.idx, claim.node_id, claim.plan,
                                   claim.params, effects)
            return effects, None
        batch = None
        if follow is not None and follow.queue == queue:
            batch = self._claim_items(conn, claim.run_id, claim.idx, claim.node_id, claim.plan,
                                      follow, take, claim.params, claim.inputs)
        left = progress.total - progress.done - (len(batch.items) if batch else 0)
        if left > 0:  # one run job per worker that may help (the broker caps it)
            effects.pushes.append(Push(claim.run_id, -1, 0, queue, ready=max(1, left // 64)))
        return effects, batch

    # ------------------------------------------------------------------ claiming items
    # Plans that do not depend on statistics (a fresh map_items table has none, and the
    # planner then joins a batch with every item of the map, over and over): items are taken
    # from the partial index of queued items and changed by their row addresses (a TID scan),
    # a recorded batch finds each item by its whole primary key (LATERAL: one index probe per
    # item). So a batch costs O(batch), whatever the size of the map or of the table.
    # Changing rows by address is safe here because nothing else rewrites an item while it is
    # locked for its claim or its record, except a competitor that then owns it (another
    # claim, the reclaimer): leases are renewed on map_leases, not on the items.
    _CLAIM_SQL = (
        "WITH m AS (SELECT concurrency, running FROM map_runs"
        "  WHERE execution_id=%(r)s AND idx=%(m)s AND state='running' AND NOT stop"
        "  AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running' FOR UPDATE),"
        " pick AS (SELECT i.ctid AS tid FROM map_items i"
        "  WHERE i.execution_id=%(r)s AND i.idx=%(m)s AND i.state='queued'"
        "  AND (i.due_at IS NULL OR i.due_at <= clock_timestamp())"
        "  AND EXISTS (SELECT 1 FROM m) ORDER BY i.item"
        "  LIMIT (SELECT CASE WHEN m.concurrency IS NULL THEN %(n)s"
        "   ELSE greatest(0, least(%(n)s, m.concurrency - m.running)) END FROM m)"
        "  FOR UPDATE OF i SKIP LOCKED),"
        " c AS (UPDATE map_items i SET state='running', lease_token=%(t)s, worker=%(w)s,"
        "  started_at=clock_timestamp(), ended_at=NULL"
        "  WHERE i.ctid = ANY(ARRAY(SELECT tid FROM pick))"
        "  RETURNING i.item, i.attempt, i.value),"
        " l AS (INSERT INTO map_leases (token, execution_id, idx, lease_until, worker, job)"
        "  SELECT %(t)s, %(r)s, %(m)s, clock_timestamp() + make_interval(secs => %(l)s),"
        "  %(w)s, %(j)s WHERE EXISTS (SELECT 1 FROM c)),"
        " u AS (UPDATE map_runs SET running = running + (SELECT count(*) FROM c),"
        "  touched_at=clock_timestamp()"
        "  WHERE execution_id=%(r)s AND idx=%(m)s AND EXISTS (SELECT 1 FROM c))"
        " SELECT * FROM c")

    def _claim_items(self, conn: Conn, run_id: str, idx: int, node_id: str, plan: RunPlan,
                     follow: Follow, take: Take, params: dict[str, Any],
                     inputs: dict[str, Any] | None) -> ItemBatch | None:
        n = take(inline_node(plan, node_id).type) if callable(take) else take
        if n <= 0:
            return None
        rows = conn.execute(self._CLAIM_SQL, {
            "r": run_id, "m": idx, "n": n, "t": follow.token, "l": follow.lease_s,
            "w": follow.worker, "j": follow.job}).fetchall()
        if not rows:
            return None
        if inputs is None:
            inputs = self._parent_outputs(conn, run_id, plan, node_id)
        items = sorted((ItemClaim(r["item"], r["attempt"], r["value"]) for r in rows),
                       key=lambda c: c.item)
        return ItemBatch(run_id, idx, node_id, follow.token, plan, params, inputs, items)

    def claim_items(self, run_id: str, follow: Follow, take: Take, *,
                    plan: RunPlan | None = None, params: dict[str, Any] | None = None,
                    inputs: dict[tuple[str, int], dict[str, Any]] | None = None,
                    ) -> ItemBatch | None:
        """Claim up to ``take`` queued items of a running map of the run on ``follow.queue``
        (the map with the lowest position first); ``None`` when none is ready.

        ``inputs`` keeps each map's inputs (its parents' outputs) across batches."""
        with self.pool.connection() as conn, conn.transaction():
            maps = conn.execute(
                "SELECT m.idx, e.workflow_id, e.version, e.inputs FROM map_runs m"
                " JOIN executions e ON e.id = m.execution_id"
                " WHERE m.execution_id=%s AND m.state='running' AND NOT m.stop AND m.queue=%s"
                " AND e.status='running' ORDER BY m.idx", (run_id, follow.queue)).fetchall()
            for m in maps:
                if plan is None:
                    plan = self.plan_for(conn, m["workflow_id"], m["version"])
                    params = m["inputs"] or {}
                key = (run_id, m["idx"])
                node_id = plan.order[m["idx"]]
                batch = self._claim_items(conn, run_id, m["idx"], node_id, plan, follow, take,
                                          params or {}, (inputs or {}).get(key))
                if batch is not None:
                    if inputs is not None:
                        inputs[key] = batch.inputs
                    return batch
        return None

    # ------------------------------------------------------------------ recording items
    _RECORD_SQL = (
        "WITH d AS (SELECT * FROM unnest(%(i)s::int[], %(a)s::int[], %(tk)s::text[],"
        "  %(s)s::text[], %(rt)s::bool[], %(dl)s::float8[], %(o)s::text[], %(e)s::text[],"
        "  %(lg)s::text[], %(du)s::float8[])"
        "  AS d(item, attempt, token, status, retry, delay, output, error, log, duration)),"
        # Each item's new state: a retryable failure with attempts left is queued again (a
        # lost worker adds LOST_RETRIES attempts, as for nodes); in a canceled run it ends.
        " j AS (SELECT d.*, i.tid, CASE WHEN d.status = 'succeeded' THEN 'succeeded'"
        "   WHEN d.status = 'canceled' OR x.status <> 'running' THEN 'canceled'"
        "   WHEN d.retry AND i.tries < %(max)s"
        "    + CASE WHEN d.status = 'lost' THEN %(lost)s ELSE 0 END THEN 'queued'"
        "   ELSE 'failed' END AS new_state"
        "  FROM d CROSS JOIN (SELECT status FROM executions WHERE id=%(r)s) x"
        "  CROSS JOIN LATERAL (SELECT i.ctid AS tid, i.tries FROM map_items i"
        "   WHERE i.execution_id=%(r)s AND i.idx=%(m)s AND i.item=d.item"
        "   AND i.state='running' AND i.lease_token=d.token FOR UPDATE) i),"
        # A batch whose items are all recorded lets go of its lease.
        " f AS (DELETE FROM map_leases WHERE token = ANY(%(done)s::text[])),"
        " u AS (UPDATE map_items i SET state=j.new_state,"
        "  attempt = i.attempt + (j.new_state = 'queued')::int,"
        "  tries = i.tries + (j.new_state = 'queued')::int,"
        "  due_at = CASE WHEN j.new_state = 'queued'"
        "   THEN clock_timestamp() + make_interval(secs => coalesce(j.delay, 0)) END,"
        "  lease_token=NULL, output=j.output::jsonb, error=j.error,"
        "  log=j.log, duration_ms=j.duration,"
        "  ended_at = CASE WHEN j.new_state <> 'queued' THEN clock_timestamp() END"
        "  FROM j WHERE i.ctid = j.tid AND i.ctid = ANY(ARRAY(SELECT tid FROM j))"
        "  RETURNING i.item, i.state, i.worker, i.started_at),"
        " l AS (INSERT INTO map_item_attempts (execution_id, idx, item, attempt, status, error,"
        "  log, worker, duration_ms, started_at)"
        "  SELECT %(r)s, %(m)s, u.item, j.attempt, j.status, j.error, j.log, u.worker,"
        "  j.duration, u.started_at FROM u JOIN j ON j.item = u.item"
        "  WHERE j.status <> 'succeeded' ON CONFLICT DO NOTHING)"
        " UPDATE map_runs SET running = running - (SELECT count(*) FROM u),"
        "  succeeded = succeeded + (SELECT count(*) FROM u WHERE u.state = 'succeeded'),"
        "  failed = failed + (SELECT count(*) FROM u WHERE u.state = 'failed'),"
        "  canceled = canceled + (SELECT count(*) FROM u WHERE u.state = 'canceled'),"
        "  stop = stop OR (%(stop_on_fail)s AND EXISTS (SELECT 1 FROM u WHERE u.state='failed')),"
        "  touched_at=clock_timestamp()"
        "  WHERE execution_id=%(r)s AND idx=%(m)s"
        "  RETURNING attempt, token, total, running, succeeded, failed, canceled, stop, queue,"
        "  (SELECT count(*) FROM u) AS recorded,"
        "  (SELECT min(coalesce(j.delay, 0)) FROM j WHERE j.new_state = 'queued') AS retry_in")
    # When the map stops (on_item_failure=fail and an item failed) or its run was canceled,
    # its queued items will never start: they end canceled (a retry of the run runs them
    # again). A new statement, so it sees a cancel that committed while the record waited.
    _STOP_SQL = (
        "WITH c AS (UPDATE map_items SET state='canceled', ended_at=clock_timestamp()"
        "  WHERE execution_id=%(r)s AND idx=%(m)s AND state='queued'"
        "  AND ((SELECT stop FROM map_runs WHERE execution_id=%(r)s AND idx=%(m)s)"
        "   OR (SELECT status FROM executions WHERE id=%(r)s) <> 'running')"
        "  RETURNING item)"
        " UPDATE map_runs SET canceled = canceled + (SELECT count(*) FROM c)"
        " WHERE execution_id=%(r)s AND idx=%(m)s"
        " RETURNING total, running, succeeded, failed, canceled")

    def record_items(self, batch: ItemBatch, results: Sequence[ItemResult], *,
                     follow: Follow | None, take: Take, known: KnownOutputs | None = None,
                     last: bool = True) -> tuple[Effects, ItemBatch | None, Claim | None]:
        """Record item outcomes in one transaction; claim the map's next ``take`` items for
        ``follow``; finish the map node when these were its last items (and then claim the
        run's next queued node for ``follow``, as a node's finish does).

        An item whose lease was lost meanwhile (another worker owns it now) is not recorded.
        Returns the effects, the next batch and the next node (either may be ``None``).
        ``last``: these are the batch's last items (its lease ends).
        """
        with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            return self._record_items(conn, batch.run_id, batch.idx, batch.node_id,
                                      batch.plan, batch.token, results, follow=follow,
                                      take=take, params=batch.params, inputs=batch.inputs,
                                      known=known, done=[batch.token] if last else [])

    def _record_items(self, conn: Conn, run_id: str, idx: int, node_id: str, plan: RunPlan,
                      token: str, results: Sequence[ItemResult], *, follow: Follow | None,
                      take: Take, params: dict[str, Any], inputs: dict[str, Any] | None,
                      known: KnownOutputs | None = None, done: Sequence[str] = (),
                      ) -> tuple[Effects, ItemBatch | None, Claim | None]:
        config = plan.nodes[node_id].config
        spec = inline_node(plan, node_id)
        outs = [r.outcome for r in results]
        row = conn.execute(self._RECORD_SQL, {
            "r": run_id, "m": idx,
            "i": [r.item for r in results], "a": [r.attempt for r in results],
            "tk": [r.token or token for r in results], "s": [o.status for o in outs],
            "rt": [o.retryable for o in outs],
            "dl": [o.retry_delay if o.retryable else None for o in outs],
            "o": [_output_text(o) for o in outs], "e": [o.error for o in outs],
            "lg": [o.log or None for o in outs], "du": [o.duration_ms for o in outs],
            "max": _max_attempts(spec), "lost": LOST_RETRIES,
            "stop_on_fail": config.get("on_item_failure", "fail") == "fail",
            "done": list(done),
        }).fetchone()
        stopped = conn.execute(self._STOP_SQL, {"r": run_id, "m": idx}).fetchone()
        effects = Effects()
        if row is None or stopped is None:
            return effects, None, None
        progress = MapProgress(stopped["total"], stopped["running"], stopped["succeeded"],
                               stopped["failed"], stopped["canceled"])
        attempt, map_token = row["attempt"], row["token"]
        if row["retry_in"] is not None:  # a retried item waits: a run job comes back for it
            effects.pushes.append(Push(run_id, -1, 0, row["queue"], ready=1,
                                       at=time.time() + float(row["retry_in"])))
        if progress.done == progress.total:
            effects.events.append(progress_event(run_id, node_id, attempt, progress))
            nxt = self._complete_map(conn, run_id, idx, node_id, attempt, map_token, plan,
                                     progress, effects, follow=follow, params=params,
                                     known=known)
            return effects, None, nxt
        if row["recorded"] or stopped["canceled"] != row["canceled"]:
            effects.events.append(progress_event(run_id, node_id, attempt, progress))
        batch = None
        if follow is not None and not row["stop"] and follow.queue == row["queue"]:
            batch = self._claim_items(conn, run_id, idx, node_id, plan, follow, take, params,
                                      inputs)
        return effects, batch, None

    # ------------------------------------------------------------------ the map's end
    def _complete_map(self, conn: Conn, run_id: str, idx: int, node_id: str, attempt: int,
                      token: str, plan: RunPlan, progress: MapProgress, effects: Effects, *,
                      follow: Follow | None, params: dict[str, Any] | None,
                      known: KnownOutputs | None) -> Claim | None:
        """Finish the map node from its items (in the caller's transaction): succeeded with
        the outputs in item order, or failed naming the failed items, or canceled."""
        config = plan.nodes[node_id].config
        keep_going = config.get("on_item_failure", "fail") == "continue"
        ended = conn.execute(
            "UPDATE map_runs SET state='done' WHERE execution_id=%s AND idx=%s"
            " RETURNING cache_key", (run_id, idx)).fetchone()
        run = conn.execute("SELECT status, inputs FROM executions WHERE id=%s",
                           (run_id,)).fetchone()
        summary = (f"{progress.total} items: {progress.succeeded} succeeded, "
                   f"{progress.failed} failed, {progress.canceled} canceled")
        outcome: Outcome
        if run is not None and run["status"] == RunStatus.CANCELED and progress.canceled:
            outcome = Outcome("canceled", error="run canceled", log=summary)
        elif progress.failed and not keep_going:
            failed = conn.execute(
                "SELECT item, error FROM map_items WHERE execution_id=%s AND idx=%s"
                " AND state='failed' ORDER BY item", (run_id, idx)).fetchall()
            shown = ", ".join(str(r["item"]) for r in failed[:50])
            more = f" and {len(failed) - 50} more" if len(failed) > 50 else ""
            unstarted = (f"; {progress.canceled} items not started" if progress.canceled
                         else "")
            outcome = Outcome(
                "failed", log=summary, retryable=False,
                error=(f"map {node_id!r}: {len(failed)} of {progress.total} items failed "
                       f"(items {shown}{more}){unstarted}; item {failed[0]['item']}: "
                       f"{failed[0]['error']}"))
        elif progress.canceled and not keep_going:
            outcome = Outcome("failed", log=summary, retryable=False,
                              error=f"map {node_id!r}: {progress.canceled} items were canceled")
        else:
            blob = conn.execute(
                "SELECT coalesce(jsonb_agg(CASE WHEN state = 'succeeded' THEN output"
                " ELSE jsonb_build_object('error', coalesce(error, state)) END ORDER BY item),"
                " '[]'::jsonb)::text AS out FROM map_items WHERE execution_id=%s AND idx=%s",
                (run_id, idx)).fetchone()
            text = blob["out"] if blob else "[]"
            limit = self.max_output_bytes
            if len(text) > limit:
                outcome = Outcome(
                    "failed", log=summary, retryable=False,
                    error=(f"map {node_id!r}: the item outputs are {len(text)} bytes of JSON, "
                           f"over the limit of {limit} (NEXUSFLOW_MAX_OUTPUT_BYTES)"))
            else:
                outcome = Outcome("succeeded", output=json.loads(text), output_json=text,
                                  log=summary, cache_key=ended["cache_key"] if ended else None)
        outcome.input = {"config": {k: v for k, v in config.items() if k != "node"},
                         "items": progress.total}
        finished = self._finish(conn, run_id, idx, node_id, attempt, token, plan, outcome,
                                follow=follow, params=params, known=known)
        if finished is None:
            return None
        finish_effects, nxt = finished
        effects.extend(finish_effects)
        return nxt

    # ------------------------------------------------------------------ items that are flows
    # A map of a flow (``flow`` instead of ``node``) runs each item as a child run of the
    # flow pinned for the map node when the run started (``subflows.py``), holding no worker:
    # its items are started here, in the transaction that opened the map or recorded an
    # item, within ``concurrency``; an item is ``running`` with ``child_run`` and the lease
    # token ``child:<run id>`` (no lease row: nothing expires while a child runs), and is
    # recorded when its child run ends (``CHILD_RUN_ENDED["item"]``, in the transaction that
    # ended the child), its output the child's sink outputs by node id. A retry of the run
    # resumes a failed item's child in place from its failed nodes (``start_child``).
    _FLOW_CLAIM_SQL = (
        "WITH m AS (SELECT concurrency, running FROM map_runs"
        "  WHERE execution_id=%(r)s AND idx=%(m)s AND state='running' AND NOT stop"
        "  AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running' FOR UPDATE),"
        " pick AS (SELECT i.item FROM map_items i"
        "  WHERE i.execution_id=%(r)s AND i.idx=%(m)s AND i.state='queued'"
        "  AND EXISTS (SELECT 1 FROM m) ORDER BY i.item"
        "  LIMIT (SELECT CASE WHEN m.concurrency IS NULL THEN %(n)s"
        "   ELSE greatest(0, least(%(n)s, m.concurrency - m.running)) END FROM m)"
        "  FOR UPDATE OF i SKIP LOCKED),"
        " c AS (UPDATE map_items i SET state='running', lease_token=%(t)s, worker=NULL,"
        "  started_at=clock_timestamp(), ended_at=NULL"
        "  FROM pick WHERE i.execution_id=%(r)s AND i.idx=%(m)s AND i.item = pick.item"
        "  RETURNING i.item, i.attempt, i.value),"
        " u AS (UPDATE map_runs SET running = running + (SELECT count(*) FROM c),"
        "  touched_at=clock_timestamp()"
        "  WHERE execution_id=%(r)s AND idx=%(m)s AND EXISTS (SELECT 1 FROM c))"
        " SELECT * FROM c ORDER BY item")

    def start_child(self, conn: Conn, parent_run: str, node_id: str, inputs: dict[str, Any],
                    *, item: int | None = None, resume: bool = True) -> tuple[str, Effects]:
        raise NotImplementedError  # FlowControl's

    def _start_flow_items(self, conn: Conn, run_id: str, idx: int, node_id: str,
                          plan: RunPlan, params: dict[str, Any], effects: Effects) -> None:
        """Start the child runs of the queued items of a map of a flow, within its
        ``concurrency``; an item whose child cannot start (its inputs do not render, the
        flow nests too deep) fails at once, naming the item."""
        from ..errors import NexusFlowError
        from ..expressions import render_templates

        config = plan.nodes[node_id].config
        template = config.get("inputs")
        inputs: dict[str, Any] | None = None
        starting = f"start:{run_id}:{idx}"
        while True:
            rows = conn.execute(self._FLOW_CLAIM_SQL, {
                "r": run_id, "m": idx, "n": FLOW_BATCH, "t": starting}).fetchall()
            if not rows:
                return
            if inputs is None and template is not None:
                inputs = self._parent_outputs(conn, run_id, plan, node_id)
            failed: list[ItemResult] = []
            for r in rows:
                where = f"node {node_id!r} item {r['item']}"
                try:
                    with conn.transaction():  # a savepoint: a child that cannot start is undone
                        names = {"inputs": inputs or {}, "params": params,
                                 "item": r["value"], "index": r["item"]}
                        child_params = ({"item": r["value"], "index": r["item"]}
                                        if template is None else render_templates(
                                            template, names, where=f"{where} /config/inputs"))
                        child, started = self.start_child(conn, run_id, node_id,
                                                          dict(child_params), item=r["item"])
                        conn.execute(
                            "UPDATE map_items SET lease_token=%s, child_run=%s"
                            " WHERE execution_id=%s AND idx=%s AND item=%s",
                            (f"child:{child}", child, run_id, idx, r["item"]))
                    effects.extend(started)
                except NexusFlowError as exc:
                    text = str(exc) if where in str(exc) else f"{where}: {exc}"
                    failed.append(ItemResult(r["item"], r["attempt"], Outcome(
                        "failed", error=text, retryable=False), starting))
            if not failed:
                counts = conn.execute(
                    "SELECT attempt, total, running, succeeded, failed, canceled FROM map_runs"
                    " WHERE execution_id=%s AND idx=%s", (run_id, idx)).fetchone()
                if counts is not None:
                    effects.events.append(progress_event(run_id, node_id, counts["attempt"],
                                                         MapProgress(counts["total"],
                                                                     counts["running"],
                                                                     counts["succeeded"],
                                                                     counts["failed"],
                                                                     counts["canceled"])))
                return
            recorded, _batch, _nxt = self._record_items(
                conn, run_id, idx, node_id, plan, starting, failed, follow=None, take=0,
                params=params, inputs=None)
            effects.extend(recorded)  # then start more, unless the failures stopped the map

    def child_item_ended(self, conn: Conn, parent_run: str, node_id: str, item: int,
                         child_run: str, status: str, output: dict[str, Any] | None,
                         error: str | None, effects: Effects) -> None:
        """Record the item whose child run ended (in the transaction that ended it), then
        start the map's next items; the map ends with its last item."""
        head = conn.execute("SELECT workflow_id, version, inputs FROM executions WHERE id=%s",
                            (parent_run,)).fetchone()
        if head is None:
            return
        plan = self.plan_for(conn, head["workflow_id"], head["version"])
        idx = plan.idx_of.get(node_id)
        if idx is None or not is_map(plan, node_id):
            return
        m = conn.execute("SELECT token, state FROM map_runs WHERE execution_id=%s AND idx=%s"
                         " FOR UPDATE", (parent_run, idx)).fetchone()
        token = f"child:{child_run}"
        row = conn.execute(
            "SELECT attempt, 1000 * extract(epoch FROM clock_timestamp() - started_at)"
            " AS ms FROM map_items WHERE execution_id=%s AND idx=%s AND item=%s"
            " AND state='running' AND lease_token=%s", (parent_run, idx, item, token)).fetchone()
        if m is None or m["state"] != "running" or row is None:
            return  # the map moved on (retried from an earlier node, or ended)
        if status == RunStatus.SUCCEEDED:
            outcome = Outcome("succeeded", output=output or {})
        else:
            outcome = Outcome("canceled" if status == RunStatus.CANCELED else "failed",
                              error=error, retryable=False)
        outcome.duration_ms = float(row["ms"]) if row["ms"] is not None else None
        params = head["inputs"] or {}
        recorded, _batch, _nxt = self._record_items(
            conn, parent_run, idx, node_id, plan, m["token"],
            [ItemResult(item, row["attempt"], outcome, token)], follow=None, take=0,
            params=params, inputs=None)
        effects.extend(recorded)
        self._start_flow_items(conn, parent_run, idx, node_id, plan, params, effects)

    # ------------------------------------------------------------------ leases of items
    def renew_items(self, tokens: Sequence[str], lease_s: float) -> dict[str, str | None]:
        """Extend the leases of item batches (one row each); return each token's run status,
        or ``None`` when the batch has no lease any more (recorded, or taken back)."""
        if not tokens:
            return {}
        with self.pool.connection(timeout=max(1.0, lease_s / 3)) as conn, conn.transaction():
            rows = conn.execute(
                "UPDATE map_leases l SET lease_until = clock_timestamp()"
                " + make_interval(secs => %s) WHERE token = ANY(%s)"
                " RETURNING token, (SELECT status FROM executions x WHERE x.id = l.execution_id)",
                (lease_s, list(tokens))).fetchall()
        found: dict[str, str | None] = dict.fromkeys(tokens)
        found.update({r["token"]: r["status"] for r in rows})
        return found

    def expired_items(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the item batches whose lease expired (their worker is gone)."""
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT token, execution_id::text AS run_id, idx FROM map_leases"
                " WHERE lease_until < now() ORDER BY lease_until LIMIT %s", (limit,)).fetchall()

    def reclaim_items(self, run_id: str, idx: int, token: str) -> Effects | None:
        """Record the running items of an expired batch as lost attempts (retried, or failed
        once out of attempts); the map ends if those were its last items."""
        with self.pool.connection() as conn, conn.transaction():
            lease = conn.execute(
                "SELECT 1 FROM map_leases WHERE token=%s AND lease_until < now()"
                " FOR UPDATE SKIP LOCKED", (token,)).fetchone()
            if lease is None:
                return None  # renewed, recorded, or being reclaimed by another pass
            head = conn.execute(
                "SELECT e.workflow_id, e.version, e.inputs, m.token FROM map_runs m"
                " JOIN executions e ON e.id = m.execution_id"
                " WHERE m.execution_id=%s AND m.idx=%s", (run_id, idx)).fetchone()
            assert head is not None  # a lease row goes with its map's row
            plan = self.plan_for(conn, head["workflow_id"], head["version"])
            rows = conn.execute(
                "SELECT item, attempt FROM map_items WHERE execution_id=%s AND idx=%s"
                " AND state='running' AND lease_token=%s ORDER BY item",
                (run_id, idx, token)).fetchall()
            lost = [ItemResult(r["item"], r["attempt"],
                               Outcome("lost", error=LOST_ERROR, retryable=True,
                                       retry_delay=0.0), token) for r in rows]
            effects, _batch, _nxt = self._record_items(
                conn, run_id, idx, plan.order[idx], plan, head["token"], lost, follow=None,
                take=0, params=head["inputs"] or {}, inputs=None, done=[token])
            effects.pushes.append(Push(run_id, -1, 0, item_queue(plan, plan.order[idx]),
                                       ready=1, force=True))
            return effects

    def stale_maps(self, grace_s: float, limit: int = 200) -> list[dict[str, Any]]:
        """Return running maps with items ready to run but no claim or record for
        ``grace_s`` (their run jobs may be gone from Redis); each is touched."""
        with self.pool.connection() as conn, conn.transaction():
            return conn.execute(
                "UPDATE map_runs m SET touched_at=clock_timestamp()"
                " WHERE (m.execution_id, m.idx) IN (SELECT s.execution_id, s.idx FROM map_runs s"
                "  WHERE s.state='running' AND NOT s.stop AND s.queue <> 'flow'"
                "  AND s.touched_at < now() - make_interval(secs => %s)"
                "  AND EXISTS (SELECT 1 FROM map_items i WHERE i.execution_id=s.execution_id"
                "   AND i.idx=s.idx AND i.state='queued'"
                "   AND (i.due_at IS NULL OR i.due_at <= now())) LIMIT %s)"
                " RETURNING m.execution_id::text AS run_id, m.queue",
                (grace_s, limit)).fetchall()

    # ------------------------------------------------------------------ run control
    @staticmethod
    def lock_maps(conn: Conn, run_id: str) -> None:
        """Take the rows of the running maps of a run and of its child runs, first thing in a
        cancel: the order in which a claim and a record take them too (map, then items, then
        the run), so a cancel never deadlocks with a batch; a batch in progress ends first."""
        conn.execute(
            "WITH RECURSIVE tree(id) AS (SELECT %s::uuid UNION"
            " SELECT e.id FROM executions e JOIN tree t ON e.parent_run = t.id)"
            " SELECT idx FROM map_runs WHERE execution_id IN (SELECT id FROM tree)"
            " AND state='running' ORDER BY execution_id, idx FOR UPDATE", (run_id,)).fetchall()

    def cancel_maps(self, conn: Conn, run_id: str, effects: Effects) -> int:
        """In a cancel's transaction: queued items end canceled; a map with no item running
        any more ends canceled now (the others end when their running items do). Return how
        many map nodes ended."""
        rows = conn.execute(
            "WITH c AS (UPDATE map_items SET state='canceled', ended_at=clock_timestamp()"
            "  WHERE execution_id=%s AND state='queued' RETURNING idx)"
            " UPDATE map_runs m SET canceled = m.canceled"
            " + (SELECT count(*) FROM c WHERE c.idx = m.idx)"
            " WHERE m.execution_id=%s AND m.state='running'"
            " RETURNING m.idx, m.attempt, m.total, m.running, m.succeeded, m.failed, m.canceled",
            (run_id, run_id)).fetchall()
        ended = 0
        for r in rows:
            progress = MapProgress(r["total"], r["running"], r["succeeded"], r["failed"],
                                   r["canceled"])
            if progress.done != progress.total:
                continue
            node = conn.execute(
                "UPDATE node_runs SET state='canceled', lease_token=NULL, error='run canceled',"
                " ended_at=clock_timestamp() WHERE execution_id=%s AND idx=%s"
                " AND state='running' RETURNING node_id", (run_id, r["idx"])).fetchone()
            conn.execute("UPDATE map_runs SET state='done' WHERE execution_id=%s AND idx=%s",
                         (run_id, r["idx"]))
            if node is not None:
                effects.events.append(progress_event(run_id, node["node_id"], r["attempt"],
                                                     progress))
                effects.events.append(event(run_id, node["node_id"], NodeState.CANCELED,
                                            r["attempt"]))
                ended += 1
        return ended

    @staticmethod
    def forget_maps(conn: Conn, run_id: str, idxs: Sequence[int]) -> None:
        """Drop the items of maps that run again from the start (a retry from a node)."""
        conn.execute("DELETE FROM map_runs WHERE execution_id=%s AND idx = ANY(%s)",
                     (run_id, list(idxs)))

    # ------------------------------------------------------------------ reads
    def map_progress(self, run_id: str) -> dict[int, dict[str, int]]:
        """Return the item counts of a run's maps, by map node position."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT idx, total, running, succeeded, failed, canceled FROM map_runs"
                " WHERE execution_id=%s", (run_id,)).fetchall()
        return {r["idx"]: MapProgress(r["total"], r["running"], r["succeeded"], r["failed"],
                                      r["canceled"]).as_dict() for r in rows}

    def map_items(self, run_id: str, idx: int, *, offset: int = 0, limit: int = 50,
                  state: str | None = None) -> dict[str, Any]:
        """Return one page of a map's items (index, state, attempts, output, error, timing)
        with the map's counts; ``state`` keeps only items in that state."""
        with self.pool.connection() as conn:
            head = conn.execute(
                "SELECT total, running, succeeded, failed, canceled FROM map_runs"
                " WHERE execution_id=%s AND idx=%s", (run_id, idx)).fetchone()
            if head is None:
                return {"total": 0, "counts": None, "offset": offset, "items": []}
            where = " AND state=%s" if state else ""
            args: list[Any] = [run_id, idx] + ([state] if state else [])
            rows = conn.execute(
                "SELECT item, state, attempt, value, output, error, worker, duration_ms,"
                " started_at, ended_at, child_run::text AS child_run FROM map_items"
                " WHERE execution_id=%s AND idx=%s"
                + where + " ORDER BY item OFFSET %s LIMIT %s",
                (*args, offset, limit)).fetchall()
            matching = head["total"] if not state else conn.execute(
                "SELECT count(*) AS n FROM map_items WHERE execution_id=%s AND idx=%s"
                " AND state=%s", (run_id, idx, state)).fetchone()["n"]  # type: ignore[index]
        counts = MapProgress(head["total"], head["running"], head["succeeded"], head["failed"],
                             head["canceled"]).as_dict()
        return {"total": matching, "counts": counts, "offset": offset,
                "items": [{"index": r["item"], "state": r["state"], "attempts": r["attempt"],
                           "item": r["value"], "output": r["output"], "error": r["error"],
                           "worker": r["worker"], "duration_ms": r["duration_ms"],
                           "started_at": _iso(r["started_at"]), "ended_at": _iso(r["ended_at"]),
                           **({"child_run": r["child_run"]} if r["child_run"] else {})}
                          for r in rows]}

    def map_item_attempts(self, run_id: str, idx: int, item: int) -> dict[str, Any] | None:
        """Return one item with its log and every attempt (those that did not succeed, then
        the latest), or ``None`` when the map has no such item."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT item, state, attempt, value, output, error, log, worker, duration_ms,"
                " started_at, ended_at, child_run::text AS child_run FROM map_items"
                " WHERE execution_id=%s AND idx=%s AND item=%s", (run_id, idx, item)).fetchone()
            if row is None:
                return None
            earlier = conn.execute(
                "SELECT attempt, status, error, log, worker, duration_ms, started_at, ended_at"
                " FROM map_item_attempts WHERE execution_id=%s AND idx=%s AND item=%s"
                " ORDER BY attempt", (run_id, idx, item)).fetchall()
        attempts = [{**a, "started_at": _iso(a["started_at"]), "ended_at": _iso(a["ended_at"])}
                    for a in earlier]
        if row["state"] in ("succeeded", "running", "queued") or not attempts or \
                attempts[-1]["attempt"] != row["attempt"]:
            attempts.append({"attempt": row["attempt"], "status": row["state"],
                             "error": row["error"], "log": row["log"], "worker": row["worker"],
                             "duration_ms": row["duration_ms"],
                             "started_at": _iso(row["started_at"]),
                             "ended_at": _iso(row["ended_at"])})
        return {"index": row["item"], "state": row["state"], "attempts": row["attempt"],
                "item": row["value"], "output": row["output"], "error": row["error"],
                "log": row["log"], "history": attempts,
                **({"child_run": row["child_run"]} if row["child_run"] else {})}


def _output_text(outcome: Outcome) -> str | None:
    if outcome.status != "succeeded":
        return None
    if outcome.output_json is not None:
        return outcome.output_json
    return json.dumps(outcome.output, separators=(",", ":"))


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _child_ended_item(store: Any, conn: Conn, end: Any, effects: Effects) -> None:
    """``CHILD_RUN_ENDED["item"]``: a map item's child run ended."""
    store.child_item_ended(conn, end.parent_run, end.parent_node, end.parent_item, end.run_id,
                           end.status, end.output, end.error, effects)


CHILD_RUN_ENDED["item"] = _child_ended_item

__all__ = ["FLOW_QUEUE", "ItemBatch", "ItemClaim", "ItemResult", "MapProgress",
           "MapTransitions", "inline_node", "is_flow_map", "is_map", "item_queue",
           "progress_event"]

"""Node state transitions: claim a node, renew its lease, record how an attempt ended.

``RunStore`` inherits these. Every change happens in one transaction, fenced by the lease
token, and returns the pushes and events to send to Redis *after* the commit. A child's
dependency decision takes the child's row lock (its edge counters), so two parents finishing
at once can never both miss (or both start) it. The finishing transaction also claims the
run's next queued node for the same worker, so a chain needs no RQ round trip per node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ..model.document import ERROR_RULES
from ..nodes import get_node_type
from ..transport.broker import Push, event
from .db import Conn, Pool, jsonb
from .plan import (
    FINAL_STATES,
    POOL_QUEUE,
    RUN,
    SKIP,
    SKIPPED,
    NodeState,
    RunStatus,
    decide_counts,
    edge_outcome,
    run_status,
    unrecovered,
)
from .runplan import RunPlan

LOST_RETRIES = 2
"""Extra attempts a node gets when its worker is lost (killed, host gone), beyond its retries."""


@dataclass
class Claim:
    """A node attempt this worker now holds the lease of."""

    run_id: str
    idx: int
    node_id: str
    attempt: int
    token: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    resume_state: dict[str, Any] | None
    plan: RunPlan
    max_attempts: int
    more: list[Claim] = field(default_factory=list)
    """Further ready nodes claimed with this one (same token): a batch, run one after
    another and recorded together (``finish_batch``)."""
    held: Sequence[int] = ()
    """Every node of the batch still held (their leases are renewed together)."""


BATCH_MAX = 64
"""Most ready nodes one worker claims at once (``Follow.take``)."""


@dataclass(frozen=True)
class Follow:
    """Who claims the run's next ready node in the finishing transaction (see ``finish``)."""

    token: str
    worker: str
    lease_s: float
    queue: str = "default"
    job: str | None = None
    take: int = 1
    """Up to how many ready nodes to claim at once (a batch); never more than a fair share,
    the queued nodes divided by ``workers``, so nodes that may take long still spread."""
    workers: int = 1
    """How many workers serve the queue (for the fair share)."""
    solo: Sequence[int] = ()
    """Nodes never claimed into a batch (maps: they open their items instead of running)."""


@dataclass
class Outcome:
    """How one attempt ended."""

    status: str  # succeeded | failed | canceled | lost | deferred
    output: Any = None
    branch: str | None = None
    error: str | None = None
    retryable: bool = False
    log: str = ""
    input: Any = None
    duration_ms: float | None = None
    retry_delay: float | None = None  # seconds before the next attempt, when retried
    defer_until: float | None = None
    resume_state: dict[str, Any] | None = None
    output_json: str | None = None
    """``output`` as JSON text, when the worker has it (to hand it on to children)."""
    wait: str | None = None
    """For status ``waiting``: what the node waits for (``Wait.kind``)."""
    cache_key: str | None = None
    """The node's cache key, when it ran and has a ``cache`` field (it may serve later runs)."""
    cached_from: dict[str, Any] | None = None
    """``{run_id, node_id}`` of the result this attempt was served from the cache."""
    pinned: bool = False
    """The node's pinned output stood in for running it (a run started with pins)."""


@dataclass
class Effects:
    """What to send to Redis after a transaction committed."""

    pushes: list[Push] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: Effects) -> None:
        self.pushes.extend(other.pushes)
        self.events.extend(other.events)


class KnownOutputs:
    """Outputs (as JSON text) of one run's succeeded nodes that a worker's job has seen.

    A child whose parents are all here needs no query for its inputs. It is safe for the
    life of one job's follow loop: a succeeded node of a running run never changes, and a
    run is only retried once it stopped, which ends every follow loop on it first. Kept as
    text, so every child gets its own copy, exactly as from PostgreSQL. Bounded in count
    and bytes; larger outputs are simply read from PostgreSQL again.
    """

    MAX_ITEM_BYTES = 256 * 1024
    MAX_TOTAL_BYTES = 32 * 1024 * 1024
    MAX_ITEMS = 20_000

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.total = 0

    def put(self, node_id: str, blob: str | None) -> None:
        if blob is None or node_id in self.values or len(blob) > self.MAX_ITEM_BYTES:
            return
        if len(self.values) >= self.MAX_ITEMS or self.total + len(blob) > self.MAX_TOTAL_BYTES:
            self.values.clear()
            self.total = 0
        self.values[node_id] = blob
        self.total += len(blob)

    def of(self, parents: Iterable[str]) -> dict[str, Any] | None:
        """Return the outputs of all ``parents``, or ``None`` when one is not known."""
        try:
            return {p: json.loads(self.values[p]) for p in parents}
        except KeyError:
            return None




class NodeTransitions:
    """Claims, lease renewals and finishing transactions (mixed into ``RunStore``)."""

    pool: Pool

    def plan_for(self, conn: Conn, workflow_id: Any, version: int) -> RunPlan:
        raise NotImplementedError  # RunStore's: plans are cached per process


    def claim(self, run_id: str, idx: int, attempt: int, token: str, worker: str,
              lease_s: float, job: str | None = None) -> Claim | None:
        """Take the lease of a queued (or due scheduled) node; ``None`` means nothing to do."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "WITH c AS (UPDATE node_runs SET state='running', lease_token=%(t)s,"
                " lease_until=clock_timestamp() + make_interval(secs => %(l)s),"
                " worker=%(w)s, job=%(j)s,"
                " started_at=clock_timestamp(), ended_at=NULL"
                " WHERE execution_id=%(r)s AND idx=%(i)s AND attempt=%(a)s"
                " AND (state='queued'"
                "  OR (state IN ('scheduled', 'waiting')"
                "      AND due_at <= now() + interval '250 ms'))"
                " AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running'"
                " RETURNING node_id, resume_state, max_attempts)"
                " SELECT c.*, e.workflow_id, e.version, e.inputs FROM c"
                " JOIN executions e ON e.id=%(r)s",
                {"t": token, "l": lease_s, "w": worker, "r": run_id, "i": idx, "a": attempt,
                 "j": job},
            ).fetchone()
            if row is None:
                return None
            plan = self.plan_for(conn, row["workflow_id"], row["version"])
            inputs = self._parent_outputs(conn, run_id, plan, row["node_id"])
        return Claim(run_id, idx, row["node_id"], attempt, token, row["inputs"] or {}, inputs,
                     row["resume_state"], plan, row["max_attempts"])

    @staticmethod
    def _parent_outputs(conn: Conn, run_id: str, plan: RunPlan,
                        node_id: str, known: KnownOutputs | None = None) -> dict[str, Any]:
        parents = plan.parents[node_id]
        if not parents:
            return {}
        if plan.nodes[node_id].trigger_rule in ERROR_RULES:
            return _handler_inputs(conn, run_id, plan, parents)
        if known is not None:
            found = known.of(parents)
            if found is not None:
                return found
        out = {}
        for r in conn.execute(
                "SELECT node_id, output::text AS blob FROM node_runs"
                " WHERE execution_id=%s AND idx = ANY(%s) AND state='succeeded'",
                (run_id, [plan.idx_of[p] for p in parents])):
            blob = r["blob"] if r["blob"] is not None else "null"
            out[r["node_id"]] = json.loads(blob)
            if known is not None:
                known.put(r["node_id"], blob)
        return out

    def renew(self, run_id: str, idx: int, token: str, lease_s: float,
              held: Sequence[int] = ()) -> str | None:
        """Extend a lease; return the run's status, or ``None`` when the lease is lost.

        ``held``: the other nodes of the batch, held under the same token until recorded,
        are renewed too. Waits at most a third of the lease for a connection, so a worker
        cut off from PostgreSQL notices in time to stop the node before the lease runs out.
        """
        idxs = sorted({idx, *held})
        with self.pool.connection(timeout=max(1.0, lease_s / 3)) as conn, conn.transaction():
            rows = conn.execute(
                "UPDATE node_runs SET lease_until=clock_timestamp() + make_interval(secs => %s)"
                " WHERE execution_id=%s AND idx = ANY(%s) AND state='running'"
                " AND lease_token=%s"
                " RETURNING idx, (SELECT status FROM executions WHERE id=%s) AS status",
                (lease_s, run_id, idxs, token, run_id),
            ).fetchall()
        for row in rows:
            if row["idx"] == idx:
                return row["status"]
        return None

    def renew_nodes(self, held: Sequence[tuple[str, int, str]],
                    lease_s: float) -> dict[tuple[str, int], str]:
        """Extend the leases of many nodes (``(run_id, idx, token)``) in one round trip;
        return ``{(run_id, idx): run status}`` for those still held (a missing one is lost).
        One statement per node, each binding the whole primary key, pipelined."""
        if not held:
            return {}
        out: dict[tuple[str, int], str] = {}
        with self.pool.connection(timeout=max(1.0, lease_s / 3)) as conn, conn.transaction():
            with conn.pipeline():
                cursors = [(r, i, conn.execute(
                    "UPDATE node_runs SET lease_until=clock_timestamp()"
                    " + make_interval(secs => %s)"
                    " WHERE execution_id=%s AND idx=%s AND state='running' AND lease_token=%s"
                    " RETURNING (SELECT status FROM executions WHERE id=%s) AS status",
                    (lease_s, r, i, t, r))) for r, i, t in held]
            for r, i, cur in cursors:
                row = cur.fetchone()
                if row is not None:
                    out[(r, i)] = row["status"]
        return out

    # ------------------------------------------------------------------ finishing an attempt
    def finish(self, claim: Claim, outcome: Outcome, *, follow: Follow | None = None,
               known: KnownOutputs | None = None) -> tuple[Effects, Claim | None] | None:
        """Record an attempt's outcome and decide successors, in one transaction.

        With ``follow``, the run's lowest queued node on ``follow.queue`` (often a child that
        just became ready) is claimed for the caller in the same transaction: it runs next in
        this worker, with no round trip through RQ; run jobs are pushed for the other ready
        nodes. Return ``None`` when the lease was lost meanwhile (another copy owns the node
        now). ``known`` holds the outputs this job has seen, so the next node's inputs
        usually need no query.
        """
        # Pipeline mode: statements whose results are not needed yet go out together, so a
        # node that succeeded costs two round trips (everything, then the commit).
        with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            return self._finish(conn, claim.run_id, claim.idx, claim.node_id, claim.attempt,
                                claim.token, claim.plan, outcome, follow=follow,
                                params=claim.params, known=known)
        return None  # the lease was lost: the transaction was rolled back

    def finish_batch(self, claims: Sequence[Claim], outcomes: Sequence[Outcome], *,
                     follow: Follow | None = None, known: KnownOutputs | None = None,
                     ) -> tuple[Effects, Claim | None]:
        """Record the attempts of a batch of nodes (claimed together, one token).

        Those that succeeded are recorded in one transaction: their rows and attempt logs,
        one counter update per child for all of them, one count-down, the claim of the next
        batch for ``follow``, and the commit: the per-node cost of a wide fan-out is a
        statement, not a transaction. The others (failed, retried, deferred, waiting,
        canceled) are recorded one by one as ``finish`` records them. Each record is fenced
        by its node's lease: a node whose lease was lost is not recorded (another worker has
        it now).
        """
        if len(claims) == 1:
            done = self.finish(claims[0], outcomes[0], follow=follow, known=known)
            return done if done is not None else (Effects(), None)
        effects = Effects()
        plain = [(c, o) for c, o in zip(claims, outcomes, strict=True)
                 if o.status == "succeeded"]
        for c, o in zip(claims, outcomes, strict=True):
            if o.status != "succeeded":
                done = self.finish(c, o, known=known)
                if done is not None:
                    effects.extend(done[0])
        if not plain:
            nxt = None
            if follow is not None:
                with self.pool.connection() as conn, conn.transaction():
                    nxt = self.claim_next(conn, claims[0].run_id, claims[0].plan, follow,
                                          claims[0].params, known=known)
                if nxt is not None:
                    effects.events.append(event(nxt.run_id, nxt.node_id, NodeState.RUNNING,
                                                nxt.attempt))
            return effects, nxt
        done = None  # stays so when the shared transaction is rolled back (psycopg.Rollback)
        with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            done = self._finish_successes(conn, plain, follow, known)
        if done is None:  # a lease of the batch was lost: record each on its own, fenced
            for c, o in plain:
                single = self.finish(c, o, known=known)
                if single is not None:
                    effects.extend(single[0])
            return effects, None
        effects.extend(done[0])
        return effects, done[1]

    def _finish_successes(self, conn: Conn, plain: Sequence[tuple[Claim, Outcome]],
                          follow: Follow | None, known: KnownOutputs | None,
                          ) -> tuple[Effects, Claim | None] | None:
        first = plain[0][0]
        run_id, plan, token = first.run_id, first.plan, first.token
        idxs = [c.idx for c, _ in plain]
        held_cur = conn.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM node_runs n"
            "  WHERE n.execution_id=%s AND n.idx = ANY(%s) AND n.state='running'"
            "  AND n.lease_token=%s FOR UPDATE) h) AS n,"
            " (SELECT status FROM executions WHERE id=%s) AS status",
            (run_id, idxs, token, run_id))
        self._record_successes(conn, run_id, token, plain)
        finished = [(c.node_id, NodeState.SUCCEEDED, o.branch) for c, o in plain]
        # The next batch is claimed before the counters are touched: the children's counter
        # rows and the run's count-down are the rows every worker of the run updates, so they
        # are sent last, and their locks are held only for those statements, one round trip
        # and the commit, not while this worker claims and sorts out the next batch.
        claim_cur = self._claim_send(conn, run_id, follow, with_run=False) if follow else None
        run = held_cur.fetchone()
        if run is None or run["n"] != len(plain):
            raise psycopg.Rollback()  # a lease was lost: nothing of this is written
        effects = Effects()
        if known is None:
            known = KnownOutputs()
        for c, o in plain:
            effects.events.append(event(run_id, c.node_id, NodeState.SUCCEEDED, c.attempt,
                                        duration_ms=o.duration_ms, cached_from=o.cached_from,
                                        pinned=o.pinned))
            known.put(c.node_id, o.output_json)
        if run["status"] != RunStatus.RUNNING:
            self._remaining_collect(conn, self._remaining_send(conn, run_id, len(plain)),
                                    run_id, effects)
            return effects, None
        nxt = None
        if claim_cur is not None and follow is not None:
            nxt = self._claim_collect(conn, claim_cur, run_id, plan, follow, first.params or {},
                                      known)
        counted = self._count_send(conn, run_id, plan, finished)
        remaining_cur = self._remaining_send(conn, run_id, len(plain))
        ready, skipped = self._decide_successors(conn, run_id, plan, finished, effects,
                                                 counted)
        if nxt is None and ready and follow is not None:
            # Nothing was queued before: follow a child that just became ready (a join).
            nxt = self.claim_next(conn, run_id, plan, follow, first.params, known=known)
        if nxt is not None:
            for c in (nxt, *nxt.more):
                effects.events.append(event(run_id, c.node_id, NodeState.RUNNING, c.attempt))
        taken = {c.node_id for c in (nxt, *nxt.more)} if nxt is not None else set()
        self._dispatch_ready(conn, run_id, plan, [(child, queue) for child, queue in ready
                                                  if child not in taken], effects)
        self._remaining_collect(conn, remaining_cur, run_id, effects)
        if skipped:
            self._finalize_if_done(conn, run_id, skipped, effects)
        pools = {p for p in (plan.nodes[c.node_id].pool for c, _ in plain) if p}
        if pools:  # their slots are free now (concurrency.py)
            self._grant_pools(conn, pools, effects)
        return effects, nxt

    def _finish(self, conn: Conn, run_id: str, idx: int, node_id: str,
                attempt: int, token: str, plan: RunPlan, outcome: Outcome, *,
                follow: Follow | None = None, params: dict[str, Any] | None = None,
                known: KnownOutputs | None = None,
                ) -> tuple[Effects, Claim | None] | None:
        done = self._finish_attempt(conn, run_id, idx, node_id, attempt, token, plan, outcome,
                                    follow=follow, params=params, known=known)
        pool = plan.nodes[node_id].pool
        if done is not None and pool:  # its slot may be free now: grant it (concurrency.py)
            self._grant_pools(conn, {pool}, done[0])
        return done

    def _finish_attempt(self, conn: Conn, run_id: str, idx: int, node_id: str,
                        attempt: int, token: str, plan: RunPlan, outcome: Outcome, *,
                        follow: Follow | None = None, params: dict[str, Any] | None = None,
                        known: KnownOutputs | None = None,
                        ) -> tuple[Effects, Claim | None] | None:
        # No run-wide lock: each child's edge counters are updated under the child's own row
        # lock, so exactly one finishing parent sees the last edge come in; and every state
        # change is conditional, so a cancel racing with this transaction loses nothing.
        held_cur = conn.execute(
            "SELECT n.tries, n.max_attempts, e.status FROM node_runs n"
            " JOIN executions e ON e.id = n.execution_id"
            " WHERE n.execution_id=%s AND n.idx=%s AND n.state='running' AND n.lease_token=%s"
            " FOR UPDATE OF n", (run_id, idx, token))
        if outcome.status == "succeeded":
            return self._finish_success(conn, held_cur, run_id, idx, node_id, attempt, token,
                                        plan, outcome, follow, params, known)
        effects = Effects()
        held = run = held_cur.fetchone()
        if held is None or run is None:
            return None
        # A run canceled meanwhile: the attempt that did not succeed ends canceled.
        status = "canceled" if run["status"] == RunStatus.CANCELED else outcome.status
        if status == "waiting":  # no worker waits: the run state resolves it (flowcontrol.py)
            return self._enter_waiting(conn, run_id, idx, node_id, attempt, token, plan,
                                       outcome, follow, params, known)
        due: float | None = None
        if status == "deferred":
            new_state = NodeState.SCHEDULED
            due = outcome.defer_until
        elif status == "canceled":
            new_state = NodeState.CANCELED
        else:
            limit = held["max_attempts"] + (LOST_RETRIES if status == "lost" else 0)
            if outcome.retryable and held["tries"] < limit and run["status"] == RunStatus.RUNNING:
                new_state = NodeState.SCHEDULED
                due = time.time() + (outcome.retry_delay or 0.0)
            else:
                new_state = NodeState.FAILED
        retrying = new_state == NodeState.SCHEDULED and status != "deferred"
        next_attempt = attempt + 1 if retrying else attempt
        self._record(conn, run_id, idx, node_id, attempt, token, new_state, next_attempt,
                     retrying, due, status, outcome)
        if new_state == NodeState.SCHEDULED:
            queue = queue_for_type(plan.nodes[node_id].type)
            effects.pushes.append(Push(run_id, idx, next_attempt, queue, at=due,
                                       wake=status == "deferred"))
            effects.events.append(event(run_id, node_id, NodeState.SCHEDULED, next_attempt,
                                        duration_ms=outcome.duration_ms, error=outcome.error))
            # The node waits without this worker: take the run's next queued node, if any.
            nxt = None
            if follow is not None and run["status"] == RunStatus.RUNNING:
                claim_cur = self._claim_send(conn, run_id, follow, with_run=False)
                nxt = self._follow_collect(conn, claim_cur, run_id, plan, follow, params, known,
                                           [], effects)
            return effects, nxt
        reused = new_state == NodeState.SUCCEEDED
        effects.events.append(event(run_id, node_id, new_state, attempt,
                                    duration_ms=outcome.duration_ms, error=outcome.error,
                                    cached_from=outcome.cached_from if reused else None,
                                    pinned=reused and outcome.pinned))
        if run["status"] != RunStatus.RUNNING:
            self._finalize_if_done(conn, run_id, 1, effects)
            return effects, None
        ready, skipped = self._decide_successors(
            conn, run_id, plan, [(node_id, new_state, outcome.branch)], effects)
        claim_cur = self._claim_send(conn, run_id, follow, with_run=False) if follow else None
        remaining_cur = self._remaining_send(conn, run_id, 1 + skipped)
        nxt = self._follow_collect(conn, claim_cur, run_id, plan, follow, params, known,
                                   ready, effects)
        self._remaining_collect(conn, remaining_cur, run_id, effects)
        return effects, nxt

    def _finish_success(self, conn: Conn, held_cur: Any, run_id: str, idx: int,
                        node_id: str, attempt: int, token: str, plan: RunPlan,
                        outcome: Outcome, follow: Follow | None,
                        params: dict[str, Any] | None, known: KnownOutputs | None,
                        ) -> tuple[Effects, Claim | None]:
        """The common case, in one round trip before the commit: the lease check, the
        outcome, the children's counters (queueing those that became ready), the claim of
        the run's next queued node and the count-down all go out together, because none
        needs the row first. A lost lease rolls all of it back."""
        self._record(conn, run_id, idx, node_id, attempt, token, NodeState.SUCCEEDED,
                     attempt, False, None, "succeeded", outcome)
        finished = [(node_id, NodeState.SUCCEEDED, outcome.branch)]
        counted = self._count_send(conn, run_id, plan, finished)
        claim_cur = self._claim_send(conn, run_id, follow, with_run=False) if follow else None
        remaining_cur = self._remaining_send(conn, run_id, 1)
        run = held_cur.fetchone()
        if run is None:
            raise psycopg.Rollback()  # the lease was lost: nothing of this is written
        effects = Effects()
        effects.events.append(event(run_id, node_id, NodeState.SUCCEEDED, attempt,
                                    duration_ms=outcome.duration_ms,
                                    cached_from=outcome.cached_from, pinned=outcome.pinned))
        if known is None:
            known = KnownOutputs()
        known.put(node_id, outcome.output_json)
        if run["status"] != RunStatus.RUNNING:  # counters, queueing and claim were skipped
            self._remaining_collect(conn, remaining_cur, run_id, effects)
            return effects, None
        ready, skipped = self._decide_successors(conn, run_id, plan, finished, effects,
                                                 counted)
        nxt = self._follow_collect(conn, claim_cur, run_id, plan, follow, params, known,
                                   ready, effects)
        # Skipped children were not counted down yet, so this cannot reach zero if any was.
        self._remaining_collect(conn, remaining_cur, run_id, effects)
        if skipped:
            self._finalize_if_done(conn, run_id, skipped, effects)
        return effects, nxt

    def _follow_collect(self, conn: Conn, claim_cur: Any, run_id: str,
                        plan: RunPlan, follow: Follow | None, params: dict[str, Any] | None,
                        known: KnownOutputs | None, ready: list[tuple[str, str]],
                        effects: Effects) -> Claim | None:
        """Take the claimed next node (if any); push run jobs for the other ready nodes."""
        nxt = None
        if claim_cur is not None and follow is not None:
            nxt = self._claim_collect(conn, claim_cur, run_id, plan, follow, params or {},
                                      known)
            if nxt is not None:
                for c in (nxt, *nxt.more):
                    effects.events.append(event(run_id, c.node_id, NodeState.RUNNING,
                                                c.attempt))
        taken = {c.node_id for c in (nxt, *nxt.more)} if nxt is not None else set()
        self._dispatch_ready(conn, run_id, plan, [(child, queue) for child, queue in ready
                                                  if child not in taken], effects)
        return nxt

    def _dispatch_ready(self, conn: Conn, run_id: str, plan: RunPlan,
                        ready: list[tuple[str, str]], effects: Effects) -> None:
        """Push run jobs for ``ready`` (node, queue) pairs; a pooled node waits for a slot of
        its pool instead (queue ``pool``: no run job claims it until it is granted one)."""
        pools = {plan.nodes[n].pool for n, q in ready if q == POOL_QUEUE}
        self._push_ready(run_id, [(n, q) for n, q in ready if q != POOL_QUEUE], effects)
        if pools:
            self._grant_pools(conn, {p for p in pools if p}, effects)

    def _grant_pools(self, conn: Conn, pools: Iterable[str], effects: Effects) -> None:
        raise NotImplementedError  # RunStore's (concurrency.py)

    @staticmethod
    def _push_ready(run_id: str, ready: list[tuple[str, str]], effects: Effects) -> None:
        """Push run jobs for ``ready`` (node, queue) pairs: one push per queue."""
        counts: dict[str, int] = {}
        for _node, queue in ready:
            counts[queue] = counts.get(queue, 0) + 1
        effects.pushes.extend(Push(run_id, -1, 0, q, ready=n) for q, n in counts.items())

    @staticmethod
    def _record(conn: Conn, run_id: str, idx: int, node_id: str, attempt: int,
                token: str, new_state: str, next_attempt: int, retrying: bool,
                due: float | None, status: str, outcome: Outcome) -> None:
        """Send the node's new state and its attempt log row (one statement, no result)."""
        conn.execute(
            "WITH u AS (UPDATE node_runs SET state=%(s)s, attempt=%(na)s, tries=tries+%(inc)s,"
            " lease_token=NULL, lease_until=NULL, output=%(o)s, branch=%(b)s, error=%(e)s,"
            " resume_state=%(rs)s, due_at=to_timestamp(%(due)s), duration_ms=%(d)s,"
            " cache_key=%(ck)s, cached_from=%(cf)s, pinned=%(pin)s,"
            " enqueued_at=CASE WHEN %(due)s::float8 IS NULL THEN enqueued_at"
            "  ELSE clock_timestamp() END,"
            " ended_at=CASE WHEN %(fin)s THEN clock_timestamp() ELSE ended_at END"
            " WHERE execution_id=%(r)s AND idx=%(i)s AND state='running' AND lease_token=%(t)s"
            " RETURNING worker, started_at)"
            " INSERT INTO node_logs (execution_id, node_id, attempt, status, input, output,"
            " error, log, worker, duration_ms, started_at, cached_from, pinned)"
            " SELECT %(r)s, %(n)s, %(a)s, %(ls)s, %(in)s, %(o)s, %(e)s, %(log)s, u.worker,"
            " %(d)s, u.started_at, %(cf)s, %(pin)s FROM u WHERE %(logged)s"
            " ON CONFLICT (execution_id, node_id, attempt) DO NOTHING",
            {"s": new_state, "na": next_attempt, "inc": 1 if retrying else 0,
             "o": jsonb(outcome.output) if new_state == NodeState.SUCCEEDED else None,
             "b": outcome.branch, "e": outcome.error,
             "rs": jsonb(outcome.resume_state) if outcome.resume_state is not None else None,
             "due": due, "d": outcome.duration_ms, "fin": new_state in FINAL_STATES,
             "r": run_id, "i": idx, "t": token, "n": node_id, "a": attempt, "ls": status,
             "in": jsonb(outcome.input), "log": outcome.log or None,
             "logged": status not in ("deferred", "waiting"),
             "ck": outcome.cache_key if new_state == NodeState.SUCCEEDED else None,
             "cf": jsonb(outcome.cached_from) if outcome.cached_from is not None else None,
             "pin": outcome.pinned},
        )

    # The successes of a batch in one statement: what ``_record`` sends for one node that
    # succeeded, for every node of the batch at once (one plan and one execution instead of
    # one per node; the JSON goes as the text the worker already made). Each row stays fenced
    # by its own lease (state running, the batch's token); the caller's count of held rows
    # rolls the whole transaction back when one was lost.
    _RECORD_MANY_SQL = (
        "WITH d AS (SELECT * FROM unnest(%(i)s::int[], %(n)s::text[], %(a)s::int[],"
        " %(o)s::text[], %(b)s::text[], %(e)s::text[], %(rs)s::text[], %(d)s::float8[],"
        " %(ck)s::text[], %(cf)s::text[], %(pin)s::bool[], %(in)s::text[], %(log)s::text[])"
        " AS d(idx, node_id, attempt, output, branch, error, resume_state, duration_ms,"
        " cache_key, cached_from, pinned, input, log)),"
        " u AS (UPDATE node_runs n SET state='succeeded', attempt=d.attempt,"
        " lease_token=NULL, lease_until=NULL, output=d.output::jsonb, branch=d.branch,"
        " error=d.error, resume_state=d.resume_state::jsonb, due_at=NULL,"
        " duration_ms=d.duration_ms, cache_key=d.cache_key, cached_from=d.cached_from::jsonb,"
        " pinned=d.pinned, ended_at=clock_timestamp()"
        " FROM d WHERE n.execution_id=%(r)s AND n.idx = ANY(%(i)s::int[]) AND n.idx = d.idx"
        " AND n.state='running' AND n.lease_token=%(t)s"
        " RETURNING n.idx, n.worker, n.started_at)"
        " INSERT INTO node_logs (execution_id, node_id, attempt, status, input, output,"
        " error, log, worker, duration_ms, started_at, cached_from, pinned)"
        " SELECT %(r)s, d.node_id, d.attempt, 'succeeded', d.input::jsonb, d.output::jsonb,"
        " d.error, d.log, u.worker, d.duration_ms, u.started_at, d.cached_from::jsonb,"
        " d.pinned FROM u JOIN d ON d.idx = u.idx"
        " ON CONFLICT (execution_id, node_id, attempt) DO NOTHING")

    @classmethod
    def _record_successes(cls, conn: Conn, run_id: str, token: str,
                          plain: Sequence[tuple[Claim, Outcome]]) -> None:
        """Send the rows and attempt logs of a batch's nodes that succeeded (one statement,
        no result): the same record ``_record`` makes for each of them."""
        def text(value: Any) -> str | None:
            return None if value is None else json.dumps(value)

        conn.execute(cls._RECORD_MANY_SQL, {
            "r": run_id, "t": token,
            "i": [c.idx for c, _ in plain], "n": [c.node_id for c, _ in plain],
            "a": [c.attempt for c, _ in plain],
            "o": [o.output_json if o.output_json is not None else json.dumps(o.output)
                  for _, o in plain],
            "b": [o.branch for _, o in plain], "e": [o.error for _, o in plain],
            "rs": [text(o.resume_state) for _, o in plain],
            "d": [o.duration_ms for _, o in plain],
            "ck": [o.cache_key for _, o in plain],
            "cf": [text(o.cached_from) for _, o in plain],
            "pin": [o.pinned for _, o in plain],
            "in": [json.dumps(o.input) for _, o in plain],
            "log": [o.log or None for _, o in plain]})

    # Whether a pending child is ready once its counters are updated: the RUN case of
    # ``plan.decide_counts`` in SQL (a test checks the two agree on every input), over the
    # new counts. Deciding in the same statement that counts saves a statement and a round
    # trip per node.
    _READY = (
        "(n.state = 'pending' AND ("
        " (d.rule = 'one_success' AND {s} > 0)"
        " OR (d.rule = 'one_failed' AND {f} > 0)"
        " OR ({d} = n.n_parents AND (d.rule = 'all_done'"
        "  OR (d.rule = 'none_failed' AND {f} = 0)"
        "  OR (d.rule = 'all_failed' AND {f} = n.n_parents)"
        "  OR (d.rule = 'all_success' AND {s} = n.n_parents)))))"
    ).format(d="(n.n_done + d.cnt)",
             s="(n.n_success + CASE WHEN %(o)s = 'success' THEN d.cnt ELSE 0 END)",
             f="(n.n_failed + CASE WHEN %(o)s = 'failed' THEN d.cnt ELSE 0 END)")

    _COUNT_SET = (
        "UPDATE node_runs n SET n_done = n.n_done + d.cnt,"
        " n_success = n.n_success + CASE WHEN %(o)s = 'success' THEN d.cnt ELSE 0 END,"
        " n_failed = n.n_failed + CASE WHEN %(o)s = 'failed' THEN d.cnt ELSE 0 END,"
        " state = CASE WHEN " + _READY + " THEN 'queued' ELSE n.state END,"
        " attempt = CASE WHEN " + _READY + " THEN n.attempt + 1 ELSE n.attempt END,"
        " tries = CASE WHEN " + _READY + " THEN 1 ELSE n.tries END,"
        " enqueued_at = CASE WHEN " + _READY + " THEN clock_timestamp()"
        "  ELSE n.enqueued_at END")
    _COUNT_WHERE = (
        " AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running'"
        " RETURNING n.node_id, n.state, n.attempt, n.queue, n.n_parents, n.n_done,"
        " n.n_success, n.n_failed, CASE WHEN %(o)s = 'success' THEN d.cnt ELSE 0 END AS s_cnt,"
        " CASE WHEN %(o)s = 'failed' THEN d.cnt ELSE 0 END AS f_cnt")
    # One child: every primary key column is bound, so the plan is a unique-index lookup
    # whatever the statistics say (a fresh table has none, and with an array of children the
    # planner may read all of the run's rows instead).
    _COUNT_ONE_SQL = (
        _COUNT_SET + " FROM (SELECT %(cnt)s::int AS cnt, %(rule)s::text AS rule) d"
        " WHERE n.execution_id=%(r)s AND n.idx=%(i)s" + _COUNT_WHERE)
    _COUNT_MANY_SQL = (
        _COUNT_SET + " FROM (SELECT i, rule, count(*) AS cnt"
        "  FROM unnest(%(idx)s::int[], %(rules)s::text[]) AS u(i, rule) GROUP BY i, rule) d"
        " WHERE n.execution_id=%(r)s AND n.idx = ANY(%(idx)s) AND n.idx = d.i" + _COUNT_WHERE)
    COUNT_ONE_BY_ONE = 16
    """Up to this many children of one outcome are counted one statement each (pipelined)."""

    def _count_send(self, conn: Conn, run_id: str, plan: RunPlan,
                    finished: Sequence[tuple[str, str, str | None]]) -> list[Any]:
        """Send the edge counter updates of ``finished`` parents' children (while running);
        a child that becomes ready is queued by the same statement."""
        by_outcome: dict[str, dict[int, int]] = {}
        for parent, state, branch in finished:
            for child, handle in plan.children[parent]:
                outcome = edge_outcome(state, branch, handle)
                counts = by_outcome.setdefault(outcome or SKIPPED, {})
                counts[plan.idx_of[child]] = counts.get(plan.idx_of[child], 0) + 1
        cursors: list[Any] = []
        for o, counts in by_outcome.items():
            if len(counts) <= self.COUNT_ONE_BY_ONE:
                cursors.extend(conn.execute(self._COUNT_ONE_SQL, {
                    "o": o, "r": run_id, "i": i, "cnt": cnt,
                    "rule": plan.nodes[plan.order[i]].trigger_rule}) for i, cnt in counts.items())
            else:
                idxs = [i for i, cnt in counts.items() for _ in range(cnt)]
                cursors.append(conn.execute(self._COUNT_MANY_SQL, {
                    "o": o, "idx": idxs, "r": run_id,
                    "rules": [plan.nodes[plan.order[i]].trigger_rule for i in idxs]}))
        return cursors

    def _decide_successors(self, conn: Conn, run_id: str, plan: RunPlan,
                           finished: Sequence[tuple[str, str, str | None]], effects: Effects,
                           counted: list[Any] | None = None,
                           ) -> tuple[list[tuple[str, str]], int]:
        """Count each finished parent into its children; return the children that became
        ready (queued now, with their queue) and how many were skipped.

        Each child keeps counters of its incoming edges' outcomes, so a decision costs
        O(children) however many parents a child has. Skips propagate in the same pass.
        ``counted`` are the cursors of a first round already sent (``_count_send``).
        """
        ready: list[tuple[str, str]] = []
        skipped_total = 0
        while finished:
            cursors = counted if counted is not None else self._count_send(conn, run_id, plan,
                                                                            finished)
            counted = None
            to_skip: list[str] = []
            late: list[str] = []
            for cur in cursors:
                for r in cur.fetchall():
                    rule = plan.nodes[r["node_id"]].trigger_rule
                    if r["state"] == NodeState.QUEUED and _became_ready(rule, r):
                        ready.append((r["node_id"], r["queue"]))
                        effects.events.append(event(run_id, r["node_id"], NodeState.QUEUED,
                                                    r["attempt"]))
                    elif r["state"] == NodeState.PENDING:
                        decided = decide_counts(rule, r["n_parents"], r["n_done"],
                                                r["n_success"], r["n_failed"])
                        if decided == SKIP:
                            to_skip.append(r["node_id"])
                        elif decided == RUN:  # only if the SQL above disagreed
                            late.append(r["node_id"])
            ready.extend(self._queue(conn, run_id, plan, late, effects))
            finished = []
            if to_skip:
                conn.execute(
                    "UPDATE node_runs SET state='skipped', ended_at=clock_timestamp()"
                    " WHERE execution_id=%s AND idx = ANY(%s) AND state='pending'",
                    (run_id, [plan.idx_of[c] for c in to_skip]),
                )
                for child in to_skip:
                    effects.events.append(event(run_id, child, NodeState.SKIPPED, 0))
                skipped_total += len(to_skip)
                finished = [(c, NodeState.SKIPPED, None) for c in to_skip]
        return ready, skipped_total

    _QUEUE_SQL = (
        "UPDATE node_runs SET state='queued', attempt=attempt+1, tries=1,"
        " enqueued_at=clock_timestamp() WHERE execution_id=%s AND idx = ANY(%s)"
        " AND state='pending' RETURNING node_id, attempt, queue")

    def _queue(self, conn: Conn, run_id: str, plan: RunPlan, nodes: list[str],
               effects: Effects) -> list[tuple[str, str]]:
        """Make pending ``nodes`` queued; return the (node, queue) pairs that were."""
        if not nodes:
            return []
        ready = []
        for r in conn.execute(self._QUEUE_SQL, (run_id, [plan.idx_of[c] for c in nodes])):
            ready.append((r["node_id"], r["queue"]))
            effects.events.append(event(run_id, r["node_id"], NodeState.QUEUED, r["attempt"]))
        return ready

    @staticmethod
    def _claim_send(conn: Conn, run_id: str, follow: Follow, *,
                    with_run: bool) -> Any:
        if follow.take > 1:
            return NodeTransitions._claim_batch_send(conn, run_id, follow, with_run=with_run)
        return conn.execute(
            "WITH c AS (UPDATE node_runs SET state='running', lease_token=%(t)s,"
            " lease_until=clock_timestamp() + make_interval(secs => %(l)s),"
            " worker=%(w)s, job=%(j)s, started_at=clock_timestamp(), ended_at=NULL"
            " WHERE execution_id=%(r)s AND idx = (SELECT idx FROM node_runs"
            "  WHERE execution_id=%(r)s AND state='queued' AND queue=%(q)s"
            "  ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running'"
            " RETURNING idx, node_id, attempt, resume_state, max_attempts)"
            " SELECT c.*" + (", e.workflow_id, e.version, e.inputs" if with_run else "")
            + " FROM c" + (" JOIN executions e ON e.id=%(r)s" if with_run else ""),
            {"t": follow.token, "l": follow.lease_s, "w": follow.worker, "j": follow.job,
             "r": run_id, "q": follow.queue},
        )

    # A batch: the run's lowest queued node, and when that is not a solo node (a map), more
    # of the lowest queued nodes that are not solo, up to ``take`` and a fair share (the
    # queued nodes, counted up to take x workers, divided by the workers).
    _CLAIM_BATCH_SQL = (
        "WITH f AS (SELECT idx FROM node_runs"
        "  WHERE execution_id=%(r)s AND state='queued' AND queue=%(q)s"
        "  ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED),"
        " b AS (SELECT idx FROM node_runs"
        "  WHERE execution_id=%(r)s AND state='queued' AND queue=%(q)s"
        "  AND NOT (idx = ANY(%(solo)s::int[]))"
        "  AND NOT EXISTS (SELECT 1 FROM f WHERE f.idx = ANY(%(solo)s::int[]))"
        "  ORDER BY idx LIMIT (SELECT GREATEST(1, LEAST(%(n)s,"
        "   ceil(count(*)::float8 / %(k)s)::int)) FROM (SELECT 1 FROM node_runs"
        "   WHERE execution_id=%(r)s AND state='queued' AND queue=%(q)s LIMIT %(n)s * %(k)s) q)"
        "  FOR UPDATE SKIP LOCKED),"
        " c AS (UPDATE node_runs SET state='running', lease_token=%(t)s,"
        " lease_until=clock_timestamp() + make_interval(secs => %(l)s),"
        " worker=%(w)s, job=%(j)s, started_at=clock_timestamp(), ended_at=NULL"
        " WHERE execution_id=%(r)s AND idx = ANY(ARRAY(SELECT idx FROM f UNION"
        "  SELECT idx FROM b))"
        " AND (SELECT x.status FROM executions x WHERE x.id=%(r)s) = 'running'"
        " RETURNING idx, node_id, attempt, resume_state, max_attempts)"
        " SELECT c.*{run} FROM c{join} ORDER BY c.idx")

    @staticmethod
    def _claim_batch_send(conn: Conn, run_id: str, follow: Follow, *, with_run: bool) -> Any:
        sql = NodeTransitions._CLAIM_BATCH_SQL.format(
            run=", e.workflow_id, e.version, e.inputs" if with_run else "",
            join=" JOIN executions e ON e.id=%(r)s" if with_run else "")
        return conn.execute(sql, {
            "t": follow.token, "l": follow.lease_s, "w": follow.worker, "j": follow.job,
            "r": run_id, "q": follow.queue, "n": min(follow.take, BATCH_MAX),
            "k": max(1, follow.workers), "solo": list(follow.solo)})

    def _claim_collect(self, conn: Conn, cur: Any, run_id: str,
                       plan: RunPlan | None, follow: Follow, params: dict[str, Any] | None,
                       known: KnownOutputs | None = None) -> Claim | None:
        rows = cur.fetchall()
        if not rows:
            return None
        if plan is None:
            plan = self.plan_for(conn, rows[0]["workflow_id"], rows[0]["version"])
            params = rows[0]["inputs"] or {}
        claims = [Claim(run_id, row["idx"], row["node_id"], row["attempt"], follow.token,
                        params or {}, self._parent_outputs(conn, run_id, plan, row["node_id"],
                                                           known),
                        row["resume_state"], plan, row["max_attempts"]) for row in rows]
        first = claims[0]
        first.more = claims[1:]
        if first.more:
            held = [c.idx for c in claims]
            for c in claims:
                c.held = held
        return first

    def claim_next(self, conn: Conn, run_id: str, plan: RunPlan | None,
                   follow: Follow, params: dict[str, Any] | None = None, *,
                   known: KnownOutputs | None = None) -> Claim | None:
        """Claim the next queued node of a run on ``follow.queue`` (inside a transaction)."""
        cur = self._claim_send(conn, run_id, follow, with_run=plan is None)
        return self._claim_collect(conn, cur, run_id, plan, follow, params, known)

    @staticmethod
    def _remaining_send(conn: Conn, run_id: str, newly_final: int) -> Any:
        return conn.execute(
            "UPDATE executions SET remaining = remaining - %s WHERE id=%s"
            " RETURNING remaining, status", (newly_final, run_id))

    def _remaining_collect(self, conn: Conn, cur: Any, run_id: str,
                           effects: Effects) -> None:
        row = cur.fetchone()
        if row["remaining"] > 0:
            return
        states = [r["state"] for r in conn.execute(
            "SELECT DISTINCT state FROM node_runs WHERE execution_id=%s", (run_id,))]
        final = RunStatus.CANCELED if row["status"] == RunStatus.CANCELED else run_status(states)
        if final == RunStatus.FAILED and not self._failures_unrecovered(conn, run_id):
            final = RunStatus.SUCCEEDED  # every failure was dealt with by a recovering handler
        conn.execute(
            "UPDATE executions SET status=%s, ended_at=clock_timestamp() WHERE id=%s",
            (final, run_id),
        )
        effects.events.append(event(run_id, None, final))
        self._run_closed(conn, run_id, final, effects)

    def _failures_unrecovered(self, conn: Conn, run_id: str) -> list[str]:
        """Return the failed nodes of a run that no succeeded ``recovers`` child dealt with."""
        head = conn.execute("SELECT workflow_id, version FROM executions WHERE id=%s",
                            (run_id,)).fetchone()
        assert head is not None  # the run being closed
        plan = self.plan_for(conn, head["workflow_id"], head["version"])
        rows = conn.execute(
            "SELECT node_id, state FROM node_runs WHERE execution_id=%s"
            " AND state IN ('failed', 'succeeded')" + ("" if plan.recoverers else
                                                      " AND state = 'failed'"),
            (run_id,)).fetchall()
        return unrecovered([r["node_id"] for r in rows if r["state"] == NodeState.FAILED],
                           [r["node_id"] for r in rows if r["state"] == NodeState.SUCCEEDED],
                           plan.recoverers)

    def _run_closed(self, conn: Conn, run_id: str, status: str, effects: Effects) -> None:
        raise NotImplementedError  # RunStore's (flowcontrol.py): parents, on_failure, queues

    def _enter_waiting(self, conn: Conn, run_id: str, idx: int, node_id: str, attempt: int,
                       token: str, plan: RunPlan, outcome: Outcome, follow: Follow | None,
                       params: dict[str, Any] | None, known: KnownOutputs | None,
                       ) -> tuple[Effects, Claim | None]:
        raise NotImplementedError  # RunStore's (flowcontrol.py)

    def _finalize_if_done(self, conn: Conn, run_id: str, newly_final: int,
                          effects: Effects) -> None:
        """Count ``newly_final`` nodes down; close the run when none is left."""
        self._remaining_collect(conn, self._remaining_send(conn, run_id, newly_final), run_id,
                                effects)

    @staticmethod
    def queue_of(claim: Claim) -> str:
        """Return the RQ queue name (``default``/``sandbox``) of a claimed node."""
        return queue_for_type(claim.plan.nodes[claim.node_id].type)


def _became_ready(rule: str, row: dict[str, Any]) -> bool:
    """Whether the count update in ``row`` is the one that made its child ready (and not an
    earlier one: a ``one_success`` or ``one_failed`` child stays queued while its other parents
    finish)."""
    if rule == "one_success":
        return row["n_success"] > 0 and row["n_success"] == row["s_cnt"]
    if rule == "one_failed":
        return row["n_failed"] > 0 and row["n_failed"] == row["f_cnt"]
    return row["n_done"] == row["n_parents"]


def _handler_inputs(conn: Conn, run_id: str, plan: RunPlan,
                    parents: Sequence[str]) -> dict[str, Any]:
    """Return an error handler's inputs: a succeeded parent's output, and for a parent that
    failed (or was canceled) ``{"state": "failed", "error": ...}``."""
    out: dict[str, Any] = {}
    for r in conn.execute(
            "SELECT node_id, state, error, output FROM node_runs"
            " WHERE execution_id=%s AND idx = ANY(%s)"
            " AND state IN ('succeeded', 'failed', 'canceled')",
            (run_id, [plan.idx_of[p] for p in parents])):
        if r["state"] == NodeState.SUCCEEDED:
            out[r["node_id"]] = r["output"]
        else:
            out[r["node_id"]] = {"state": r["state"], "error": r["error"]}
    return out


def queue_for_type(type_name: str) -> str:
    node_type = get_node_type(type_name)
    return node_type.queue if node_type is not None else "default"


__all__ = ["BATCH_MAX", "LOST_RETRIES", "Claim", "Effects", "Follow", "KnownOutputs",
           "NodeTransitions", "Outcome"]

"""The one RQ job: claim a node, run it under its timeout and lease, record the outcome.

``execute_node(run_id, idx, attempt)`` is what every RQ job calls. It never lets an error
escape to RQ (RQ's own retry and dependency machinery play no part): every outcome is written
to PostgreSQL, successors are decided in the same transaction, and only after the commit are
they pushed to Redis.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nexusflow_kernel.errors import ExpressionError, NexusFlowError, NodeExecutionError
from nexusflow_kernel.masking import NO_MASKER, Masker, RunSecrets
from nexusflow_kernel.nodes import Defer, NodeContext, NodeLog, Wait, get_node_type
from nexusflow_kernel.runstate.db import get_pool, with_retry
from nexusflow_kernel.runstate.maps import ItemBatch, is_map
from nexusflow_kernel.runstate.plan import backoff_delay
from nexusflow_kernel.runstate.store import RunStore
from nexusflow_kernel.runstate.transitions import (
    BATCH_MAX,
    Claim,
    Effects,
    Follow,
    KnownOutputs,
    Outcome,
)
from nexusflow_kernel.services import resolve_backends
from nexusflow_kernel.settings import Settings
from nexusflow_kernel.transport.broker import Broker, Push, event
from nexusflow_kernel.transport.presence import advertise, alive_key

from . import metrics
from .ionodes import Waiting, is_io_bound
from .items import ItemLease, ItemLoop, ItemRun, io_pool, open_map
from .livelog import LiveLog
from .reuse import Reuse

logger = logging.getLogger(__name__)


class _Interrupt(BaseException):
    """Raised in the main thread to stop a node (timeout, lost lease, canceled run)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class Runtime:
    """Per-process engine state of a worker: settings, pool, store, broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = resolve_backends(settings)
        self.pool = get_pool(self.settings.database_url)  # type: ignore[arg-type]
        self.store = RunStore(self.pool)
        self.store.max_output_bytes = self.settings.max_output_bytes
        self.broker = Broker(self.settings, buffer_events=True)
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.secrets: Callable[[str], str] | None
        self.run_secrets: RunSecrets | None  # the maskers of runs (None: no store to read)
        self.connections: Any = None  # connections.ConnectionStore (None: no store to read)
        self.secrets, self.run_secrets, self.connections = _secret_resolvers(self.settings)
        self._leases: _LeaseKeeper | None = None
        self._resume_key: bytes | None = None
        self.advert: Callable[[], str] | None = None
        """What this worker serves and how it runs code (``presence.advert``); set by
        ``run_worker``. Without one, the worker is only marked alive."""
        self._io_pool: ThreadPoolExecutor | None = None
        self._waiting: Waiting | None = None
        self.background_io = False
        """Whether I/O-bound nodes may wait in threads after their job ended (``ionodes``):
        on in a worker that runs jobs in its own process, never in a forked work-horse,
        which exits with its job."""
        self._envs: dict[str, dict[str, Any]] = {}  # run -> its environment's variables

    def env_vars(self, run_id: str) -> dict[str, Any]:
        """Return the variables of the run's environment as they were when it started (kept
        with the run, so read once per process and run)."""
        found = self._envs.get(run_id)
        if found is None:
            with self.pool.connection() as conn:
                row = conn.execute("SELECT env_vars FROM executions WHERE id = %s",
                                   (run_id,)).fetchone()
            found = dict(row["env_vars"] or {}) if row else {}
            if len(self._envs) > 512:
                self._envs.clear()
            self._envs[run_id] = found
        return found

    def resume_token(self, run_id: str, node_id: str) -> str:
        """Return the resume token of wait node ``node_id`` in ``run_id``: an HMAC of both
        under the secrets key, so any node of the run can template the URL before the wait
        node waits, and only its SHA-256 is ever stored."""
        import base64
        import hashlib
        import hmac

        if self._resume_key is None:
            from nexusflow_kernel.secrets import load_keys

            key = load_keys(self.settings.secret_key, self.settings.data_dir)[0]
            self._resume_key = hmac.new(key, b"nexusflow resume tokens", hashlib.sha256).digest()
        digest = hmac.new(self._resume_key, f"{run_id}\x00{node_id}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    @property
    def leases(self) -> _LeaseKeeper:
        """The lease keeper thread (started on first use, in the process that uses it)."""
        if self._leases is None:
            self._leases = _LeaseKeeper(self)
        return self._leases

    @property
    def waiting(self) -> Waiting:
        """The I/O-bound nodes this process keeps waiting in threads (``ionodes``)."""
        if self._waiting is None:
            self._waiting = Waiting(self, _run_waiting, _publish)
        return self._waiting

    @property
    def io_pool(self) -> ThreadPoolExecutor:
        """The threads that wait on I/O-bound map items (``Settings.io_slots`` of them)."""
        if self._io_pool is None:
            self._io_pool = io_pool(self.settings)
        return self._io_pool


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """Return this process's runtime, built from the environment on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.worker_name.split(":")[-1] != str(os.getpid()):
            _runtime = Runtime(Settings.from_env())
        return _runtime


def set_runtime(rt: Runtime | None) -> None:
    """Install (or clear) the process runtime; used by workers and tests."""
    global _runtime
    with _runtime_lock:
        _runtime = rt


def _secret_resolvers(settings: Settings) -> tuple[Callable[..., str], RunSecrets | None, Any]:
    """Return the resolver nodes use, the run maskers' (``None``: no store to read), and the
    connection store (``None``: none)."""
    from nexusflow_kernel.connections import ConnectionStore, run_values
    from nexusflow_kernel.secrets import SecretStore

    try:
        store = SecretStore(settings)
    except Exception as exc:  # no key configured, etc.: nodes asking for secrets get this
        message = f"secrets are unavailable: {exc}"

        def unavailable(name: str, **_: Any) -> str:
            raise NodeExecutionError(message, retryable=False)

        return unavailable, None, None
    connections = ConnectionStore(settings, secrets=store)
    return store.get, RunSecrets(run_values(store, connections)), connections


MAX_ERROR_CHARS = 4000
"""Longest error text recorded for an attempt."""

FOLLOW_BUDGET_S = 2.0
"""How long one job may go on taking a run's ready nodes before it hands the rest back to
RQ (so a warm shutdown, or a fair share of the queue between runs, never waits long)."""

FAST_NODE_S = 0.005
"""A node that ran within this lets the job claim twice as many ready nodes next time (up
to ``BATCH_MAX``, within a fair share); a slower one, or one that did not succeed, brings
the batch back to one node."""


def _current_job_id() -> str | None:
    from rq import get_current_job

    job = get_current_job()
    return job.id if job is not None else None


def execute_node(run_id: str, idx: int, attempt: int) -> str:
    """Run one attempt of one node (an RQ job), then the run's next ready nodes.

    A duplicate or stale delivery claims nothing and does nothing.
    """
    rt = runtime()
    token = uuid.uuid4().hex
    job = _current_job_id()
    claim = with_retry(
        lambda: rt.store.claim(run_id, idx, attempt, token, rt.worker_name,
                               rt.settings.lease_s, job),
        what=f"claim node #{idx} of run {run_id}",
    )
    if claim is None:
        return "duplicate or stale delivery: nothing to do"
    _publish(rt, (), [event(run_id, claim.node_id, "running", claim.attempt)])
    return _work(rt, claim, rt.store.queue_of(claim), job)


def execute_run(run_id: str, queue: str = "default") -> str:
    """Run ready nodes of a run, one after another, until none is left (an RQ job)."""
    rt = runtime()
    job = _current_job_id()
    try:
        rt.broker.run_job_started(run_id, queue)
    except Exception as exc:  # only a hint for how many run jobs to push
        logger.debug("could not count the run job as started: %s", exc)
    follow = Follow(uuid.uuid4().hex, rt.worker_name, rt.settings.lease_s, queue, job)
    known = KnownOutputs()

    def first() -> Claim | None:
        with rt.pool.connection() as conn, conn.transaction():
            return rt.store.claim_next(conn, run_id, None, follow, known=known)

    claim = with_retry(first, what=f"claim a ready node of run {run_id}")
    if claim is not None:
        _publish(rt, (), [event(run_id, claim.node_id, "running", claim.attempt)])
    return _work(rt, claim, queue, job, known, run_id=run_id)


def _work(rt: Runtime, claim: Claim | None, queue: str, job: str | None,
          known: KnownOutputs | None = None, *, run_id: str | None = None) -> str:
    """Run ``claim``, record it, and go on with the run's next ready node while there is one;
    then with the items of the run's maps that are ready (``items.ItemLoop``).

    ``known`` keeps the outputs seen on the way, so a child's inputs rarely need a query.
    """
    budget_end = time.monotonic() + FOLLOW_BUDGET_S
    known = known if known is not None else KnownOutputs()
    loop = ItemLoop(rt, _run_item, _publish, queue, job, budget_end, known)
    done_nodes = done_items = 0
    run_id = claim.run_id if claim is not None else run_id
    plan = claim.plan if claim is not None else None
    params = claim.params if claim is not None else None
    take = 1  # ready nodes to claim at once: grows while they are quick (``FAST_NODE_S``)
    pending: list[Claim] = []  # claimed in a batch but run on their own (maps)
    while True:
        if claim is None and pending:
            claim = pending.pop(0)
        if claim is None:
            # No node ready: items of the run's maps, if it has any (a plan read once).
            if run_id is None or (plan is not None and not _has_maps(plan)):
                break
            batch = loop.claim(run_id, plan, params)
            if batch is None:
                break
            plan, params = batch.plan, batch.params
            step = loop.run(batch)
            done_items += step.items
            claim = step.nxt
            if step.stopped:
                break
            continue
        plan, params = claim.plan, claim.params
        current = claim
        if is_map(claim.plan, claim.node_id):
            follow = loop.follow()
            reused, cache_key = _map_reused(rt, claim)
            opened = (Effects(), None, None, reused) if reused is not None else \
                open_map(rt, claim, follow, known, loop.take, cache_key=cache_key)
            if opened is None:
                metrics.lease_lost("worker")
                logger.warning("lease of map %s in run %s was lost", claim.node_id, claim.run_id)
                break
            effects, batch, nxt, ended = opened
            if ended is None:  # the map has items: run those this job claimed
                done_nodes += 1
                if follow is None:
                    effects.pushes.append(Push(current.run_id, -1, 0, queue, ready=1,
                                               force=True))
                _publish(rt, effects.pushes, effects.events)
                claim = nxt
                if batch is not None:
                    step = loop.run(batch)
                    done_items += step.items
                    claim = claim or step.nxt
                    if step.stopped:
                        break
                continue
            outcome = _masked(rt, claim, ended)
        elif claim.more:  # a batch: run its nodes one after another, record them together
            batch = [claim, *(c for c in claim.more if not is_map(c.plan, c.node_id))]
            pending.extend(c for c in claim.more if is_map(c.plan, c.node_id))
            claim.more = []
            if rt.background_io:  # those that wait on I/O wait in threads, when some are free
                batch = [c for c in batch if not (is_io_bound(c) and rt.waiting.submit(c))]
                if not batch:
                    done_nodes += 1
                    claim = _claim_more(rt, loop.follow(), current, known)
                    if claim is None and loop.follow() is None:
                        _publish(rt, [Push(current.run_id, -1, 0, queue, ready=1, force=True)],
                                 ())
                        break
                    continue
            started = time.monotonic()
            outcomes = _run_batch(rt, batch)
            take = _next_take(take, outcomes, time.monotonic() - started)
            follow = _batch_follow(rt, loop.follow(), take, queue, claim.plan) \
                if not pending else None
            effects, claim = with_retry(
                lambda: rt.store.finish_batch(batch, outcomes, follow=follow,  # noqa: B023
                                              known=known),
                what=f"record {len(batch)} nodes of run {current.run_id}", deadline_s=600)
            done_nodes += len(batch)
            if follow is None and not pending:
                effects.pushes.append(Push(current.run_id, -1, 0, queue, ready=1, force=True))
                _publish(rt, effects.pushes, effects.events)
                break
            _publish(rt, effects.pushes, effects.events)
            continue
        elif rt.background_io and is_io_bound(claim) and rt.waiting.submit(claim):
            # It waits in a thread (which records it); this job goes on with the run.
            done_nodes += 1
            claim = _claim_more(rt, loop.follow(), current, known)
            if claim is None and loop.follow() is None:
                _publish(rt, [Push(current.run_id, -1, 0, queue, ready=1, force=True)], ())
                break
            continue
        else:
            started = time.monotonic()
            outcome = run_claimed(rt, claim)
            take = _next_take(take, [outcome], time.monotonic() - started)
            # the budget as it is once the node ran
            follow = _batch_follow(rt, loop.follow(), take, queue, claim.plan)
        done = with_retry(lambda: rt.store.finish(current, outcome, follow=follow,  # noqa: B023
                                                  known=known),
                          what=f"record node {current.node_id!r} of run {current.run_id}",
                          deadline_s=600)
        if done is None:
            metrics.lease_lost("worker")
            logger.warning("lease of node %s in run %s was lost; outcome dropped",
                           current.node_id, current.run_id)
            rt.broker.flush_events()
            return "lease lost"
        effects, claim = done
        done_nodes += 1
        if follow is None:
            # Out of budget: whatever is still ready goes to the next free worker.
            effects.pushes.append(Push(current.run_id, -1, 0, queue, ready=1, force=True))
            _publish(rt, effects.pushes, effects.events)
            break
        _publish(rt, effects.pushes, effects.events)
    rt.broker.flush_events()
    if not done_nodes and not done_items:
        return "no ready node"
    return f"{done_nodes} node(s), {done_items} item(s) done"


def _claim_more(rt: Runtime, follow: Follow | None, current: Claim,
                known: KnownOutputs) -> Claim | None:
    """Claim the run's next ready node for this job (its last one went to a thread)."""
    if follow is None:
        return None

    def claim() -> Claim | None:
        with rt.pool.connection() as conn, conn.transaction():
            return rt.store.claim_next(conn, current.run_id, current.plan, follow,
                                       current.params, known=known)

    nxt = with_retry(claim, what=f"claim a ready node of run {current.run_id}")
    if nxt is not None:
        _publish(rt, (), [event(nxt.run_id, c.node_id, "running", c.attempt)
                          for c in (nxt, *nxt.more)])
    return nxt


def _run_batch(rt: Runtime, batch: list[Claim]) -> list[Outcome]:
    """Run a batch's nodes one after another; once one of them is canceled (or its lease,
    the batch's, is lost), the rest end the same way without running."""
    outcomes: list[Outcome] = []
    for c in batch:
        stop = next((o for o in outcomes if o.status in ("canceled", "lost")), None)
        if stop is not None:
            outcomes.append(Outcome(stop.status, error=stop.error, retryable=stop.retryable,
                                    duration_ms=0.0))
            continue
        outcomes.append(run_claimed(rt, c))
    return outcomes


def _next_take(take: int, outcomes: list[Outcome], elapsed: float) -> int:
    if all(o.status == "succeeded" for o in outcomes) and \
            elapsed <= FAST_NODE_S * len(outcomes):
        return min(BATCH_MAX, take * 2)
    return 1


_solo_nodes: dict[int, tuple[Any, list[int]]] = {}


def _batch_follow(rt: Runtime, follow: Follow | None, take: int, queue: str,
                  plan: Any) -> Follow | None:
    """``follow`` claiming up to ``take`` ready nodes (never a map among others)."""
    if follow is None or take <= 1:
        return follow
    seen = _solo_nodes.get(id(plan))
    if seen is None or seen[0] is not plan:
        if len(_solo_nodes) > 64:
            _solo_nodes.clear()
        seen = _solo_nodes[id(plan)] = (plan, [plan.idx_of[n] for n, node in plan.nodes.items()
                                               if node.type == "map"])
    try:
        workers = rt.broker.live_workers(queue)
    except Exception:
        workers = 1
    return dataclasses.replace(follow, take=take, workers=workers, solo=seen[1])


def _map_reused(rt: Runtime, claim: Claim) -> tuple[Outcome | None, str | None]:
    """A map node's pinned output or cached result (then it has no items), else its cache key
    (kept with its items: the map's result serves later runs when it succeeds)."""
    node = claim.plan.nodes[claim.node_id]
    map_type = get_node_type(node.type)
    assert map_type is not None
    reuse = Reuse(rt, claim, node)
    pinned = reuse.pinned(map_type)
    if pinned is not None:
        return pinned, None
    masking = _Masking(rt, claim)
    key = reuse.key(map_type, node.config, masking.resolver if rt.secrets else None)
    return reuse.cached(key, map_type, node.config), key


def _has_maps(plan: Any) -> bool:
    return any(n.type == "map" for n in plan.nodes.values())


def _masked(rt: Runtime, claim: Claim, outcome: Outcome) -> Outcome:
    masking = _Masking(rt, claim)
    return with_retry(lambda: masking.outcome(outcome),
                      what=f"read the secrets of run {claim.run_id} to mask its record",
                      deadline_s=600)


def _publish(rt: Runtime, pushes: Any, events: Any) -> None:
    metrics.runs_finished(events)
    try:
        rt.broker.publish(pushes, events)
    except NexusFlowError as exc:  # committed: the reconciler re-pushes from PostgreSQL
        logger.warning("could not reach Redis (the reconciler will re-push): %s", exc)


class _Masking:
    """The masker of one node attempt: the run's secrets plus any value the node resolved."""

    def __init__(self, rt: Runtime, claim: Claim) -> None:
        self.rt, self.claim = rt, claim
        self.found: list[str] = []  # values this attempt resolved (config refs, ctx.secrets)
        self._masker: Masker | None = None
        self._seen = -1

    def resolver(self, name: str) -> str:
        """Resolve a secret for the node, remembering its value for the masker."""
        assert self.rt.secrets is not None
        value = self.rt.secrets(name, run_id=self.claim.run_id)
        if isinstance(value, str):
            self.found.append(value)
        return value

    def connection(self, name: str) -> Any:
        """Resolve a stored connection for the node (``None``: no stored one of that name),
        remembering its values (password, URL, header values) for the masker."""
        from nexusflow_kernel.errors import NotFoundError

        if self.rt.connections is None:
            return None
        try:
            found = self.rt.connections.resolve(name, run_id=self.claim.run_id)
        except NotFoundError:
            return None
        self.found.extend(found.values)
        return found

    def needed(self) -> bool:
        """Whether the record may hold a secret (the flow names one, or one was resolved)."""
        return bool(self.found) or bool(self.claim.plan.secret_names)

    def masker(self) -> Masker:
        """Return the masker of everything this attempt records (resolved when first needed)."""
        if self._masker is None or self._seen != len(self.found):
            run = NO_MASKER
            names = self.claim.plan.secret_names
            if names and self.rt.run_secrets is not None:
                run = self.rt.run_secrets.masker(self.claim.run_id, names)
            self._masker = run.with_values(self.found)
            self._seen = len(self.found)
        return self._masker

    def text(self, text: str) -> str:
        return self.masker().text(text)

    def outcome(self, outcome: Outcome) -> Outcome:
        """Return ``outcome`` with every value it records masked (the one recording path)."""
        m = self.masker()
        if not m:
            if outcome.error and len(outcome.error) > MAX_ERROR_CHARS:
                outcome = dataclasses.replace(outcome, error=outcome.error[:MAX_ERROR_CHARS])
            return outcome
        output = m.value(outcome.output)
        blob = outcome.output_json
        if output != outcome.output:  # children get the masked output, as the record has it
            blob = json.dumps(output, separators=(",", ":"), allow_nan=False)
        return dataclasses.replace(
            outcome, output=output, output_json=blob,
            error=m.text(outcome.error)[:MAX_ERROR_CHARS] if outcome.error else outcome.error,
            log=m.text(outcome.log), input=m.value(outcome.input),
            resume_state=m.value(outcome.resume_state))


def run_claimed(rt: Runtime, claim: Claim, item: ItemRun | None = None, *,
                waiting: bool = False) -> Outcome:
    """Run the claimed node with its heartbeat and timeout; return its ``Outcome``.

    With ``item``, one item of a map node: its inline node, with ``item`` and ``index``
    among the names; its batch's lease is kept elsewhere (``items.ItemLoop``).
    With ``waiting``, a node that waits on I/O in a thread of ``ionodes``: its lease,
    timeout and cancel are kept there.
    Whatever the outcome records is masked for every secret of the run (``masking.py``).
    """
    from nexusflow_kernel.expressions import resume_urls

    masking = _Masking(rt, claim)
    # resume_url('W') in the node's templates and expressions: a wait node's callback URL
    with resume_urls(_ResumeTokens(rt, claim, masking).url):
        outcome = _run_claimed(rt, claim, masking, item, waiting)
    node = item.node if item is not None else claim.plan.nodes.get(claim.node_id)
    metrics.node_ended(getattr(node, "type", "?"), outcome.status, outcome.duration_ms)
    if outcome.status == "lost":
        metrics.lease_lost("worker")
    if not masking.needed():
        return masking.outcome(outcome)
    # Reading the run's secrets needs PostgreSQL, as recording does: the same patience.
    return with_retry(lambda: masking.outcome(outcome),
                      what=f"read the secrets of run {claim.run_id} to mask its record",
                      deadline_s=600)


def _run_item(rt: Any, claim: Claim, item: ItemRun) -> Outcome:
    return run_claimed(rt, claim, item)


def _run_waiting(rt: Any, claim: Claim) -> Outcome:
    return run_claimed(rt, claim, waiting=True)


def _run_claimed(rt: Runtime, claim: Claim, masking: _Masking,
                 item: ItemRun | None = None, waiting: bool = False) -> Outcome:
    from nexusflow_kernel.expressions import render_templates

    node = item.node if item is not None else claim.plan.nodes[claim.node_id]
    node_type = get_node_type(node.type)
    log = NodeLog(mask=masking.text)
    if item is None:  # an item's log is kept with the item, not streamed
        log.live = LiveLog(rt.broker, claim.run_id, claim.node_id, claim.attempt,
                           masking.masker)
    started = time.monotonic()
    timeout_s = float(node.timeout_s) if node.timeout_s else None
    env_vars = with_retry(lambda: rt.env_vars(claim.run_id),
                          what=f"read the environment of run {claim.run_id}", deadline_s=600)
    names = {"inputs": claim.inputs, "params": claim.params, "env": env_vars}
    if item is not None:
        names.update(item.names)
    rendered: Any = None
    watched = item is None and not waiting  # the lease keeper's one node of this job
    gen = rt.leases.watch(claim) if watched else (item.gen if item is not None else None)
    let_go = rt.leases.release if watched else _nothing
    armed = False
    try:
        if node_type is None:
            raise NodeExecutionError(f"node type {node.type!r} is not installed on this worker",
                                     retryable=False)
        reuse = Reuse(rt, claim, node)  # a pinned output or a cached result: no run
        reused = reuse.pinned(node_type)
        if reused is not None:
            let_go()
            return reused
        # The node's timeout covers its templates too (a template can take long). Where no
        # alarm can reach (not the main thread) the evaluator watches the deadline itself.
        armed = gen is not None and _alarm.arm(gen, timeout_s)
        try:
            rendered = render_templates(
                node.config, names, exempt=node_type.template_exempt,
                where=f"node {claim.node_id!r} /config",
                deadline=(started + timeout_s) if timeout_s and not armed else None)
            resolver = masking.resolver if rt.secrets is not None else None
            config = _resolve_secrets(rendered, resolver)
            cache_key = reuse.key(node_type, config, resolver)
            reused = reuse.cached(cache_key, node_type, rendered)
            if reused is not None:
                return reused
            ctx = NodeContext(
                run_id=claim.run_id, node_id=claim.node_id, attempt=claim.attempt,
                config=config, inputs=claim.inputs, params=claim.params, settings=rt.settings,
                log=log, deadline=(time.time() + timeout_s - (time.monotonic() - started))
                if timeout_s else None,
                timeout_s=timeout_s or None,
                resume_state=claim.resume_state, secrets=resolver,
                connections=masking.connection if rt.connections is not None else None,
                resume_token=_ResumeTokens(rt, claim, masking).token,
                names={**(item.names if item is not None else {}), "env": env_vars},
                env=env_vars,
            )
            result = node_type.run(ctx)
        finally:
            if armed:
                _alarm.disarm()
            let_go()
        duration = (time.monotonic() - started) * 1000
        if isinstance(result, Defer):
            if item is not None:
                raise NodeExecutionError(f"a map item cannot wait ({node.type} returned a "
                                         "Defer)", retryable=False)
            return Outcome("deferred", defer_until=result.until, resume_state=result.state,
                           duration_ms=duration)
        if isinstance(result, Wait) and item is not None:
            raise NodeExecutionError(f"a map item cannot wait ({node.type} waits for "
                                     f"{result.kind})", retryable=False)
        if isinstance(result, Wait):  # no worker waits: the run state resolves the node
            return Outcome("waiting", wait=result.kind, defer_until=result.until,
                           resume_state=result.state, log=log.text(), duration_ms=duration)
        output, blob = _checked_output(result, rt.settings.max_output_bytes)
        return Outcome("succeeded", output=output, output_json=blob,
                       branch=node_type.branch(output), log=log.text(),
                       input=_input_record(claim, rendered), duration_ms=duration,
                       cache_key=cache_key)
    except _Interrupt as intr:
        let_go()
        # A lost lease is the worker's trouble, not the node's: it counts as a lost attempt.
        status = {"canceled": "canceled", "lease": "lost"}.get(intr.kind, "failed")
        retryable = intr.kind in ("timeout", "lease")
        return _failure(claim, node, intr.reason, retryable, log, rendered, started,
                        status=status)
    except ExpressionError as exc:
        let_go()
        return _failure(claim, node, str(exc), False, log, rendered, started)
    except NodeExecutionError as exc:
        let_go()
        return _failure(claim, node, str(exc), exc.retryable, log, rendered, started,
                        retry_after=exc.retry_after)
    except Exception as exc:  # user-facing failure of any other kind: recorded, retried
        let_go()
        logger.debug("node %s raised", claim.node_id, exc_info=True)
        return _failure(claim, node, f"{type(exc).__name__}: {exc}", True, log, rendered,
                        started)


class _ResumeTokens:
    """Resume tokens and URLs of the run's wait nodes, for one node attempt.

    A token is a credential (whoever has it resumes the node), so each one this attempt
    hands out is masked in everything the attempt records, like a resolved secret.
    """

    def __init__(self, rt: Runtime, claim: Claim, masking: _Masking) -> None:
        self.rt, self.claim, self.masking = rt, claim, masking

    def token(self, node_id: str) -> str:
        node = self.claim.plan.nodes.get(node_id)
        if node is None or node.type != "wait":
            waits = sorted(n for n, v in self.claim.plan.nodes.items() if v.type == "wait")
            raise ValueError(f"{node_id!r} is not a wait node of this flow (wait nodes: "
                             f"{', '.join(waits) or 'none'})")
        try:
            value = self.rt.resume_token(self.claim.run_id, node_id)
        except NexusFlowError as exc:
            raise NodeExecutionError(f"resume tokens need the secrets key: {exc}",
                                     retryable=False) from None
        self.masking.found.append(value)
        return value

    def url(self, node_id: str) -> str:
        base = (self.rt.settings.public_url or "").rstrip("/")
        return f"{base}/nexusflow/hooks/resume/{self.token(node_id)}"


def _nothing() -> None:
    pass


def _failure(claim: Claim, node: Any, error: str, retryable: bool, log: NodeLog, rendered: Any,
             started: float, *, status: str = "failed",
             retry_after: float | None = None) -> Outcome:
    # Cut after masking (run_claimed): a cut through a secret would leave part of it.
    return Outcome(
        status, error=error, retryable=retryable,
        log=log.text(), input=_input_record(claim, rendered),
        duration_ms=(time.monotonic() - started) * 1000,
        retry_delay=backoff_delay(claim.attempt, node.retry, retry_after=retry_after),
    )


def _input_record(claim: Claim, rendered: Any) -> dict[str, Any]:
    return {"config": rendered, "inputs": claim.inputs}


def _checked_output(result: Any, limit: int) -> tuple[Any, str]:
    """Return ``result`` (made plain JSON) and its JSON text; refuse what is not JSON."""
    try:
        blob = json.dumps(result, separators=(",", ":"), allow_nan=False, default=_no_default)
    except (TypeError, ValueError) as exc:
        raise NodeExecutionError(f"output is not JSON-serializable: {exc}",
                                 retryable=False) from None
    if len(blob) > limit:
        raise NodeExecutionError(
            f"output is {len(blob)} bytes of JSON, over the limit of {limit} "
            "(NEXUSFLOW_MAX_OUTPUT_BYTES)", retryable=False)
    plain = isinstance(result, (dict, list, str, int, float, bool, type(None)))
    return (result if plain else json.loads(blob)), blob


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def _resolve_secrets(value: Any, resolver: Callable[[str], str] | None) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$secret"} and isinstance(value["$secret"], str):
            if resolver is None:
                raise NodeExecutionError(
                    f"secret {value['$secret']!r} was asked for, but no secret store is set up",
                    retryable=False)
            return resolver(value["$secret"])
        return {k: _resolve_secrets(v, resolver) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, resolver) for v in value]
    return value


class _LeaseKeeper:
    """One thread per worker process that renews the lease of the node being run.

    It wakes every ``heartbeat_s``; a node that finishes sooner costs nothing. When the
    lease is lost (another worker owns the node now), cannot be renewed before it runs out,
    or the run was canceled, it interrupts the node through SIGALRM in the main thread.
    ``check_now()`` (a cancel told to this worker through RQ's stop-job command) makes it look
    at once instead of at the next heartbeat; PostgreSQL still decides.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._lock = threading.Lock()
        self._claim: Claim | None = None
        self._gen = 0
        self._last_ok = 0.0
        self._batch_token: str | None = None
        self._items: dict[str, ItemLease] = {}  # map item batches running here, by token
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nexusflow-lease", daemon=True)
        self._thread.start()

    def watch(self, claim: Claim) -> int:
        with self._lock:
            self._gen += 1
            # The next node of a batch: its lease was taken (or renewed) with the batch's,
            # so the time since then still counts.
            if not claim.held or self._batch_token != claim.token:
                self._last_ok = time.monotonic()
            self._batch_token = claim.token if claim.held else None
            self._claim = claim
            return self._gen

    def release(self) -> None:
        with self._lock:
            self._gen += 1
            self._claim = None

    def check_now(self) -> None:
        """Renew (and so learn of a cancel) now rather than at the next heartbeat."""
        self._wake.set()

    def watch_items(self, batch: ItemBatch) -> ItemLease:
        """Keep renewing a batch of map items (one token) until ``drop_items``; its
        ``status`` turns ``canceled`` or ``lost`` when renewing says so. An item running in
        the main thread is interrupted then (through the lease's ``gen``)."""
        with self._lock:
            self._gen += 1
            lease = ItemLease(batch.run_id, batch.idx, batch.token, self._gen)
            self._items[batch.token] = lease
            return lease

    def drop_items(self, lease: ItemLease) -> None:
        with self._lock:
            self._items.pop(lease.token, None)

    def _renew_items(self) -> None:
        s = self.rt.settings
        with self._lock:
            leases = list(self._items.values())
        if not leases:
            return
        try:
            found = self.rt.store.renew_items([x.token for x in leases], s.lease_s)
        except Exception as exc:  # PostgreSQL away: the items' leases run out as a node's
            logger.warning("lease renewal of %d item batch(es) failed: %s", len(leases), exc)
            return
        for lease in leases:
            status = found.get(lease.token)
            if status == "running" or lease.status != "running":
                continue
            with self._lock:
                if lease.token not in self._items:
                    continue  # recorded meanwhile
            lease.status = "lost" if status is None else "canceled"
            _alarm.interrupt(lease.gen, _Interrupt(
                "lease lost to another worker" if status is None else "run canceled",
                "lease" if status is None else "canceled"))

    def _loop(self) -> None:
        s = self.rt.settings
        alive_ttl = max(10, int(3 * s.heartbeat_s))
        while True:
            try:  # tells the reconciler this worker lives (its RQ jobs are not orphans)
                advertise(self.rt.broker.redis, self.rt.worker_name,
                          self.rt.advert() if self.rt.advert else None, alive_ttl)
            except Exception as exc:
                logger.debug("could not mark the worker alive: %s", exc)
            forced = self._wake.wait(s.heartbeat_s)
            self._wake.clear()
            self._renew_items()
            if self.rt._waiting is not None:  # nodes waiting on I/O in threads (ionodes)
                self.rt._waiting.renew()
            with self._lock:
                claim, gen, last_ok = self._claim, self._gen, self._last_ok
            if claim is None or (not forced and time.monotonic() - last_ok < s.heartbeat_s * 0.5):
                continue
            try:
                status = self.rt.store.renew(claim.run_id, claim.idx, claim.token, s.lease_s,
                                             claim.held)
            except Exception as exc:  # PostgreSQL away: keep trying until the lease runs out
                logger.warning("lease renewal of %s failed: %s", claim.node_id, exc)
                # Stop the node a second before the lease runs out: after that, the
                # reconciler may give it to another worker.
                if time.monotonic() - last_ok > max(s.lease_s * 0.5, s.lease_s - 1.0):
                    self._fire(gen, _Interrupt(
                        "lease could not be renewed (database unreachable)", "lease"))
                continue
            if status is None:
                self._fire(gen, _Interrupt("lease lost to another worker", "lease"))
            elif status == "canceled":
                self._fire(gen, _Interrupt("run canceled", "canceled"))
            else:
                with self._lock:
                    if self._gen == gen:
                        self._last_ok = time.monotonic()

    def _fire(self, gen: int, intr: _Interrupt) -> None:
        with self._lock:
            if self._gen != gen:
                return  # that node is over already
        _alarm.interrupt(gen, intr)


class _Alarm:
    """The process's SIGALRM: node timeouts and lease interrupts, raised in the main thread.

    The handler is installed once and raises only while a node runs, so a signal that
    arrives just after the node ended is ignored instead of killing the process.
    """

    def __init__(self) -> None:
        self._gen: int | None = None
        self._pending: _Interrupt | None = None
        self._installed = False

    def _handler(self, signum: int, frame: Any) -> None:
        intr = self._pending
        if self._gen is not None and intr is not None:
            self._pending = None
            raise intr

    def arm(self, gen: int, timeout_s: float | None) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        if not self._installed:
            signal.signal(signal.SIGALRM, self._handler)
            self._installed = True
        self._gen, self._pending = gen, None
        if timeout_s:
            self._timeout = _Interrupt(f"timed out after {timeout_s:g} s (timeout_s)", "timeout")
            self._pending = self._timeout
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
        return True

    def disarm(self) -> None:
        self._gen, self._pending = None, None
        signal.setitimer(signal.ITIMER_REAL, 0)

    def interrupt(self, gen: int, intr: _Interrupt) -> None:
        if self._gen == gen:
            self._pending = intr
            os.kill(os.getpid(), signal.SIGALRM)


_alarm = _Alarm()


__all__ = ["Runtime", "alive_key", "execute_node", "execute_run", "run_claimed", "runtime",
           "set_runtime"]

"""Map items in a worker: run a claimed batch, record it in one transaction, take the next.

A run job that finds a map's items ready (``RunStore.claim_items``) or opens a map node
(:func:`open_map`) runs them here:

* items of a type that computes (transform, condition, noop, code...) run one after another
  in the job's own thread, then their outcomes are recorded in one transaction that also
  claims the next batch (``RunStore.record_items``): a few round trips per hundred items;
* items of an I/O-bound type (``NodeType.io_bound``: HTTP, SQL) run concurrently in the
  process's thread pool, at most ``Settings.io_slots`` at once per process (and never more
  than the map's ``concurrency``): the job keeps the pool full, records what has ended every
  few milliseconds, and claims more in the same transaction. An item's timeout and a cancel
  are recorded at the moment they happen; the thread of an item cut off that way is
  abandoned (its result dropped) and ends at the node's own deadline.

Each batch's lease (one token for all its items) is renewed by the process's lease keeper
while its items run. This module takes what it needs of the job code (running one attempt,
the lease keeper, publishing) from the runtime it is given, so it sits below ``jobs``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from nexusflow_kernel import defaults
from nexusflow_kernel.model.document import Node
from nexusflow_kernel.nodes import get_node_type
from nexusflow_kernel.nodes.map import MapNode
from nexusflow_kernel.runstate.db import with_retry
from nexusflow_kernel.runstate.maps import ItemBatch, ItemClaim, ItemResult
from nexusflow_kernel.runstate.transitions import Claim, Effects, Follow, KnownOutputs, Outcome

logger = logging.getLogger(__name__)

CPU_BATCH = 200
"""Items of a computing type claimed (and recorded) together."""

IO_FLUSH_S = 0.01
"""How long ended I/O items may wait to be recorded together."""


@dataclass
class ItemRun:
    """What one item attempt adds to a node attempt: the inline node, ``item`` and ``index``."""

    node: Node
    names: dict[str, Any]
    gen: int | None = None
    """The lease watch of its batch (a cancel interrupts an item running in the job's
    thread); ``None`` in a pool thread."""


@dataclass
class ItemLease:
    """One batch's lease as the lease keeper sees it."""

    run_id: str
    idx: int
    token: str
    gen: int
    status: str = "running"
    """``running``, ``canceled`` (the run was) or ``lost`` (the items belong to another
    worker now)."""


class Runtime(Protocol):
    """What this module needs of the worker's runtime (``jobs.Runtime``)."""

    settings: Any
    store: Any
    worker_name: str

    @property
    def leases(self) -> Any: ...

    @property
    def io_pool(self) -> ThreadPoolExecutor: ...


RunAttempt = Callable[[Runtime, Claim, ItemRun], Outcome]
Publish = Callable[[Runtime, Any, Any], None]


@dataclass
class Step:
    """Where a run job goes on after items: a node claimed for it (the map ended), or nothing."""

    nxt: Claim | None = None
    items: int = 0
    stopped: bool = False
    """The job ran out of its budget with items of the map still ready."""


@dataclass
class _Inflight:
    batch: ItemBatch
    item: ItemClaim
    lease: ItemLease
    deadline: float
    started: float


@dataclass
class ItemLoop:
    """One run job's work on map items (the outputs of the maps' parents are kept)."""

    rt: Runtime
    run_attempt: RunAttempt
    publish: Publish
    queue: str
    job: str | None
    budget_end: float
    known: KnownOutputs
    inputs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def follow(self) -> Follow | None:
        if time.monotonic() >= self.budget_end:
            return None
        s = self.rt.settings
        return Follow(uuid.uuid4().hex, self.rt.worker_name, s.lease_s, self.queue, self.job)

    # ------------------------------------------------------------------ entry points
    def take(self, type_name: str) -> int:
        """How many items of a type to claim at once: a batch of computing items, or as many
        waiting items as the process has free slots for."""
        node_type = get_node_type(type_name)
        if node_type is not None and node_type.io_bound:
            return max(1, int(self.rt.settings.io_slots))
        return CPU_BATCH

    def claim(self, run_id: str, plan: Any = None, params: Any = None) -> ItemBatch | None:
        """Claim a batch of a running map of the run, if one has items ready."""
        follow = self.follow()
        if follow is None:  # out of budget: items may be ready, for the next free worker
            effects = Effects()
            _handoff(effects, run_id, self.queue)
            self.publish(self.rt, effects.pushes, effects.events)
            return None
        return with_retry(lambda: self.rt.store.claim_items(
            run_id, follow, self.take, plan=plan, params=params, inputs=self.inputs),
            what=f"claim items of run {run_id}")

    def run(self, batch: ItemBatch) -> Step:
        """Run ``batch`` and the batches that follow it, until the map ends, the items left
        are not ready, or the budget is spent."""
        node_type = get_node_type(batch.spec.type)
        if node_type is not None and node_type.io_bound:
            return self._run_io(batch)
        return self._run_cpu(batch)

    # ------------------------------------------------------------------ computing items
    def _run_cpu(self, batch: ItemBatch | None) -> Step:
        step = Step()
        while batch is not None:
            self.inputs[(batch.run_id, batch.idx)] = batch.inputs
            lease = self.rt.leases.watch_items(batch)
            results: list[ItemResult] = []
            spec = batch.spec
            try:
                for it in batch.items:
                    if lease.status != "running":
                        break  # canceled or lost: the rest are recorded as canceled / dropped
                    outcome = self.run_attempt(self.rt, _item_claim(batch, it),
                                               ItemRun(spec, _names(it), lease.gen))
                    results.append(ItemResult(it.item, it.attempt, outcome))
                if lease.status == "canceled":
                    ran = {r.item for r in results}
                    results += [ItemResult(it.item, it.attempt,
                                           Outcome("canceled", error="run canceled"))
                                for it in batch.items if it.item not in ran]
            finally:
                self.rt.leases.drop_items(lease)
            step.items += len(results)
            follow = self.follow()
            current = batch
            effects, batch, nxt = with_retry(
                lambda: self.rt.store.record_items(current, results, follow=follow,  # noqa: B023
                                                   take=CPU_BATCH, known=self.known),
                what=f"record items of map {current.node_id!r} in run {current.run_id}",
                deadline_s=600)
            if follow is None:
                step.stopped = True
                _handoff(effects, current.run_id, self.queue)
            self.publish(self.rt, effects.pushes, effects.events)
            if nxt is not None:
                step.nxt = nxt
                return step
        return step

    # ------------------------------------------------------------------ waiting items
    def _run_io(self, first: ItemBatch) -> Step:
        """Keep up to ``io_slots`` items of the map waiting in the pool; record what ended
        every ``IO_FLUSH_S`` (and claim as many again in the same transaction)."""
        step = Step()
        pool = self.rt.io_pool
        slots = max(1, int(self.rt.settings.io_slots))
        inflight: dict[Future[Outcome], _Inflight] = {}
        ended: dict[str, list[ItemResult]] = {}  # by batch token
        batches: dict[str, ItemBatch] = {}
        leases: dict[str, ItemLease] = {}
        orphans: set[Future[Outcome]] = set()  # cut off at a timeout or cancel, still running
        last_flush = time.monotonic()

        def submit(batch: ItemBatch) -> None:
            self.inputs[(batch.run_id, batch.idx)] = batch.inputs
            batches[batch.token] = batch
            lease = leases[batch.token] = self.rt.leases.watch_items(batch)
            spec = batch.spec
            timeout = float(spec.timeout_s or defaults.DEFAULT_NODE_TIMEOUT_S)
            for it in batch.items:
                now = time.monotonic()
                fut = pool.submit(self.run_attempt, self.rt, _item_claim(batch, it),
                                  ItemRun(spec, _names(it)))
                inflight[fut] = _Inflight(batch, it, lease, now + timeout, now)

        def cut(fut: Future[Outcome], outcome: Outcome) -> None:
            f = inflight.pop(fut)
            ended.setdefault(f.batch.token, []).append(ItemResult(f.item.item, f.item.attempt,
                                                                  outcome))
            if not fut.done():
                orphans.add(fut)

        submit(first)
        nxt: Claim | None = None
        try:
            while inflight or ended:
                orphans.difference_update({f for f in orphans if f.done()})
                now = time.monotonic()
                wait_s = IO_FLUSH_S
                if inflight:
                    wait_s = max(0.0, min(wait_s, min(f.deadline for f in inflight.values())
                                          - now))
                    done, _ = wait(list(inflight), timeout=wait_s, return_when=FIRST_COMPLETED)
                else:
                    done = set()
                now = time.monotonic()
                for fut in done:
                    f = inflight.pop(fut)
                    ended.setdefault(f.batch.token, []).append(
                        ItemResult(f.item.item, f.item.attempt, _result(fut)))
                for fut, f in list(inflight.items()):
                    if f.lease.status == "lost":  # another worker has these items now
                        inflight.pop(fut)
                        orphans.add(fut)
                    elif f.lease.status == "canceled":
                        cut(fut, Outcome("canceled", error="run canceled",
                                         duration_ms=(now - f.started) * 1000))
                    elif now >= f.deadline:
                        spec_timeout = f.batch.spec.timeout_s or defaults.DEFAULT_NODE_TIMEOUT_S
                        cut(fut, Outcome("failed", retryable=True, retry_delay=_backoff(f),
                                         error=f"timed out after {spec_timeout:g} s (timeout_s)",
                                         duration_ms=(now - f.started) * 1000))
                if not ended:
                    continue
                waiting = sum(len(r) for r in ended.values())
                if inflight and waiting < max(1, slots // 4) and now - last_flush < IO_FLUSH_S:
                    continue
                last_flush = now
                for token in list(ended):
                    results = ended.pop(token)
                    batch = batches[token]
                    step.items += len(results)
                    last = not any(f.batch.token == token for f in inflight.values())
                    if last:
                        self.rt.leases.drop_items(leases.pop(token))
                        batches.pop(token)
                    free = slots - len(inflight) - len(orphans)
                    follow = self.follow() if free > 0 and nxt is None else None
                    effects, more, claimed = with_retry(
                        lambda b=batch, r=results, fo=follow, n=free, la=last:  # type: ignore[misc]
                        self.rt.store.record_items(b, r, follow=fo, take=n, known=self.known,
                                                   last=la),
                        what=f"record items of map {batch.node_id!r} in run {batch.run_id}",
                        deadline_s=600)
                    if follow is None and time.monotonic() >= self.budget_end:
                        step.stopped = True
                    self.publish(self.rt, effects.pushes, effects.events)
                    if more is not None:
                        submit(more)
                    if claimed is not None:
                        nxt = claimed
        finally:
            for lease in leases.values():
                self.rt.leases.drop_items(lease)
        if step.stopped:
            effects = Effects()
            _handoff(effects, first.run_id, self.queue)
            self.publish(self.rt, effects.pushes, effects.events)
        step.nxt = nxt
        return step


def _handoff(effects: Effects, run_id: str, queue: str) -> None:
    """Out of budget: a run job for whatever is still ready (the next free worker takes it)."""
    from nexusflow_kernel.transport.broker import Push

    effects.pushes.append(Push(run_id, -1, 0, queue, ready=1, force=True))


def _backoff(f: _Inflight) -> float:
    from nexusflow_kernel.runstate.plan import backoff_delay

    return backoff_delay(f.item.attempt, f.batch.spec.retry)


def _result(fut: Future[Outcome]) -> Outcome:
    try:
        return fut.result()
    except BaseException as exc:  # run_attempt records every failure; this is a worker bug
        logger.exception("an item attempt raised instead of returning its outcome")
        return Outcome("failed", error=f"worker error: {type(exc).__name__}: {exc}",
                       retryable=True, retry_delay=0.0)


def _names(it: ItemClaim) -> dict[str, Any]:
    return {"item": it.value, "index": it.item}


def _item_claim(batch: ItemBatch, it: ItemClaim) -> Claim:
    """The item as a node claim (the map node's id and position, the item's attempt)."""
    return Claim(batch.run_id, batch.idx, batch.node_id, it.attempt, batch.token, batch.params,
                 batch.inputs, None, batch.plan, 1)


Opened = tuple[Effects, ItemBatch | None, Claim | None, Outcome | None]


def open_map(rt: Runtime, claim: Claim, follow: Follow | None, known: KnownOutputs,
             take: Callable[[str], int], *, cache_key: str | None = None) -> Opened | None:
    """Start a claimed map node: store its items (or reopen them on a retry of the run).

    Returns the effects, the first batch claimed for ``follow``, a node claimed (a reopened
    map with nothing left to run ends at once), and an ``Outcome`` to record the usual way
    instead when the map ends before it has items (``items`` failed, or gave ``[]``).
    ``None``: the lease of the map node was lost.
    """
    if with_retry(lambda: rt.store.map_opened(claim.run_id, claim.idx),
                  what=f"read map {claim.node_id!r} of run {claim.run_id}"):
        done = with_retry(lambda: rt.store.reopen_map(claim, follow=follow, take=take,
                                                      known=known),
                          what=f"reopen map {claim.node_id!r} of run {claim.run_id}")
        if done is None:
            return None
        effects, batch, nxt = done
        return effects, batch, nxt, None
    started = time.monotonic()
    map_type = get_node_type("map")
    assert isinstance(map_type, MapNode)
    from nexusflow_kernel.errors import NexusFlowError
    from nexusflow_kernel.nodes import NodeContext

    node = claim.plan.nodes[claim.node_id]
    env_vars = rt.env_vars(claim.run_id)
    ctx = NodeContext(run_id=claim.run_id, node_id=claim.node_id, attempt=claim.attempt,
                      config=node.config, inputs=claim.inputs, params=claim.params,
                      settings=rt.settings, names={"env": env_vars}, env=env_vars)
    record = {"config": {k: v for k, v in node.config.items() if k != "node"},
              "inputs": claim.inputs}
    try:
        values = map_type.items(ctx)
    except NexusFlowError as exc:
        retryable = bool(getattr(exc, "retryable", False))
        return Effects(), None, None, Outcome(
            "failed", error=str(exc), retryable=retryable, input=record,
            duration_ms=(time.monotonic() - started) * 1000)
    if not values:
        return Effects(), None, None, Outcome(
            "succeeded", output=[], output_json="[]", input=record, log="0 items",
            duration_ms=(time.monotonic() - started) * 1000)
    done2 = with_retry(lambda: rt.store.expand_map(claim, values, follow=follow, take=take,
                                                   cache_key=cache_key),
                       what=f"store the items of map {claim.node_id!r} of run {claim.run_id}")
    if done2 is None:
        return None
    return done2[0], done2[1], None, None


def io_pool(settings: Any) -> ThreadPoolExecutor:
    """The process's pool of threads for I/O-bound items (a thread cut off at a timeout or a
    cancel keeps its slot until it ends)."""
    return ThreadPoolExecutor(max_workers=max(1, int(settings.io_slots)),
                              thread_name_prefix="nexusflow-io")


__all__ = ["CPU_BATCH", "ItemLease", "ItemLoop", "ItemRun", "Step", "io_pool", "open_map"]

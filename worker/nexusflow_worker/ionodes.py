"""I/O-bound nodes wait in threads, not in the worker process's job.

A run job that claims a node of an I/O-bound type (``NodeType.io_bound``: http, db_query,
ai) hands it to the process's waiting threads when one is free (``Settings.io_slots`` of
them, besides those of map items) and goes on with the run's next ready node; when none is
left the job ends and RQ gives the process its next job, while the node waits on its server.
When the call ends, its thread records the outcome in the usual finishing transaction (the
children that became ready get run jobs). With every thread busy, the node runs in the job
itself, as any node does: the threads bound what one process keeps waiting.

Leases, timeouts and cancel stay per node. The lease keeper renews the lease of every waiting
node in one statement each heartbeat (:meth:`Waiting.renew`). A node that passes its
``timeout_s``, or whose run was canceled (the keeper learns it at the next renewal, or at once
when the engine's stop-job command reaches this worker), is recorded so at that moment by the
watcher thread, and its thread is abandoned: its result is dropped, and it ends by the node's
own deadline, which the I/O node types honour. A node whose lease was lost is dropped without a
record (another worker has it now). A warm shutdown waits for the waiting nodes to end.

This module takes what it needs of the job code (running one attempt, publishing) as
callables, so it sits below ``jobs``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nexusflow_kernel import defaults
from nexusflow_kernel.nodes import get_node_type
from nexusflow_kernel.runstate.db import with_retry
from nexusflow_kernel.runstate.plan import backoff_delay
from nexusflow_kernel.runstate.transitions import Claim, Outcome

logger = logging.getLogger(__name__)

RunAttempt = Callable[[Any, Claim], Outcome]
Publish = Callable[[Any, Any, Any], None]


def is_io_bound(claim: Claim) -> bool:
    """Whether ``claim``'s node waits on I/O (and may wait in a thread)."""
    node_type = get_node_type(claim.plan.nodes[claim.node_id].type)
    return node_type is not None and bool(node_type.io_bound)


@dataclass
class _Node:
    claim: Claim
    started: float
    deadline: float
    timeout_s: float
    status: str = "running"
    """``running``, ``canceled`` (the run was) or ``lost`` (another worker has the node)."""
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Waiting:
    """The I/O-bound nodes one worker process keeps waiting, with their watcher thread."""

    def __init__(self, rt: Any, run_attempt: RunAttempt, publish: Publish) -> None:
        self.rt = rt
        self.run_attempt = run_attempt
        self.publish = publish
        self.slots = max(1, int(rt.settings.io_slots))
        self._pool = ThreadPoolExecutor(max_workers=self.slots,
                                        thread_name_prefix="nexusflow-io-node")
        self._nodes: dict[tuple[str, int, str], _Node] = {}
        self._busy = 0  # threads running an attempt (an abandoned one keeps its slot)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._watcher = threading.Thread(target=self._watch, name="nexusflow-io-watch",
                                         daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------------ the job's side
    def submit(self, claim: Claim) -> bool:
        """Let ``claim`` wait in a thread; ``False`` when every thread is busy (then the
        caller runs it itself)."""
        node = claim.plan.nodes[claim.node_id]
        timeout = float(node.timeout_s or defaults.DEFAULT_NODE_TIMEOUT_S)
        with self._lock:
            if self._busy >= self.slots:
                return False
            self._busy += 1
            now = time.monotonic()
            entry = _Node(claim, now, now + timeout, timeout)
            self._nodes[_key(claim)] = entry
        self._pool.submit(self._run, entry)
        self._wake.set()
        return True

    def waiting(self) -> int:
        with self._lock:
            return len(self._nodes)

    def drain(self, timeout: float) -> bool:
        """Wait until no node waits here (a warm shutdown); ``False`` if some still do."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._nodes:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.5))
        return True

    # ------------------------------------------------------------------ the lease keeper's side
    def renew(self) -> None:
        """Renew every waiting node's lease; mark those whose run was canceled or whose lease
        was lost (the watcher records or drops them at once)."""
        with self._lock:
            entries = [e for e in self._nodes.values() if e.status == "running"]
        if not entries:
            return
        try:
            found = self.rt.store.renew_nodes(
                [(e.claim.run_id, e.claim.idx, e.claim.token) for e in entries],
                self.rt.settings.lease_s)
        except Exception as exc:  # PostgreSQL away: the leases run out as a node's would
            logger.warning("lease renewal of %d waiting node(s) failed: %s", len(entries), exc)
            return
        changed = False
        for e in entries:
            status = found.get((e.claim.run_id, e.claim.idx))
            if status == "running":
                continue
            e.status = "lost" if status is None else "canceled"
            changed = True
        if changed:
            self._wake.set()

    # ------------------------------------------------------------------ threads
    def _run(self, entry: _Node) -> None:
        try:
            outcome = self.run_attempt(self.rt, entry.claim)
        except BaseException as exc:  # run_attempt records every failure: a worker bug
            logger.exception("a waiting node's attempt raised instead of returning")
            outcome = Outcome("failed", error=f"worker error: {type(exc).__name__}: {exc}",
                              retryable=True, retry_delay=0.0)
        finally:
            with self._lock:
                self._busy -= 1
        self._end(entry, outcome)

    def _end(self, entry: _Node, outcome: Outcome | None) -> None:
        """Record how ``entry`` ended (``None``: drop it), once: the thread that ran it and the
        watcher that cut it off race for this; the first wins."""
        with entry.lock:
            if entry.ended:
                return
            entry.ended = True
        try:
            if outcome is not None:
                claim = entry.claim
                done = with_retry(
                    lambda: self.rt.store.finish(claim, outcome),
                    what=f"record node {claim.node_id!r} of run {claim.run_id}", deadline_s=600)
                if done is None:
                    logger.warning("lease of node %s in run %s was lost; outcome dropped",
                                   claim.node_id, claim.run_id)
                else:
                    self.publish(self.rt, done[0].pushes, done[0].events)
        except Exception:
            logger.exception("could not record node %s of run %s (its lease will run out "
                             "and the reconciler repeats it)", entry.claim.node_id,
                             entry.claim.run_id)
        finally:
            with self._idle:
                self._nodes.pop(_key(entry.claim), None)
                self._idle.notify_all()

    def _watch(self) -> None:
        """Cut off nodes past their ``timeout_s``, canceled, or lost, at that moment."""
        while True:
            with self._lock:
                entries = list(self._nodes.values())
            now = time.monotonic()
            wait_s = 1.0
            for e in entries:
                if e.ended:
                    continue
                if e.status == "lost":
                    self._end(e, None)
                elif e.status == "canceled":
                    self._end(e, Outcome("canceled", error="run canceled",
                                         duration_ms=(now - e.started) * 1000))
                elif now >= e.deadline:
                    node = e.claim.plan.nodes[e.claim.node_id]
                    self._end(e, Outcome(
                        "failed", retryable=True,
                        retry_delay=backoff_delay(e.claim.attempt, node.retry),
                        error=f"timed out after {e.timeout_s:g} s (timeout_s)",
                        duration_ms=(now - e.started) * 1000))
                else:
                    wait_s = min(wait_s, e.deadline - now)
            self._wake.wait(max(0.005, wait_s))
            self._wake.clear()


def _key(claim: Claim) -> tuple[str, int, str]:
    return (claim.run_id, claim.idx, claim.token)


__all__ = ["Waiting", "is_io_bound"]

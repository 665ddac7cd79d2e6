"""The run engine's decisions as pure functions: no I/O, shared by dispatch and tests.

A node's fate is decided from the states of its parents, seen through its incoming edges:
an edge *succeeded* when its parent succeeded and took the edge's handle (a Condition that
took the other branch makes the edge *skipped*), *failed* when the parent failed or was
canceled, *skipped* when the parent was skipped. Trigger rules (as in Airflow) turn the
edge outcomes into run / skip / wait.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from enum import StrEnum


class NodeState(StrEnum):
    """States of one node in one run."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SCHEDULED = "scheduled"
    WAITING = "waiting"
    """Waits for something outside the workers (a child run, a decision, a callback)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"


class RunStatus(StrEnum):
    """States of a run."""

    QUEUED = "queued"
    """Waits for its flow's ``max_active_runs``; starts when a run of the flow ends."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = frozenset({NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED,
                          NodeState.CANCELED})
ACTIVE_STATES = frozenset({NodeState.QUEUED, NodeState.RUNNING, NodeState.SCHEDULED,
                           NodeState.WAITING})

POOL_QUEUE = "pool"
"""The queue of a pooled node waiting for a slot: no run job serves it (see ``concurrency``)."""

SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"
RUN, SKIP, WAIT = "run", "skip", "wait"


def edge_outcome(parent_state: str, parent_branch: str | None, handle: str | None) -> str | None:
    """Return ``success``, ``failed`` or ``skipped`` for a finished parent, else ``None``."""
    if parent_state == NodeState.SUCCEEDED:
        if handle is not None and handle != parent_branch:
            return SKIPPED
        return SUCCESS
    if parent_state in (NodeState.FAILED, NodeState.CANCELED):
        return FAILED
    if parent_state == NodeState.SKIPPED:
        return SKIPPED
    return None


def decide(trigger_rule: str, outcomes: Iterable[str | None]) -> str:
    """Return ``run``, ``skip`` or ``wait`` for a node given its incoming edges' outcomes."""
    outcomes = list(outcomes)
    done = [o for o in outcomes if o is not None]
    return decide_counts(trigger_rule, len(outcomes), len(done), done.count(SUCCESS),
                         done.count(FAILED))


def decide_counts(trigger_rule: str, total: int, done: int, success: int, failed: int) -> str:
    """Return ``run``, ``skip`` or ``wait`` from counts of incoming edge outcomes.

    ``total`` edges, ``done`` of them decided, ``success`` and ``failed`` among those (the
    rest skipped). Counting keeps each decision O(1), so a node with 10,000 parents costs
    no more per parent than a node with one.
    """
    if total == 0:
        return RUN
    skipped = done - success - failed
    if trigger_rule == "one_success":
        if success:
            return RUN
        return SKIP if done == total else WAIT
    if trigger_rule == "one_failed":  # an error handler: runs at the first failure
        if failed:
            return RUN
        return SKIP if done == total else WAIT
    if done < total:
        if trigger_rule in ("all_success", "none_failed") and failed:
            return SKIP  # the outcome can no longer change
        if trigger_rule in ("all_success", "all_failed") and skipped:
            return SKIP
        if trigger_rule == "all_failed" and success:
            return SKIP
        return WAIT
    if trigger_rule == "all_done":
        return RUN
    if trigger_rule == "none_failed":
        return SKIP if failed else RUN
    if trigger_rule == "all_failed":
        return RUN if failed == total else SKIP
    return RUN if success == total else SKIP


def run_status(states: Iterable[str]) -> str:
    """Return the final status of a run whose nodes are all in a final state."""
    states = set(states)
    if NodeState.CANCELED in states:
        return RunStatus.CANCELED
    if NodeState.FAILED in states:
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED


def unrecovered(failed: Iterable[str], succeeded: Iterable[str],
                recoverers: dict[str, tuple[str, ...]]) -> list[str]:
    """Return the failed nodes whose failure still fails the run.

    ``recoverers`` maps a node to its children marked ``recovers: true``: a failed node is
    recovered when one of them succeeded (an error handler that dealt with it).
    """
    ok = set(succeeded)
    return [n for n in failed if not any(c in ok for c in recoverers.get(n, ()))]


def backoff_delay(attempt: int, retry: dict | None, *, rng: random.Random | None = None,
                  retry_after: float | None = None) -> float:
    """Return the wait before attempt ``attempt + 1`` after attempt ``attempt`` failed.

    ``backoff_s * factor ** (attempt - 1)``, capped at ``max_backoff_s``, then spread by
    ``jitter`` (a fraction: 0.1 means up to 10 % shorter, never longer than the cap).
    ``retry_after`` (what the other side asked for, an HTTP ``Retry-After``) makes it at least
    that long, within the same cap: a node never waits longer than its policy allows.
    """
    from .. import defaults

    retry = retry or {}
    base = float(retry.get("backoff_s", defaults.DEFAULT_BACKOFF_S))
    factor = float(retry.get("factor", defaults.DEFAULT_BACKOFF_FACTOR))
    cap = float(retry.get("max_backoff_s", defaults.DEFAULT_MAX_BACKOFF_S))
    jitter = float(retry.get("jitter", 0.0))
    delay = min(cap, base * factor ** max(0, attempt - 1))
    if jitter:
        delay *= 1.0 - jitter * (rng or random).random()
    if retry_after is not None and retry_after > delay:
        delay = min(cap, float(retry_after))
    return max(0.0, delay)

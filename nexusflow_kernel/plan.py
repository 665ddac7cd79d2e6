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
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELED = "canceled"


class RunStatus(StrEnum):
    """States of a run."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINAL_STATES = frozenset({NodeState.SUCCEEDED, NodeState.FAILED, NodeState.SKIPPED,
                          NodeState.CANCELED})
ACTIVE_STATES = frozenset({NodeState.QUEUED, NodeState.RUNNING, NodeState.SCHEDULED})

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
    if not outcomes:
        return RUN
    done = [o for o in outcomes if o is not None]
    all_done = len(done) == len(outcomes)
    if trigger_rule == "one_success":
        if SUCCESS in done:
            return RUN
        return SKIP if all_done else WAIT
    if not all_done:
        if trigger_rule in ("all_success", "none_failed") and FAILED in done:
            return SKIP  # the outcome can no longer change
        if trigger_rule == "all_success" and SKIPPED in done:
            return SKIP
        return WAIT
    if trigger_rule == "all_done":
        return RUN
    if trigger_rule == "none_failed":
        return SKIP if FAILED in done else RUN
    # all_success (default)
    return RUN if all(o == SUCCESS for o in done) else SKIP


def run_status(states: Iterable[str]) -> str:
    """Return the final status of a run whose nodes are all in a final state."""
    states = set(states)
    if NodeState.CANCELED in states:
        return RunStatus.CANCELED
    if NodeState.FAILED in states:
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED


def backoff_delay(attempt: int, retry: dict | None, *, rng: random.Random | None = None) -> float:
    """Return the wait before attempt ``attempt + 1`` after attempt ``attempt`` failed.

    ``backoff_s * factor ** (attempt - 1)``, capped at ``max_backoff_s``, then spread by
    ``jitter`` (a fraction: 0.1 means up to 10 % shorter, never longer than the cap).
    """
    from . import defaults

    retry = retry or {}
    base = float(retry.get("backoff_s", defaults.DEFAULT_BACKOFF_S))
    factor = float(retry.get("factor", defaults.DEFAULT_BACKOFF_FACTOR))
    cap = float(retry.get("max_backoff_s", defaults.DEFAULT_MAX_BACKOFF_S))
    jitter = float(retry.get("jitter", 0.0))
    delay = min(cap, base * factor ** max(0, attempt - 1))
    if jitter:
        delay *= 1.0 - jitter * (rng or random).random()
    return max(0.0, delay)

"""Retention: delete runs that ended long ago, with their outputs and logs, in small batches.

``nexusflow prune --older-than 30d`` and the service's daily pass (``NexusFlow.retention_days``)
call :func:`prune`. A run is pruned when it is final (succeeded, failed, canceled), has no
parent run, and ended before the cut-off; its child runs (sub-flows, whatever their age) go with
it, and with every run its node rows (outputs, inputs, errors), attempt logs, map items, resume
tokens and updates (``ON DELETE CASCADE``) and its event stream in Redis. Deliveries of
triggers, schedule firings and node tests older than the cut-off go too. Workflows, versions,
secrets, roles and the audit log are kept.

No long lock: each batch is one short transaction that takes at most ``batch_size`` runs with
``FOR UPDATE SKIP LOCKED`` (a run someone holds is left for the next pass) and deletes them by
primary key; nothing else waits for more than one batch. ``pause_s`` between batches leaves
room to the workers on a busy database.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import NexusFlowError

if TYPE_CHECKING:  # pragma: no cover
    from .runstate.db import Pool

FINAL = ("succeeded", "failed", "canceled")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# The runs of a batch: final, top-level, ended before the cut-off (oldest first), and every
# descendant of theirs (child runs of sub-flows and map items).
_BATCH = """
WITH RECURSIVE roots AS (
    SELECT id FROM executions
     WHERE parent_run IS NULL AND status = ANY(%(final)s) AND ended_at < %(cutoff)s
     ORDER BY ended_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), tree AS (
    SELECT id FROM roots
    UNION ALL
    SELECT e.id FROM executions e JOIN tree t ON e.parent_run = t.id
)
SELECT id FROM tree
"""


def parse_age(text: str) -> timedelta:
    """Return the age ``30d``, ``12h``, ``90m``, ``2w`` or ``3600s`` names."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
    if not match or int(match.group(1)) <= 0:
        raise NexusFlowError(f"{text!r} is not an age: use a number and s, m, h, d or w (30d, 12h)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass
class PruneResult:
    """What a prune deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    runs: int = 0
    node_rows: int = 0
    log_rows: int = 0
    batches: list[int] = field(default_factory=list)
    """Runs per batch (top-level and children), in order."""
    deliveries: int = 0
    firings: int = 0
    node_tests: int = 0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "runs": self.runs,
            "node_rows": self.node_rows,
            "log_rows": self.log_rows,
            "batches": len(self.batches),
            "runs_per_batch": self.batches,
            "deliveries": self.deliveries,
            "firings": self.firings,
            "node_tests": self.node_tests,
            "dry_run": self.dry_run,
        }


def prune(
    pool: Pool,
    older_than: timedelta,
    *,
    redis: Any = None,
    dry_run: bool = False,
    batch_size: int = 500,
    pause_s: float = 0.0,
    now: datetime | None = None,
    max_batches: int | None = None,
) -> PruneResult:
    """Delete the runs that ended more than ``older_than`` ago (see the module docstring).

    ``redis``: a client whose run event streams are deleted too. ``dry_run`` counts and
    deletes nothing. ``max_batches`` stops early (the next pass goes on).
    """
    if batch_size < 1:
        raise NexusFlowError("batch_size must be 1 or more")
    cutoff = (now or datetime.now(UTC)) - older_than
    result = PruneResult(cutoff=cutoff, dry_run=dry_run)
    if dry_run:
        _count(pool, result)
        return result
    while max_batches is None or len(result.batches) < max_batches:
        ids = _delete_batch(pool, cutoff, batch_size, result)
        if not ids:
            break
        if redis is not None:
            from .transport.broker import events_key

            redis.unlink(*(events_key(str(i)) for i in ids))
        if pause_s:
            time.sleep(pause_s)
    _prune_side_tables(pool, cutoff, result)
    return result


def _delete_batch(pool: Pool, cutoff: datetime, limit: int, result: PruneResult) -> list[Any]:
    from psycopg.rows import tuple_row

    with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        ids = [
            r[0]
            for r in cur.execute(
                _BATCH, {"final": list(FINAL), "cutoff": cutoff, "limit": limit}
            ).fetchall()
        ]
        if not ids:
            conn.commit()
            return []
        nodes = cur.execute("DELETE FROM node_runs WHERE execution_id = ANY(%s)", (ids,))
        result.node_rows += nodes.rowcount
        logs = cur.execute("DELETE FROM node_logs WHERE execution_id = ANY(%s)", (ids,))
        result.log_rows += logs.rowcount
        # children first is not needed: nothing references executions by foreign key but the
        # cascading tables (map rows, resume tokens, updates) of the same runs
        cur.execute("DELETE FROM executions WHERE id = ANY(%s)", (ids,))
        conn.commit()
    result.runs += len(ids)
    result.batches.append(len(ids))
    return ids


def _count(pool: Pool, result: PruneResult) -> None:
    from psycopg.rows import tuple_row

    with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        row = cur.execute(
            _BATCH.replace(" FOR UPDATE SKIP LOCKED", "").replace(
                "SELECT id FROM tree",
                "SELECT count(*), (SELECT count(*) FROM node_runs WHERE execution_id IN"
                " (SELECT id FROM tree)), (SELECT count(*) FROM node_logs WHERE execution_id"
                " IN (SELECT id FROM tree)) FROM tree",
            ),
            {"final": list(FINAL), "cutoff": result.cutoff, "limit": None},
        ).fetchone()
        conn.commit()
    result.runs, result.node_rows, result.log_rows = (int(v or 0) for v in row or (0, 0, 0))


def _prune_side_tables(pool: Pool, cutoff: datetime, result: PruneResult) -> None:
    """Old trigger deliveries, schedule firings and node tests (small rows, one statement
    each, by their time index)."""
    with pool.connection() as conn:
        for attr, sql in (
            ("deliveries", "DELETE FROM nexusflow_trigger_deliveries WHERE received_at < %s"),
            ("firings", "DELETE FROM nexusflow_schedule_firings WHERE fired_at < %s"),
            ("node_tests", "DELETE FROM node_tests WHERE created_at < %s"),
        ):
            setattr(result, attr, conn.execute(sql, (cutoff,)).rowcount)
        conn.commit()


def claim_pass(pool: Pool, task: str, interval_s: float, by: str) -> bool:
    """Return True when this caller should run ``task`` now: it last ran more than
    ``interval_s`` ago (or never). One caller wins per interval, however many replicas ask."""
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO nexusflow_maintenance (task, last_run) VALUES (%s, '-infinity')"
            " ON CONFLICT DO NOTHING",
            (task,),
        )
        row = conn.execute(
            "UPDATE nexusflow_maintenance SET last_run = now(), last_by = %s WHERE task = %s"
            " AND last_run < now() - make_interval(secs => %s) RETURNING task",
            (by, task, interval_s),
        ).fetchone()
        conn.commit()
    return row is not None


def record_pass(pool: Pool, task: str, result: dict[str, Any]) -> None:
    """Keep what the last pass of ``task`` did (``nexusflow_maintenance.result``)."""
    from psycopg.types.json import Jsonb

    with pool.connection() as conn:
        conn.execute(
            "UPDATE nexusflow_maintenance SET result = %s WHERE task = %s", (Jsonb(result), task)
        )
        conn.commit()


__all__ = ["PruneResult", "claim_pass", "parse_age", "prune", "record_pass"]

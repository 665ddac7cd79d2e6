"""Cron schedules and Redis-stream queue triggers, run as loops inside every server.

Schedules fire exactly once however many servers run: each server takes the due schedule rows
with ``FOR UPDATE SKIP LOCKED`` and records the firing under the unique key
``(schedule_id, fire_at)`` in the same transaction that advances ``next_fire_at``; a second
server either skips the locked row or finds it already advanced. The run is started while the
row is locked, so a crash before the commit rolls the firing back and another server fires it.

Queue triggers read a Redis stream through a consumer group; a message is acknowledged only
after its run is committed, and a message that a dead consumer left pending is claimed by
another after ``NexusFlow.queue_claim_idle_s`` (``XAUTOCLAIM``). The message id is recorded as
a delivery, so a redelivered message does not start a second run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg.rows import dict_row

from .base import BadRequest, field

logger = logging.getLogger(__name__)


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """Return the first time after ``after`` that ``cron`` names, in UTC."""
    return _cron(cron, timezone, after).get_next(datetime).astimezone(UTC)


MISFIRE_POLICIES = ("skip", "catch_up")
MAX_CATCH_UP = 100
_COUNT_CAP = 1000


def _cron(cron: str, timezone: str, start: datetime) -> Any:
    from croniter import croniter

    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"unknown time zone {timezone!r}", "/timezone") from None
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise BadRequest(f"{cron!r} is not a valid cron expression", "/cron")
    return croniter(cron, start.astimezone(zone))


def plan_firings(cron: str, timezone: str, due: datetime, now: datetime, *, misfire: str,
                 catch_up_limit: int, grace_s: float) -> tuple[list[datetime], int, datetime]:
    """Return ``(slots to fire, oldest first; firings skipped; the next time after now)``.

    ``due`` is the schedule's ``next_fire_at`` (a time of the cron, not after ``now``). Slots
    between ``due`` and ``now`` at most ``grace_s`` old are on time and fire; older ones are
    missed: ``skip`` drops them, ``catch_up`` keeps the latest ``catch_up_limit`` slots in all.
    """
    keep = catch_up_limit if misfire == "catch_up" else 1
    recent: list[datetime] = []
    back = _cron(cron, timezone, now + timedelta(microseconds=1))
    while len(recent) < keep:  # the latest times, walking back from now (after due)
        slot = back.get_prev(datetime).astimezone(UTC)
        if slot <= due:
            break
        recent.append(slot)
    if len(recent) < keep:
        recent.append(due)  # the due time is a firing itself
    recent.reverse()
    cutoff = now - timedelta(seconds=grace_s)
    fire = recent if misfire == "catch_up" else [s for s in recent if s >= cutoff]
    # count what is skipped: due and the times after it, up to the first one fired (bounded)
    first = fire[0] if fire else now + timedelta(microseconds=1)
    skipped, slot = 0, due
    forward = _cron(cron, timezone, due)
    while skipped < _COUNT_CAP and slot < first and slot <= now:
        skipped += 1
        slot = forward.get_next(datetime).astimezone(UTC)
    following = _cron(cron, timezone, now).get_next(datetime).astimezone(UTC)
    return fire, skipped, following


def misfire_policy(body: dict[str, Any]) -> tuple[str, int]:
    """Return a schedule's ``(misfire, catch_up_limit)`` from a request body (checked)."""
    misfire = field(body, "misfire", str, default="skip")
    if misfire not in MISFIRE_POLICIES:
        raise BadRequest("'misfire' must be 'skip' or 'catch_up'", "/misfire")
    limit = field(body, "catch_up_limit", int, default=10)
    if not 1 <= limit <= MAX_CATCH_UP:
        raise BadRequest(f"'catch_up_limit' must be in 1..{MAX_CATCH_UP}", "/catch_up_limit")
    return misfire, limit


def create_group(client: Any, stream: str, group: str, start: str = "$") -> None:
    """Create a consumer group (and the stream); an existing group is left alone."""
    import redis

    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Scheduler:
    """Fire due schedules (blocking; one call per tick)."""

    def __init__(self, pool: Any, engine: Any, server_id: str, *, grace_s: float = 60.0,
                 on_fire: Any = None) -> None:
        self.pool = pool
        self.engine = engine
        self.server_id = server_id
        self.grace_s = grace_s
        self.on_fire = on_fire  # called with (kind, count) after a commit (metrics)

    def fire_due(self, now: datetime | None = None, limit: int = 50) -> list[str]:
        """Start a run for every due firing of the schedules this server can lock; return
        the run ids."""
        started: list[str] = []
        skipped = 0
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(
                "SELECT * FROM nexusflow_schedules WHERE enabled AND next_fire_at <= %s"
                " ORDER BY next_fire_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now or datetime.now(UTC), limit)).fetchall()
            for row in rows:
                runs, missed = self._fire(cur, row, now or datetime.now(UTC))
                started += runs
                skipped += missed
            conn.commit()
        if self.on_fire is not None:
            self.on_fire("schedule", len(started), skipped)
        return started

    def _fire(self, cur: Any, row: dict[str, Any], now: datetime) -> tuple[list[str], int]:
        sid = row["schedule_id"]
        try:
            slots, skipped, following = plan_firings(
                row["cron"], row["timezone"], row["next_fire_at"], now,
                misfire=row.get("misfire") or "skip",
                catch_up_limit=row.get("catch_up_limit") or 1, grace_s=self.grace_s)
        except BadRequest:
            cur.execute("UPDATE nexusflow_schedules SET enabled = false WHERE schedule_id = %s",
                        (sid,))
            return [], 0
        if skipped:
            logger.warning("schedule %s: %d firing(s) missed since %s skipped (misfire: %s)",
                           sid, skipped, row["next_fire_at"].isoformat(),
                           row.get("misfire") or "skip")
        cur.execute("UPDATE nexusflow_schedules SET next_fire_at = %s,"
                    " last_fired_at = COALESCE(%s, last_fired_at),"
                    " skipped_firings = skipped_firings + %s WHERE schedule_id = %s",
                    (following, slots[-1] if slots else None, skipped, sid))
        runs = []
        for fire_at in slots:
            run_id = self._fire_slot(cur, row, fire_at)
            if run_id:
                runs.append(run_id)
        return runs, skipped

    def _fire_slot(self, cur: Any, row: dict[str, Any], fire_at: datetime) -> str | None:
        claimed = cur.execute(
            "INSERT INTO nexusflow_schedule_firings (schedule_id, fire_at, fired_by)"
            " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING schedule_id",
            (row["schedule_id"], fire_at, self.server_id)).fetchone()
        if claimed is None:
            return None
        try:
            # The dedupe key makes the slot's run unique even if this server dies between the
            # run's commit and the firing's: a server that fires the slot again gets this run.
            run_id = self.engine.start_run(
                workflow_id=row["workflow_id"], version=row["version"], inputs=row["inputs"],
                trigger="schedule", actor=f"schedule:{row['schedule_id']}",
                dedupe_key=f"schedule:{row['schedule_id']}:{fire_at.isoformat()}",
                env=row.get("env"))
        except Exception as exc:  # a deleted workflow must not stop the other schedules
            logger.warning("schedule %s could not start a run: %s", row["schedule_id"], exc)
            return None
        cur.execute("UPDATE nexusflow_schedule_firings SET run_id = %s"
                    " WHERE schedule_id = %s AND fire_at = %s",
                    (run_id, row["schedule_id"], fire_at))
        return str(run_id)


def message_inputs(fields: dict[Any, Any]) -> dict[str, Any]:
    """Turn a stream message into run inputs: a JSON ``payload`` field, or the fields."""
    decoded = {(k.decode() if isinstance(k, bytes) else str(k)):
               (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
               for k, v in fields.items()}
    if "payload" in decoded:
        try:
            value = json.loads(decoded["payload"])
        except (ValueError, TypeError):
            return {"payload": decoded["payload"]}
        return value if isinstance(value, dict) else {"payload": value}
    return decoded


class QueueConsumer:
    """Consume every enabled queue trigger's stream (blocking; one call per tick)."""

    def __init__(self, store: Any, engine: Any, consumer: str, claim_idle_s: float) -> None:
        self.store = store
        self.engine = engine
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)

    def poll(self, count: int = 20) -> list[str]:
        """Start runs for waiting messages of all triggers; return the run ids."""
        started: list[str] = []
        for trigger in self.store.queue_triggers():
            try:
                started += self.poll_trigger(trigger, count)
            except Exception as exc:
                logger.warning("queue trigger %s: %s", trigger["trigger_id"], exc)
        return started

    def poll_trigger(self, trigger: dict[str, Any], count: int) -> list[str]:
        import redis

        client = self.engine.redis
        stream, group = trigger["stream"], trigger["consumer_group"]
        messages: list[tuple[Any, dict[Any, Any]]] = []
        try:
            # our own unacknowledged messages first (a restart), then a dead consumer's
            own = client.xreadgroup(group, self.consumer, {stream: "0"}, count=count)
            messages += own[0][1] if own else []
            claimed = client.xautoclaim(stream, group, self.consumer, self.claim_idle_ms,
                                        "0-0", count=count)
            messages += [m for m in claimed[1] if m and m[1] is not None]
            fresh = client.xreadgroup(group, self.consumer, {stream: ">"}, count=count)
            messages += fresh[0][1] if fresh else []
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            create_group(client, stream, group, start="0")
            return []
        started, seen = [], set()
        for msg_id, fields in messages:
            mid = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
            if mid in seen:
                continue
            seen.add(mid)
            run_id = self._start(trigger, mid, fields or {})
            client.xack(stream, group, mid)  # only after the run is committed
            if run_id:
                started.append(run_id)
        return started

    def _start(self, trigger: dict[str, Any], msg_id: str, fields: dict[Any, Any]) -> str | None:
        tid = trigger["trigger_id"]
        new, run_id = self.store.claim_delivery(tid, msg_id)
        if not new and run_id:
            return None  # redelivered after its run started: only the ack was missing
        run_id = self.engine.start_run(
            workflow_id=trigger["workflow_id"], version=trigger["version"],
            inputs=message_inputs(fields), trigger="queue", actor=f"queue:{tid}",
            dedupe_key=f"queue:{tid}:{msg_id}", env=trigger.get("env"))
        self.store.set_delivery_run(tid, msg_id, run_id)
        return run_id


class TriggerLoops:
    """Run the scheduler and the queue consumer in the server's event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        engine = app.engine()
        self.scheduler = Scheduler(engine.pool, engine, app.server_id,
                                   grace_s=app.misfire_grace_s, on_fire=app.metrics().fired)
        self.consumer = QueueConsumer(app.store(), engine, app.server_id, app.queue_claim_idle_s)

    def _poll_queues(self) -> None:
        self.app.metrics().fired("queue", len(self.consumer.poll()))

    async def run(self) -> None:
        app = self.app
        while not app.stopping.is_set():
            for tick in (self.scheduler.fire_due, self._poll_queues):
                try:
                    await app.run_sync(tick)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # an outage must not end the loop
                    app.log.warning("Nexus-Flow trigger loop: %s", exc)
            await asyncio.sleep(app.trigger_poll_s)

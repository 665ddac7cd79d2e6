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
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg.rows import dict_row

from .base import BadRequest

logger = logging.getLogger(__name__)


def next_fire(cron: str, timezone: str, after: datetime) -> datetime:
    """Return the first time after ``after`` that ``cron`` names, in UTC."""
    from croniter import croniter

    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"unknown time zone {timezone!r}", "/timezone") from None
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise BadRequest(f"{cron!r} is not a valid cron expression", "/cron")
    it = croniter(cron, after.astimezone(zone))
    return it.get_next(datetime).astimezone(UTC)


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

    def __init__(self, pool: Any, engine: Any, server_id: str) -> None:
        self.pool = pool
        self.engine = engine
        self.server_id = server_id

    def fire_due(self, now: datetime | None = None, limit: int = 50) -> list[str]:
        """Start a run for every due schedule this server can lock; return the run ids."""
        started: list[str] = []
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            rows = cur.execute(
                "SELECT * FROM nexusflow_schedules WHERE enabled AND next_fire_at <= %s"
                " ORDER BY next_fire_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (now or datetime.now(UTC), limit)).fetchall()
            for row in rows:
                run_id = self._fire(cur, row, now or datetime.now(UTC))
                if run_id:
                    started.append(run_id)
            conn.commit()
        return started

    def _fire(self, cur: Any, row: dict[str, Any], now: datetime) -> str | None:
        fire_at = row["next_fire_at"]
        try:  # missed firings (server down) collapse into this one
            following = next_fire(row["cron"], row["timezone"], max(now, fire_at))
        except BadRequest:
            cur.execute("UPDATE nexusflow_schedules SET enabled = false WHERE schedule_id = %s",
                        (row["schedule_id"],))
            return None
        cur.execute("UPDATE nexusflow_schedules SET next_fire_at = %s, last_fired_at = %s"
                    " WHERE schedule_id = %s", (following, fire_at, row["schedule_id"]))
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
                dedupe_key=f"schedule:{row['schedule_id']}:{fire_at.isoformat()}")
        except Exception as exc:  # a deleted workflow must not stop the other schedules
            logger.warning("schedule %s could not start a run: %s", row["schedule_id"], exc)
            return None
        cur.execute("UPDATE nexusflow_schedule_firings SET run_id = %s"
                    " WHERE schedule_id = %s AND fire_at = %s",
                    (run_id, row["schedule_id"], fire_at))
        return run_id


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
            dedupe_key=f"queue:{tid}:{msg_id}")
        self.store.set_delivery_run(tid, msg_id, run_id)
        return run_id


class TriggerLoops:
    """Run the scheduler and the queue consumer in the server's event loop."""

    def __init__(self, app: Any) -> None:
        self.app = app
        engine = app.engine()
        self.scheduler = Scheduler(engine.pool, engine, app.server_id)
        self.consumer = QueueConsumer(app.store(), engine, app.server_id, app.queue_claim_idle_s)

    async def run(self) -> None:
        app = self.app
        while not app.stopping.is_set():
            for tick in (self.scheduler.fire_due, self.consumer.poll):
                try:
                    await app.run_sync(tick)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # an outage must not end the loop
                    app.log.warning("Nexus-Flow trigger loop: %s", exc)
            await asyncio.sleep(app.trigger_poll_s)

"""Redis as the transport: pushing node jobs to RQ and appending run events to streams.

Redis holds nothing that cannot be rebuilt from PostgreSQL: queued jobs are re-pushed by the
reconciler, and events are derivable from the node rows. Jobs use RQ's JSON serializer (a
pickle payload in Redis would be code execution on a worker).
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from .. import defaults
from ..errors import BackendUnavailable
from ..settings import Settings, mask_url

logger = logging.getLogger(__name__)

JOB_FUNC = "nexusflow_worker.jobs.execute_node"
"""RQ entry point for one node attempt: ``execute_node(run_id, idx, attempt)``."""

RUN_JOB_FUNC = "nexusflow_worker.jobs.execute_run"
"""RQ entry point that runs whatever nodes of a run are ready: ``execute_run(run_id, queue)``.

When k nodes of a run become ready at once, min(k, live workers) of these jobs are pushed,
not k node jobs: each takes ready nodes one after another (``FOR UPDATE SKIP LOCKED``), so
a wide fan-out costs a handful of RQ round trips, and an idle worker always finds work."""

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def get_redis(url: str) -> redis.Redis:
    """Return this process's Redis client for ``url`` (a connection pool underneath)."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
            )
            _clients[url] = client
        return client


def check_redis(client: redis.Redis, url: str) -> None:
    """Raise ``BackendUnavailable`` naming the (masked) URL when Redis does not answer."""
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BackendUnavailable(f"Redis at {mask_url(url)} is not reachable: {exc}") from None


def job_id(run_id: str, idx: int, attempt: int, wake: bool = False) -> str:
    """Return the RQ job id of one attempt of one node (RQ allows ``[A-Za-z0-9_-]``).

    ``wake`` names the job that resumes a deferred attempt (a Delay node): it must differ
    from the job that deferred it, which is still finishing when the wake-up is scheduled.
    """
    return f"nf-{run_id.replace('-', '')}-{idx}-{attempt}{'-w' if wake else ''}"


def events_key(run_id: str) -> str:
    return f"{defaults.KEY_PREFIX}:run:{run_id}:events"


ALL_EVENTS_KEY = f"{defaults.KEY_PREFIX}:events"


def live_log_key(run_id: str, node_id: str) -> str:
    """Return the key of a running node's log so far (``Broker.set_live_log``)."""
    return f"{defaults.KEY_PREFIX}:run:{run_id}:live-log:{node_id}"


LIVE_LOG_TTL_S = 120
"""How long a running node's log so far stays in Redis after its last write."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Push:
    """One node attempt to hand to RQ, now or at ``at`` (a UNIX time)."""

    run_id: str
    idx: int
    attempt: int
    queue: str = "default"
    at: float | None = None
    wake: bool = False
    ready: int = 0
    """When > 0 this is not one node but ``ready`` nodes of the run waiting on ``queue`` (map
    items, too); with ``at``, a run job pushed when that time comes."""
    force: bool = False
    """Push a run job even if enough seem to be waiting already (the reconciler's repair)."""


def run_jobs_key(run_id: str, queue: str) -> str:
    """Return the key counting a run's run jobs that wait in RQ and have not started yet."""
    return f"{defaults.KEY_PREFIX}:run:{run_id}:pending-jobs:{queue}"


RUN_JOBS_TTL_S = 30
"""The count self-heals: a job lost with its worker stops counting after this long."""

DUE_KEY = f"{defaults.KEY_PREFIX}:due"
"""Node jobs that wait for their time (retry backoff, Delay nodes): job ids scored by the
UNIX time (a float) they are due at. Their jobs wait in ``DUE_JOBS_KEY`` until then."""

DUE_JOBS_KEY = f"{defaults.KEY_PREFIX}:due:jobs"

# Take the due jobs out, atomically: with a releaser on every worker host, each job is
# handed to RQ by exactly one of them.
_RELEASE_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local job = redis.call('HGET', KEYS[2], id)
  redis.call('HDEL', KEYS[2], id)
  if job then table.insert(out, job) end
end
return out
"""

WAITING_HINT_S = 0.2
"""How long a worker trusts what it last read (or pushed) of a run's waiting run jobs: while
enough wait, following nodes push nothing and need no Redis round trip. At worst an idle
worker joins a run this much later; the worker that follows it never stops."""


def event(run_id: str, node: str | None, state: str, attempt: int = 0, *,
          duration_ms: float | None = None, error: str | None = None,
          cached_from: dict[str, Any] | None = None, pinned: bool = False) -> dict[str, Any]:
    """Build one event in the shape every client reads. A node's success says whether its
    result came from the cache (``cached_from: {run_id, node_id}``) or from its pin
    (``pinned: true``), as the run JSON does, so a canvas badges it the moment it is decided."""
    ev: dict[str, Any] = {"run": run_id, "node": node, "state": state, "attempt": attempt,
                          "at": now_iso(), "duration_ms": duration_ms}
    if error:
        ev["error"] = error
    if cached_from:
        ev["cached_from"] = {"run_id": str(cached_from.get("run_id")),
                             "node_id": str(cached_from.get("node_id"))}
    if pinned:
        ev["pinned"] = True
    return ev


class _EventBuffer:
    """Batches events off the hot path: flushed every few milliseconds by a daemon thread.

    Events are a cache (every one is derivable from PostgreSQL), so a worker killed with
    events still buffered loses only the live view of them, never the record; a push of
    jobs flushes the buffer first, in the same pipeline, so order is kept. ``sending`` is
    held from taking events out of the buffer until Redis has them, by the flush thread and by
    a direct publish alike: otherwise a run's final event, sent at once, could overtake a
    node's event that the flush thread had taken but not yet sent.
    """

    FLUSH_S = 0.005

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.items: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.sending = threading.Lock()
        self.wake = threading.Event()
        threading.Thread(target=self._loop, name="nexusflow-events", daemon=True).start()
        atexit.register(self.flush)

    def add(self, events: list[dict[str, Any]]) -> None:
        with self.lock:
            self.items.extend(events)
        self.wake.set()

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            items, self.items = self.items, []
        return items

    def flush(self) -> None:
        with self.sending:
            self._send()

    def _send(self) -> None:
        items = self.take()
        if items:
            try:
                pipe = self.broker.redis.pipeline(transaction=False)
                self.broker._add_events(pipe, items)
                pipe.execute()
            except redis.RedisError as exc:
                logger.warning("could not append %d event(s) to Redis: %s", len(items), exc)

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(self.FLUSH_S)  # gather what the next few nodes add
            self.wake.clear()
            self.flush()


class Broker:
    """Pushes node jobs and events to Redis for one process."""

    def __init__(self, settings: Settings, *, buffer_events: bool = False) -> None:
        assert settings.redis_url, "settings must be resolved"
        self.settings = settings
        self.redis = get_redis(settings.redis_url)
        self._workers: dict[str, tuple[float, int]] = {}
        self._waiting_hint: dict[tuple[str, str], tuple[float, int]] = {}
        self._buffer = _EventBuffer(self) if buffer_events else None
        self._release = self.redis.register_script(_RELEASE_LUA)
        self.queues = {
            "default": Queue(settings.queue_name, connection=self.redis,
                             serializer=JSONSerializer),
            "sandbox": Queue(settings.sandbox_queue_name, connection=self.redis,
                             serializer=JSONSerializer),
        }

    def flush_events(self) -> None:
        """Append buffered events now (at the end of a job: a forked work-horse exits with
        ``os._exit``, which skips exit handlers)."""
        if self._buffer is not None:
            self._buffer.flush()

    def queue_for(self, name: str) -> Queue:
        return self.queues.get(name) or self.queues["default"]

    def live_workers(self, name: str) -> int:
        """Return how many RQ workers serve a queue (cached for a few seconds)."""
        seen = self._workers.get(name)
        now = time.monotonic()
        if seen is None or now - seen[0] > 5.0:
            from rq import Worker

            try:
                count = Worker.count(connection=self.redis, queue=self.queue_for(name))
            except redis.RedisError:
                count = 1
            seen = (now, count)
            self._workers[name] = seen
        return max(1, seen[1])

    def publish(self, pushes: Sequence[Push] = (), events: Iterable[dict[str, Any]] = ()) -> None:
        """Push jobs and append events in one Redis round trip."""
        events = list(events)
        pushes = self._not_covered(pushes)
        if self._buffer is not None:
            # Node events wait a few milliseconds; a run's own events (start, end) and any
            # push go out at once, after whatever is buffered.
            if not pushes and all(ev.get("node") is not None for ev in events):
                if events:
                    self._buffer.add(events)
                return
            with self._buffer.sending:
                self._send(pushes, self._buffer.take() + events)
            return
        self._send(pushes, events)

    def _send(self, pushes: Sequence[Push], events: list[dict[str, Any]]) -> None:
        if not pushes and not events:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            self._add_pushes(pipe, pushes)
            self._add_events(pipe, events)
            pipe.execute()
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"Redis at {mask_url(self.settings.redis_url)} failed: {exc}"
            ) from exc

    def _not_covered(self, pushes: Sequence[Push]) -> Sequence[Push]:
        """Drop "ready nodes" pushes that run jobs known to be waiting cover already."""
        if not self._waiting_hint or not pushes:
            return pushes
        now = time.monotonic()
        kept = []
        for p in pushes:
            if p.ready and not p.force and p.at is None:
                seen = self._waiting_hint.get((p.run_id, p.queue))
                if seen is not None and now - seen[0] < WAITING_HINT_S and \
                        seen[1] >= min(p.ready, self.live_workers(p.queue)):
                    continue
            kept.append(p)
        return kept

    def _add_pushes(self, pipe: Any, pushes: Sequence[Push]) -> None:
        now_items: dict[str, list[Any]] = {}
        waiting = self._waiting_run_jobs([p for p in pushes if p.ready and not p.force])
        for p in pushes:
            queue = self.queue_for(p.queue)
            if p.ready and p.at is not None and p.at > time.time() + 0.05:
                # A run job wanted later (a map item waits for its retry): it waits with the
                # node jobs that are due later, and is pushed (forced) when it is due.
                jid = f"nf-{p.run_id.replace('-', '')}-r{uuid.uuid4().hex[:10]}"
                pipe.hset(DUE_JOBS_KEY, jid, json.dumps([p.run_id, -1, 0, p.queue, False]))
                pipe.zadd(DUE_KEY, {jid: p.at})
                continue
            if p.ready:
                # Enough run jobs to keep every worker on this run, counting those that wait
                # in RQ already (a wide lattice would otherwise queue thousands that find
                # nothing to do).
                wanted = min(p.ready, self.live_workers(p.queue))
                n = wanted if p.force else max(0, wanted - waiting.get((p.run_id, p.queue), 0))
                if n:
                    key = run_jobs_key(p.run_id, p.queue)
                    pipe.incrby(key, n)
                    pipe.expire(key, RUN_JOBS_TTL_S)
                    waiting[(p.run_id, p.queue)] = waiting.get((p.run_id, p.queue), 0) + n
                    seen = self._waiting_hint.get((p.run_id, p.queue))
                    if seen is not None:
                        self._waiting_hint[(p.run_id, p.queue)] = (seen[0], seen[1] + n)
                for _ in range(n):
                    now_items.setdefault(queue.name, []).append(Queue.prepare_data(
                        RUN_JOB_FUNC, (p.run_id, p.queue), timeout=-1, result_ttl=0,
                        failure_ttl=24 * 3600,
                        job_id=f"nf-{p.run_id.replace('-', '')}-r{uuid.uuid4().hex[:10]}",
                        description=f"nexusflow {p.run_id}: ready nodes on {p.queue}"))
                continue
            jid = job_id(p.run_id, p.idx, p.attempt, p.wake)
            if p.at is not None and p.at > time.time() + 0.05:
                # Not RQ's scheduler: it works in whole seconds and polls once a second, so a
                # 1 s backoff took up to 3 s. ``release_due`` pushes it again when it is due.
                pipe.hset(DUE_JOBS_KEY, jid,
                          json.dumps([p.run_id, p.idx, p.attempt, p.queue, p.wake]))
                pipe.zadd(DUE_KEY, {jid: p.at})
                continue
            now_items.setdefault(queue.name, []).append(Queue.prepare_data(
                JOB_FUNC, (p.run_id, p.idx, p.attempt), timeout=-1, result_ttl=0,
                failure_ttl=24 * 3600, job_id=jid,
                description=f"nexusflow {p.run_id} node #{p.idx} attempt {p.attempt}"))
        for name, items in now_items.items():
            queue = next(q for q in self.queues.values() if q.name == name)
            queue.enqueue_many(items, pipeline=pipe)

    def next_due(self) -> float | None:
        """Return when the earliest waiting node job is due (UNIX time), if any waits."""
        first = self.redis.zrange(DUE_KEY, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def release_due(self, now: float | None = None, limit: int = 500) -> int:
        """Hand the node jobs that are due to RQ; return how many.

        Should this process die between taking the jobs out and pushing them, the
        reconciler pushes the nodes again once they are overdue (they are ``scheduled`` in
        PostgreSQL until claimed).
        """
        blobs = self._release(keys=[DUE_KEY, DUE_JOBS_KEY],
                              args=[now if now is not None else time.time(), limit])
        pushes = []
        for blob in blobs:
            # Redis is not ours alone (docs/security.md): an entry that does not parse is
            # dropped here, not allowed to fail the jobs taken out with it.
            try:
                run, idx, attempt, queue, wake = json.loads(blob)
                # idx -1: a run job that waited (a map item's retry), else a node job
                pushes.append(Push(str(run), int(idx), int(attempt), str(queue),
                                   wake=bool(wake), ready=int(int(idx) < 0),
                                   force=int(idx) < 0))
            except (ValueError, TypeError) as exc:
                logger.warning("dropped a waiting node job that does not parse (%s): %.200r",
                               exc, blob)
        if pushes:
            self._send(pushes, [])
        return len(pushes)

    def forget_due(self, job_ids: Sequence[str]) -> None:
        """Drop waiting node jobs (the reconciler pushed their nodes itself)."""
        if job_ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(DUE_KEY, *job_ids)
            pipe.hdel(DUE_JOBS_KEY, *job_ids)
            pipe.execute()

    def _waiting_run_jobs(self, pushes: Sequence[Push]) -> dict[tuple[str, str], int]:
        keys = list(dict.fromkeys((p.run_id, p.queue) for p in pushes))
        if not keys:
            return {}
        values = self.redis.mget([run_jobs_key(r, q) for r, q in keys])
        found = {k: int(v or 0) for k, v in zip(keys, values, strict=True)}
        now = time.monotonic()
        if len(self._waiting_hint) > 1000:
            self._waiting_hint = {k: v for k, v in self._waiting_hint.items()
                                  if now - v[0] < WAITING_HINT_S}
        self._waiting_hint.update((k, (now, v)) for k, v in found.items())
        return found

    def run_job_started(self, run_id: str, queue: str) -> None:
        """Count one waiting run job of a run as started (see ``Push.ready``)."""
        key = run_jobs_key(run_id, queue)
        if self.redis.decr(key) < 0:
            self.redis.set(key, 0, ex=RUN_JOBS_TTL_S)

    def _add_events(self, pipe: Any, events: Sequence[dict[str, Any]]) -> None:
        for ev in events:
            blob = json.dumps(ev, separators=(",", ":"), default=str)
            pipe.xadd(events_key(ev["run"]), {"e": blob}, maxlen=defaults.EVENT_STREAM_MAXLEN,
                      approximate=True)
            pipe.xadd(ALL_EVENTS_KEY, {"e": blob}, maxlen=defaults.ALL_RUNS_STREAM_MAXLEN,
                      approximate=True)

    def set_live_log(self, run_id: str, node_id: str, attempt: int, log: str) -> None:
        """Keep the log so far of a running attempt (already masked), for readers while it
        runs; the attempt's record replaces it when the node ends."""
        blob = json.dumps({"attempt": attempt, "log": log}, separators=(",", ":"))
        self.redis.set(live_log_key(run_id, node_id), blob, ex=LIVE_LOG_TTL_S)

    def live_log(self, run_id: str, node_id: str) -> dict[str, Any] | None:
        """Return ``{"attempt", "log"}`` of the node's running attempt, or ``None``."""
        raw = self.redis.get(live_log_key(run_id, node_id))
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def read_events(self, key: str, after: str = "0-0", *, block_ms: int | None = None,
                    count: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Return ``(stream id, event)`` pairs after ``after`` from one stream."""
        try:
            reply = self.redis.xread({key: after}, count=count, block=block_ms)
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"Redis at {mask_url(self.settings.redis_url)} failed: {exc}"
            ) from exc
        out: list[tuple[str, dict[str, Any]]] = []
        streams: Any = reply or []  # redis-py types XREAD's reply loosely
        for _key, entries in streams:
            for entry_id, fields in entries:
                out.append((entry_id.decode(), json.loads(fields[b"e"])))
        return out

"""Raw RQ, the yardstick: drain N no-op jobs, and the shapes with RQ's own ``depends_on``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from .jobs import noop, sleep

POLL_S = 0.002


def _queue(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer)


def drain(conn: redis.Redis, queue: str, n: int, timeout: float = 300.0) -> float:
    """Enqueue ``n`` no-op jobs in one pipelined call; return seconds until all are done.

    ``result_ttl=0`` as Nexus-Flow's own jobs: a finished job's hash is deleted, so "all done"
    is "none of the job hashes exists" (one EXISTS over all keys per poll).
    """
    q = _queue(conn, queue)
    tag = uuid.uuid4().hex[:8]
    items = [Queue.prepare_data(noop, job_id=f"b{tag}-{i}", result_ttl=0) for i in range(n)]
    keys = [Job.key_for(f"b{tag}-{i}") for i in range(n)]
    end = time.monotonic() + timeout
    t0 = time.perf_counter()
    q.enqueue_many(items)
    while conn.exists(*keys):
        if time.monotonic() > end:
            raise TimeoutError(f"raw RQ did not drain {n} jobs within {timeout}s")
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def _wait_status(conn: redis.Redis, key: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while True:
        status = conn.hget(key, "status")
        if status == b"finished":
            return
        if status == b"failed":
            raise RuntimeError(f"raw RQ job {key} failed")
        if time.monotonic() > end:
            raise TimeoutError(f"raw RQ job {key} not finished within {timeout}s")
        time.sleep(POLL_S)


def chain(conn: redis.Redis, queue: str, k: int, timeout: float = 300.0) -> float:
    """``k`` no-op jobs, each ``depends_on`` the one before; seconds until the last is done."""
    q = _queue(conn, queue)
    t0 = time.perf_counter()
    prev = None
    for _ in range(k):
        prev = q.enqueue(noop, depends_on=prev)
    assert prev is not None
    _wait_status(conn, prev.key, timeout)
    return time.perf_counter() - t0


def wide(conn: redis.Redis, queue: str, k: int, timeout: float = 300.0) -> float:
    """1 -> ``k`` no-ops -> 1 with ``depends_on``; seconds until the last job is done."""
    q = _queue(conn, queue)
    t0 = time.perf_counter()
    first = q.enqueue(noop)
    middle = [q.enqueue(noop, depends_on=first) for _ in range(k)]
    last = q.enqueue(noop, depends_on=middle)
    _wait_status(conn, last.key, timeout)
    return time.perf_counter() - t0


def diamond(conn: redis.Redis, queue: str, seconds: float = 1.0,
            timeout: float = 60.0) -> float:
    """A -> (B, C sleep ``seconds``) -> D with ``depends_on``."""
    q = _queue(conn, queue)
    t0 = time.perf_counter()
    a = q.enqueue(noop)
    b = q.enqueue(sleep, seconds, depends_on=a)
    c = q.enqueue(sleep, seconds, depends_on=a)
    d = q.enqueue(noop, depends_on=[b, c])
    _wait_status(conn, d.key, timeout)
    return time.perf_counter() - t0


SHAPES: dict[str, Callable[..., float]] = {"chain": chain, "wide": wide, "diamond": diamond}

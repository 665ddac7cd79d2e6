"""Celery, the second peer: the same no-op shapes as Celery canvas primitives on the same Redis.

Celery is what a Python user most often reaches for beside RQ. The bench starts its worker
(``celery -A bench.celerypeer worker``, the prefork pool with as many processes as Nexus-Flow
gets workers) with Redis as both broker and result backend, in the bench's private Redis
database, and times each shape from the client's ``apply_async`` until the last task's
result is in the backend:

* wide k: ``noop | chord([noop] * k, noop)``;
* chain k: ``chain(noop * k)``;
* diamond: ``noop | chord([sleep, sleep], noop)``;
* map n: ``chord([item(i) for i in range(n)], collect)``: a group of n no-op tasks whose
  results are gathered in order, as a map node's output is.

Celery's defaults are kept (acknowledged on receipt, prefetch 4 per process): it does less
for a task than Nexus-Flow does for a node (no durable record of each task's state, input,
output and log), which is what a user who picks it gets.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from celery import Celery, chain, chord, group

QUEUE = "bench-celery"

app = Celery("nfbench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"),
             backend=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    task_send_sent_event=False,
)


@app.task(name="bench.noop")
def noop(*_args: Any) -> None:
    """Do nothing (a chord member's or callback's parents' results are ignored)."""


@app.task(name="bench.item")
def item(i: int) -> int:
    """A map item: give back the item."""
    return i


@app.task(name="bench.collect")
def collect(results: list[Any]) -> int:
    """A chord's callback: receives every member's result, in order."""
    return len(results)


@app.task(name="bench.sleep")
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def configure(redis_url: str) -> None:
    """Point this process's app (the bench's client side) at the bench's Redis database; the
    worker reads ``BENCH_REDIS_URL`` from its environment."""
    app.conf.broker_url = redis_url
    app.conf.result_backend = redis_url


def worker_cmd(processes: int) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "bench.celerypeer", "worker",
            "--pool", "prefork", "--concurrency", str(processes), "--queues", QUEUE,
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]


def wait_ready(processes: int, timeout: float = 120.0) -> None:
    """Wait until the worker answers a ping and has run one task per process."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if app.control.ping(timeout=0.5):
                break
        except Exception:
            pass
        time.sleep(0.2)
    else:
        raise TimeoutError(f"the Celery worker did not answer within {timeout}s")
    group(noop.si() for _ in range(4 * processes)).apply_async().get(timeout=timeout)


def _run(sig: Any, timeout: float) -> float:
    t0 = time.perf_counter()
    sig.apply_async().get(timeout=timeout, disable_sync_subtasks=False)
    return time.perf_counter() - t0


def wide(k: int, timeout: float = 300.0) -> float:
    return _run(chain(noop.si(), chord([noop.si() for _ in range(k)], noop.si())), timeout)


def chain_of(k: int, timeout: float = 300.0) -> float:
    return _run(chain(*(noop.si() for _ in range(k))), timeout)


def diamond(seconds: float = 1.0, timeout: float = 60.0) -> float:
    return _run(chain(noop.si(), chord([sleep.si(seconds), sleep.si(seconds)], noop.si())),
                timeout)


def map_items(n: int, timeout: float = 300.0) -> float:
    return _run(chord([item.si(i) for i in range(n)], collect.s()), timeout)


def purge() -> None:
    try:
        app.control.purge()
    except Exception:
        pass

"""Nexus-Flow runs, timed from ``start_run`` until the run-level final event arrives."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

FINAL = {"succeeded", "failed", "canceled"}


def at_seconds(at: str) -> float:
    """Parse an event's ``at`` (ISO 8601, UTC, milliseconds) to a UNIX time."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


@dataclass
class RunResult:
    run_id: str
    status: str
    seconds: float
    events: int
    latencies_ms: list[float] = field(default_factory=list)
    """Event ``at`` to arrival at this XREAD BLOCK client, for events stamped after the client
    started reading (earlier ones were waiting in the stream, not travelling)."""


def run_and_wait(engine: Any, doc: Any, *, timeout: float = 600.0,
                 client: redis.Redis | None = None,
                 on_started: Callable[[str], Any] | None = None) -> RunResult:
    """Start a run of ``doc`` and read its event stream until the run is final."""
    from nexusflow_kernel.transport.broker import events_key

    conn = client or engine.redis
    t0 = time.perf_counter()
    run_id = engine.start_run(doc)
    if on_started is not None:
        on_started(run_id)
    reading_since = time.time()
    key = events_key(run_id)
    after = "0-0"
    end = time.monotonic() + timeout
    count = 0
    latencies: list[float] = []
    while True:
        reply = conn.xread({key: after}, count=10_000, block=1000)
        arrived = time.time()
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                after = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                ev = json.loads(fields[b"e"])
                count += 1
                at = at_seconds(ev["at"])
                if at >= reading_since:
                    latencies.append(max(0.0, (arrived - at) * 1000))
                if ev.get("node") is None and ev.get("state") in FINAL:
                    return RunResult(run_id, ev["state"], time.perf_counter() - t0, count,
                                     latencies)
        if time.monotonic() > end:
            run = engine.get_run(run_id, outputs=False)
            raise TimeoutError(f"run {run_id} not final within {timeout}s: {run['status']}")

"""Which workers live, and what they serve: the queues and how they run code.

Every worker process refreshes ``nexusflow:alive:<name>`` every heartbeat (a short TTL, so a
killed worker disappears within seconds, on any host) and lists its name in the set
``nexusflow:workers``. The key's value is the worker's advert, JSON::

    {"name": "host:pid", "queues": ["default", "sandbox"],
     "isolation": "auto", "code": "docker" | "process" | "none" | "unavailable" | "checking",
     "problem": "no Docker engine answers at ..." | null}

``queues`` are the logical names (``default``, ``sandbox``), ``isolation`` the configured code
isolation policy and ``code`` what code nodes get from it now (``checking`` for the second or
so a new worker takes to learn whether a Docker engine answers). RQ's own worker registrations
outlive a killed worker by minutes; these do not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import defaults

WORKERS_KEY = f"{defaults.KEY_PREFIX}:workers"
"""The set of worker names that advertised themselves (dead ones are dropped by readers)."""

QUEUES = ("default", "sandbox")
"""The logical queues a worker can serve (``nexusflow worker --queues``)."""


def alive_key(worker_name: str) -> str:
    """Return the Redis key a live worker process keeps refreshing."""
    return f"{defaults.KEY_PREFIX}:alive:{worker_name}"


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker process, as it advertised itself."""

    name: str
    queues: tuple[str, ...]
    isolation: str = "auto"
    code: str = "unavailable"
    problem: str | None = None

    @property
    def runs_code(self) -> bool:
        """Whether code nodes (``code``, ``@task``) can run on this worker now (a worker still
        checking for Docker is given the benefit of the doubt)."""
        return self.code != "unavailable"

    @property
    def expected_code(self) -> str:
        """What code nodes get here: ``code``, or while it checks, what the policy asks."""
        if self.code != "checking":
            return self.code
        return "docker" if self.isolation in ("auto", "docker") else self.isolation


def advert(name: str, queues: Iterable[str], isolation: str, code: str,
           problem: str | None = None) -> str:
    """Return the advert text a worker stores under its alive key."""
    return json.dumps({"name": name, "queues": list(queues), "isolation": isolation,
                       "code": code, "problem": problem}, sort_keys=True)


def advertise(redis: Any, name: str, text: str | None, ttl_s: int) -> None:
    """Mark worker ``name`` alive for ``ttl_s`` seconds (with its advert, when it has one)."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(alive_key(name), text if text is not None else 1, ex=ttl_s)
    if text is not None:
        pipe.sadd(WORKERS_KEY, name)
    pipe.execute()


def withdraw(redis: Any, name: str) -> None:
    """Say at once that worker ``name`` is gone (it stops cleanly)."""
    pipe = redis.pipeline(transaction=False)
    pipe.delete(alive_key(name))
    pipe.srem(WORKERS_KEY, name)
    pipe.execute()


def live_workers(redis: Any) -> list[WorkerInfo]:
    """Return every live worker that advertised itself (two Redis round trips)."""
    names = sorted(n.decode() if isinstance(n, bytes) else n
                   for n in redis.smembers(WORKERS_KEY))
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.get(alive_key(name))
    found, dead = [], []
    for name, raw in zip(names, pipe.execute(), strict=True):
        info = _parse(name, raw)
        if info is None:
            dead.append(name)
        else:
            found.append(info)
    if dead:  # its key expired: the worker died without withdrawing
        redis.srem(WORKERS_KEY, *dead)
    return found


def serving(workers: Iterable[WorkerInfo], queue: str) -> list[WorkerInfo]:
    """Return the workers of ``workers`` that serve logical queue ``queue``."""
    return [w for w in workers if queue in w.queues]


def no_worker_message(queue: str) -> str:
    """Say that nothing serves ``queue`` and what to start (the line every front end shows)."""
    return (f"waiting: no live worker serves queue {queue!r} "
            f"(start `nexusflow worker --queues {queue}`)")


def _parse(name: str, raw: Any) -> WorkerInfo | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    queues = tuple(q for q in data.get("queues") or () if isinstance(q, str))
    return WorkerInfo(name=name, queues=queues, isolation=str(data.get("isolation") or "auto"),
                      code=str(data.get("code") or "unavailable"), problem=data.get("problem"))


__all__ = ["QUEUES", "WORKERS_KEY", "WorkerInfo", "advert", "advertise", "alive_key",
           "live_workers", "no_worker_message", "serving", "withdraw"]

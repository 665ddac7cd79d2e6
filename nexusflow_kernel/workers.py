"""Local worker processes: the one way every part launches ``nexusflow worker``.

The CLI (``nexusflow run --workers N``), a notebook (``f.run(workers=N)``), the Jupyter server
extension's supervised workers, the benchmark and the tests all start workers with
:func:`worker_argv` and :meth:`Settings.to_env` (or :class:`LocalWorkers`, which uses both), so
a worker always gets the launcher's backends and policies, and its command line is written
once. The engine never imports the worker package: it runs it as a program.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from .procs import pid_alive
from .services import resolve_backends
from .settings import Settings

_ALIVE: weakref.WeakSet[LocalWorkers] = weakref.WeakSet()


def worker_argv(processes: int = 1, *, queues: Sequence[str] = (), grace_s: float | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """Return the command line of ``nexusflow worker`` run by this Python."""
    argv = [sys.executable, "-m", "nexusflow_worker", "--processes", str(int(processes))]
    names = [q.strip() for q in queues if q.strip()]
    if names:
        argv += ["--queues", ",".join(names)]
    if grace_s is not None:
        argv += ["--grace", f"{grace_s:g}"]
    return [*argv, *extra]


def worker_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment with ``settings`` (backends and policies) on top."""
    env = dict(os.environ)
    env.update(settings.to_env())
    env.update(extra or {})
    return env


class LocalWorkers:
    """``python -m nexusflow_worker --processes N`` started from this kernel.

    The workers get this process's environment plus the engine's resolved backend URLs, so
    they serve the same PostgreSQL and Redis as the notebook. They stop with ``stop()``, when
    the kernel exits, or — for a test of durability — die at once with ``kill()``.
    """

    def __init__(self, processes: int = 2, *, settings: Settings | None = None,
                 queues: str = "default", env: dict[str, str] | None = None,
                 grace_s: float = 10.0) -> None:
        resolved = resolve_backends(settings or Settings.from_env())
        self.settings = resolved
        self.processes = int(processes)
        self.proc = subprocess.Popen(
            worker_argv(self.processes, queues=queues.split(","), grace_s=grace_s),
            env=worker_env(resolved, env), start_new_session=True, stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        _ALIVE.add(self)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> LocalWorkers:
        """Wait until at least one of these workers serves the queue."""
        from .transport.broker import get_redis

        redis = get_redis(self.settings.redis_url or "")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.running:
                raise RuntimeError(f"the workers exited with status {self.proc.returncode}")
            if worker_count(self.settings, redis=redis) > 0:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"the local workers did not start within {timeout:g} s")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the workers (the node in hand finishes first); kill them after ``timeout``."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        _ALIVE.discard(self)

    def kill(self) -> None:
        """Kill the workers and their children at once (SIGKILL), as a crash would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        _ALIVE.discard(self)

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited ({self.proc.returncode})"
        return f"<LocalWorkers pid={self.pid} processes={self.processes} {state}>"


def worker_count(settings: Settings, *, redis: Any = None, queue: str | None = None) -> int:
    """Return how many RQ workers registered in Redis serve the engine's default queue."""
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    from .transport.broker import get_redis

    conn = redis if redis is not None else get_redis(settings.redis_url or "")
    name = queue or settings.queue_name
    host = socket.gethostname()
    count = 0
    rq_queue = Queue(name, connection=conn, serializer=JSONSerializer)
    for w in Worker.all(connection=conn, queue=rq_queue, serializer=JSONSerializer):
        if w.get_state() == "suspended":
            continue
        if w.hostname == host and w.pid and not pid_alive(int(w.pid)):
            continue  # a killed worker's registration outlives it until its TTL
        count += 1
    return count



@atexit.register
def _stop_all() -> None:
    for workers in list(_ALIVE):
        try:
            workers.stop(timeout=5)
        except Exception:
            pass

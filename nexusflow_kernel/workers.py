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
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import BackendUnavailable, NexusFlowError
from .services import resolve_backends
from .settings import Settings
from .transport import presence
from .transport.presence import WorkerInfo

if TYPE_CHECKING:  # pragma: no cover
    from .model.compiler import CompiledFlow

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
                 queues: str | Sequence[str] = "default", env: dict[str, str] | None = None,
                 grace_s: float = 10.0) -> None:
        resolved = resolve_backends(settings or Settings.from_env())
        self.settings = resolved
        self.processes = int(processes)
        names = queues.split(",") if isinstance(queues, str) else list(queues)
        self.queues = tuple(q.strip() for q in names if q.strip()) or ("default",)
        """The logical queues these workers serve (``default``, ``sandbox``)."""
        self.proc = subprocess.Popen(
            worker_argv(self.processes, queues=self.queues, grace_s=grace_s),
            env=worker_env(resolved, env), start_new_session=True, stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        _ALIVE.add(self)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> LocalWorkers:
        """Wait until a live worker serves each of these workers' queues."""
        from .transport.broker import get_redis

        redis = get_redis(self.settings.redis_url or "")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.running:
                raise RuntimeError(f"the workers exited with status {self.proc.returncode}")
            live = live_workers(self.settings, redis=redis)
            if all(presence.serving(live, q) for q in self.queues):
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
        return (f"<LocalWorkers pid={self.pid} processes={self.processes} "
                f"queues={','.join(self.queues)} {state}>")


def live_workers(settings: Settings | None = None, *, redis: Any = None) -> list[WorkerInfo]:
    """Return the worker processes alive now (on any host): their queues and how they run
    code (``WorkerInfo``). Settings default to the environment's."""
    from .transport.broker import get_redis

    if redis is None:
        settings = resolve_backends(settings or Settings.from_env())
        redis = get_redis(settings.redis_url or "")
    return presence.live_workers(redis)


def worker_count(settings: Settings, *, redis: Any = None, queue: str = "default") -> int:
    """Return how many live worker processes serve the logical queue ``queue``."""
    return len(presence.serving(live_workers(settings, redis=redis), queue))


class NoWorkerForTest(BackendUnavailable):
    """No live worker serves the queue a one-node test needs (nothing was queued)."""


def await_test_worker(count: Callable[[], int], queue: str, node_id: object,
                      wait_s: float) -> None:
    """Wait up to ``wait_s`` seconds (one may be starting) until ``count()`` (live workers
    serving ``queue``) is above 0; else raise ``NoWorkerForTest`` saying what to start."""
    waited = time.monotonic() + wait_s
    while count() == 0 and time.monotonic() < waited:
        time.sleep(0.2)
    if count() == 0:
        raise NoWorkerForTest(
            f"no worker serves the {queue!r} queue, so node {node_id!r} cannot be tested"
            " now: start workers with `nexusflow worker`"
            + (" --queues default,sandbox" if queue == "sandbox" else "")
            + " (JupyterLab's Nexus-Flow extension starts local ones)")


# ---------------------------------------------------------------- what a run needs of them
class WorkersCannotRun(NexusFlowError):
    """The live workers cannot run a flow as asked (code isolation); nothing was started."""


def queues_needed(compiled: CompiledFlow) -> dict[str, list[str]]:
    """Return the logical queues a flow's nodes go through, each with its node ids."""
    from .runstate.transitions import queue_for_type

    out: dict[str, list[str]] = {}
    for node in compiled.document.nodes:
        out.setdefault(queue_for_type(node.type), []).append(node.id)
    return dict(sorted(out.items()))


def code_nodes(compiled: CompiledFlow) -> dict[str, list[str]]:
    """Return, per logical queue, the nodes that run user code under the code isolation."""
    from .nodes import get_node_type
    from .runstate.transitions import queue_for_type

    out: dict[str, list[str]] = {}
    for node in compiled.document.nodes:
        node_type = get_node_type(node.type)
        if node_type is not None and node_type.runs_code:
            out.setdefault(queue_for_type(node.type), []).append(node.id)
    return out


def isolation_choice(settings: Settings) -> str | None:
    """Return the code isolation this process asked for, or None (it left it to the workers).

    ``NEXUSFLOW_CODE_ISOLATION`` (or settings built with another policy than ``auto``) reaches
    only the workers this process starts; the others run code as they were started."""
    if "NEXUSFLOW_CODE_ISOLATION" in os.environ or settings.code_isolation != "auto":
        return settings.code_isolation
    return None


def check_code_isolation(compiled: CompiledFlow, live: Sequence[WorkerInfo],
                         choice: str | None) -> None:
    """Raise ``WorkersCannotRun`` when a node that runs code would reach a live worker that
    cannot run code, or that runs it otherwise than ``choice`` asks (before anything starts).

    Queues that no live worker serves are left to the waiting report (a worker may come).
    """
    for queue, nodes in code_nodes(compiled).items():
        serving = presence.serving(live, queue)
        names = ", ".join(repr(n) for n in nodes[:3]) + (" ..." if len(nodes) > 3 else "")
        what = f"node{'s' * (len(nodes) > 1)} {names} run{'s' * (len(nodes) == 1)} code"
        broken = [w for w in serving if not w.runs_code]
        if broken:
            w = broken[0]
            raise WorkersCannotRun(
                f"{what}, but {len(broken)} of the {len(serving)} live workers serving queue "
                f"{queue!r} cannot run code: code isolation {w.isolation!r} and {w.problem}; "
                "start a Docker engine (scripts/setup-docker.sh, then `nexusflow sandbox "
                "build`), or start the workers with NEXUSFLOW_CODE_ISOLATION=process (a "
                "limited subprocess, not a security boundary)")
        if choice is None:
            continue
        wanted = "docker" if choice == "auto" else choice  # auto: docker, or no code at all
        other = sorted({w.expected_code for w in serving if w.expected_code != wanted})
        if other:
            raise WorkersCannotRun(
                f"{what} and this process asks for code isolation {choice!r} "
                "(NEXUSFLOW_CODE_ISOLATION), but it does not apply to this run: the live "
                f"workers serving queue {queue!r} run code with {', '.join(map(repr, other))}. "
                "Code isolation is the workers' setting (it reaches only workers started "
                "from here, e.g. with workers=N): set it where those workers start (for "
                "JupyterLab's workers, in the environment of `jupyter lab`; `./dev lab` "
                "picks one and says which), or unset it here to use theirs")


@atexit.register
def _stop_all() -> None:
    for workers in list(_ALIVE):
        try:
            workers.stop(timeout=5)
        except Exception:
            pass

"""Supervise the local worker: start it with the server, restart it when it dies, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
import time
from typing import Any

STEADY_S = 30.0
"""A worker that ran this long before dying is restarted without the growing backoff."""

MAX_BACKOFF_S = 30.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the worker if the server dies without stopping it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class WorkerSupervisor:
    """Keep one worker process (``argv``) running until :meth:`stop`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Any, *,
                 backoff_s: float = 1.0) -> None:
        self.argv = argv
        self.env = env
        self.log = log
        self.backoff_s = backoff_s
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        delay = self.backoff_s
        while not self._stopping:
            started = time.monotonic()
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                self.log.error("Nexus-Flow: cannot start the local worker: %s", exc)
                code = None
            else:
                code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STEADY_S:
                delay = self.backoff_s
            self.restarts += 1
            self.log.warning("Nexus-Flow: local worker exited (code %s); restarting in %.1fs",
                             code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker: SIGTERM (it finishes or hands back its node), then SIGKILL."""
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

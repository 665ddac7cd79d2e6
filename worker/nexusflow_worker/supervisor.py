"""``nexusflow worker``: N worker processes, a reconciler, and a graceful stop.

The supervisor starts each worker as a child process, restarts any that dies, runs the
reconciler loop, and on SIGTERM or SIGINT asks every child for a warm shutdown (the node in
hand finishes), then waits up to ``grace_s`` before killing what is left.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from nexusflow_kernel.services import resolve_backends
from nexusflow_kernel.settings import Settings
from nexusflow_kernel.workers import worker_env

from .jobs import Runtime
from .reconciler import Reconciler
from .timer import DueReleaser

logger = logging.getLogger(__name__)


@dataclass
class Supervisor:
    """Keeps ``processes`` worker children alive until told to stop."""

    settings: Settings
    processes: int = 1
    queues: list[str] = field(default_factory=lambda: ["default"])
    fork: bool = False
    reconcile: bool = True
    grace_s: float = 60.0
    log_level: str = "WARNING"
    metrics_port: int | None = None
    metrics_ip: str = "127.0.0.1"
    children: list[subprocess.Popen] = field(default_factory=list)
    _stopping: bool = False

    def child_env(self) -> dict[str, str]:
        return worker_env(self.settings)

    def spawn(self, n: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "nexusflow_worker.child", "--queues", ",".join(self.queues),
               "--log-level", self.log_level]
        if self.fork:
            cmd.append("--fork")
        return subprocess.Popen(cmd, env=self.child_env(), start_new_session=False)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit code."""
        exporter = None
        if self.metrics_port is not None:  # before any child starts: they get the folder
            from .metrics import MetricsServer

            exporter = MetricsServer(self.metrics_port, self.metrics_ip)
            exporter.start()
        try:
            return self._run(exporter)
        finally:
            if exporter is not None:
                exporter.stop()

    def _run(self, exporter: Any) -> int:
        zero_config = self.settings.database_url is None and self.settings.redis_url is None
        self.settings = resolve_backends(self.settings)
        self._log_policies(zero_config)
        rt = Runtime(self.settings)
        self._sweep_sandbox()
        reconciler = Reconciler(rt) if self.reconcile else None
        if reconciler:
            reconciler.start()
        releaser = DueReleaser(rt)  # every host: the release is atomic
        releaser.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.children = [self.spawn(i) for i in range(self.processes)]
        restarts: dict[int, float] = {}
        try:
            while not self._stopping:
                for i, child in enumerate(self.children):
                    if child.poll() is not None and not self._stopping:
                        wait = restarts.get(i, 0.0)
                        logger.warning("worker process %s exited with %s; restarting",
                                       child.pid, child.returncode)
                        time.sleep(wait)
                        restarts[i] = min(10.0, wait * 2 or 0.5)
                        if exporter is not None:
                            exporter.child_exited(child.pid)
                        self.children[i] = self.spawn(i)
                if exporter is not None:
                    exporter.processes(sum(c.poll() is None for c in self.children))
                time.sleep(0.2)
        finally:
            releaser.stop()
            if reconciler:
                reconciler.stop()
            self.stop_children()
        return 0

    def _log_policies(self, zero_config: bool) -> None:
        """Say what this worker's own configuration lets nodes do (workers enforce it, so it
        comes from here, never from the server that started a run)."""
        if self.settings.allows_private_http() and not zero_config:
            logger.warning(
                "http nodes on these workers may reach private and loopback addresses "
                "(NEXUSFLOW_ALLOW_PRIVATE_HTTP=1), the backends included: allow it only where "
                "every user of these workers may reach this network")
        else:
            logger.info("http nodes may reach private addresses: %s",
                        "yes (zero-config, one user)" if self.settings.allows_private_http()
                        else "no")

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping:  # a second signal: stop now
            for child in self.children:
                if child.poll() is None:
                    child.kill()
            return
        self._stopping = True

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        end = time.monotonic() + self.grace_s
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop within %ss; killing it", child.pid,
                               self.grace_s)
                child.kill()
                child.wait()

    def _sweep_sandbox(self) -> None:
        """Remove sandbox containers that dead workers left behind (when Docker is there)."""
        if "sandbox" not in self.queues:
            return
        try:
            from .sandbox import sweep_orphans
        except ImportError:
            return
        try:
            sweep_orphans()
        except Exception as exc:
            logger.warning("could not sweep orphaned sandbox containers: %s", exc)

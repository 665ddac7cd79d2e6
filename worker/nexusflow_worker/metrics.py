"""Prometheus metrics of the workers: prometheus_client in multiprocess mode.

``nexusflow worker --metrics-port 9108`` makes a fresh folder, gives it to every child
process as ``PROMETHEUS_MULTIPROC_DIR`` and serves ``/metrics`` from the supervisor with a
``MultiProcessCollector`` over it. Why multiprocess mode rather than one port per child or the
supervisor asking its children: the nodes run in separate processes (RQ workers) that die and
are restarted; each writes its counters and histograms to its own memory-mapped file (a node's
end costs a memory write, no message), the supervisor sums them when scraped, and what a dead
child counted stays counted. One port per machine, whatever ``--processes`` is.

Metrics are made on first use, in the process that uses them (after the supervisor set the
folder in the environment: prometheus_client picks its storage when a metric is made). Without
the folder they are plain in-process metrics nobody reads. Recording never raises.

Metrics (labels):

- ``nexusflow_node_duration_seconds`` (histogram; ``type``, ``status``): each node attempt or
  map item that ran, when it ends;
- ``nexusflow_runs_finished_total`` (``status``): a worker's transaction closed a run;
- ``nexusflow_lease_losses_total`` (``by``): ``worker`` when a worker found its lease gone,
  ``reconciler`` when an expired lease was recorded as a lost attempt;
- ``nexusflow_worker_processes`` (gauge): the supervisors' live worker processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from typing import Any

logger = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_lock = threading.Lock()
_made: dict[str, Any] = {}


def _metric(name: str) -> Any:
    made = _made.get(name)
    if made is not None:
        return made
    with _lock:
        if not _made:
            from prometheus_client import Counter, Gauge, Histogram, values

            if os.environ.get(ENV) and values.ValueClass is values.MutexValue:
                # prometheus_client was imported before the folder was set: pick again
                values.ValueClass = values.get_value_class()
            _made.update(
                duration=Histogram(
                    "nexusflow_node_duration_seconds",
                    "Duration of node attempts and map items, by node type and outcome",
                    ["type", "status"],
                    buckets=BUCKETS,
                ),
                runs=Counter(
                    "nexusflow_runs_finished_total",
                    "Runs closed by a worker's transaction, by final status",
                    ["status"],
                ),
                leases=Counter(
                    "nexusflow_lease_losses_total",
                    "Node leases lost (by: worker, reconciler)",
                    ["by"],
                ),
                processes=Gauge(
                    "nexusflow_worker_processes",
                    "Live worker processes of the supervisors",
                    multiprocess_mode="livesum",
                ),
            )
    return _made[name]


def node_ended(node_type: str, status: str, duration_ms: float | None) -> None:
    """Count one node attempt (or map item) that ran for ``duration_ms``."""
    if duration_ms is None:
        return
    try:
        _metric("duration").labels(node_type, status).observe(max(0.0, duration_ms) / 1000.0)
    except Exception as exc:  # metrics never stop a node
        logger.debug("metrics: %s", exc)


def runs_finished(events: Any) -> None:
    """Count the runs that ``events`` (one transaction's) close."""
    try:
        for ev in events or ():
            if ev.get("node") is None and ev.get("state") in ("succeeded", "failed", "canceled"):
                _metric("runs").labels(ev["state"]).inc()
    except Exception as exc:
        logger.debug("metrics: %s", exc)


def lease_lost(by: str, count: int = 1) -> None:
    """Count ``count`` lost leases, found by the ``worker`` or the ``reconciler``."""
    if count <= 0:
        return
    try:
        _metric("leases").labels(by).inc(count)
    except Exception as exc:
        logger.debug("metrics: %s", exc)


class MetricsServer:
    """The supervisor's side: the folder, the children's environment, ``/metrics``."""

    def __init__(self, port: int, ip: str = "127.0.0.1") -> None:
        self.port = port
        self.ip = ip
        self.path = tempfile.mkdtemp(prefix="nexusflow-metrics-")
        os.environ[ENV] = self.path  # this process's own metrics, and every child's
        self._server: Any = None

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.path)
        self._server, _thread = start_http_server(self.port, addr=self.ip, registry=registry)
        logger.info("worker metrics on http://%s:%s/metrics", self.ip, self.port)

    def processes(self, live: int) -> None:
        try:
            _metric("processes").set(live)
        except Exception as exc:
            logger.debug("metrics: %s", exc)

    def child_exited(self, pid: int) -> None:
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, self.path)
        except Exception as exc:
            logger.debug("metrics: %s", exc)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["ENV", "MetricsServer", "lease_lost", "node_ended", "runs_finished"]

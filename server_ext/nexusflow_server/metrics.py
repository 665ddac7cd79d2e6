"""Prometheus metrics of the Nexus-Flow service (``GET <base>/metrics``), with prometheus_client.

What the deployment holds is read when Prometheus scrapes (a collector, so every replica answers
the same): runs by status from PostgreSQL, the depth of each queue and of the timer's due set and
the live workers from Redis. What this process did is counted as it happens: trigger firings by
kind and the schedule firings skipped by their misfire policy (per replica: sum them). The
workers' own metrics (node durations, runs closed, lease losses) are on their metrics port
(``nexusflow worker --metrics-port``, ``nexusflow_worker/metrics.py``).

Each app has its own ``CollectorRegistry`` (not prometheus_client's global one, which a Jupyter
server fills with its own metrics).

Who may scrape (``MetricsHandler``): a request bearing the metrics token
(``NexusFlow.metrics_token``, ``NEXUSFLOW_METRICS_TOKEN``: Prometheus's
``authorization: {credentials_file: ...}``), or a caller the service identifies who administers
Nexus-Flow (on a Hub, the ``custom:nexusflow:admin`` scope). Nobody else: 401 without a token,
403 for a user.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from .base import NexusFlowHandler

logger = logging.getLogger(__name__)

TRIGGER_KINDS = ("schedule", "queue", "webhook")
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")


class StateCollector:
    """Collect the deployment's state at scrape time (blocking: called from a thread)."""

    def __init__(self, nf: Any) -> None:
        self.nf = nf

    def describe(self) -> list[Any]:
        return []  # computed on scrape: nothing to check at registration

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from nexusflow_kernel.transport.broker import DUE_KEY
        from nexusflow_kernel.transport.presence import live_workers

        engine = self.nf.engine()
        with engine.pool.connection() as conn:
            counts = {
                r["status"]: r["n"]
                for r in conn.execute(
                    "SELECT status, count(*) AS n FROM executions GROUP BY status"
                ).fetchall()
            }
            conn.commit()
        runs = GaugeMetricFamily(
            "nexusflow_runs",
            "Runs in the database by status (what retention keeps)",
            labels=["status"],
        )
        for status in RUN_STATUSES:
            runs.add_metric([status], float(counts.get(status, 0)))
        yield runs

        redis = engine.redis
        settings = engine.settings
        queues = {"default": settings.queue_name, "sandbox": settings.sandbox_queue_name}
        pipe = redis.pipeline(transaction=False)
        for name in queues.values():
            pipe.llen(f"rq:queue:{name}")
        pipe.zcard(DUE_KEY)
        *lengths, due = pipe.execute()
        depth = GaugeMetricFamily(
            "nexusflow_queue_depth", "Jobs waiting in each queue for a worker", labels=["queue"]
        )
        for kind, length in zip(queues, lengths, strict=True):
            depth.add_metric([kind], float(length))
        yield depth
        yield GaugeMetricFamily(
            "nexusflow_due_jobs",
            "Node jobs waiting for their time (retries, delays, timeouts)",
            value=float(due),
        )

        workers = live_workers(redis)
        live = GaugeMetricFamily(
            "nexusflow_live_workers", "Live worker processes serving each queue", labels=["queue"]
        )
        for kind in queues:
            live.add_metric([kind], float(sum(kind in w.queues for w in workers)))
        yield live


class ServiceMetrics:
    """The registry of one app: what it counts, and the state collector."""

    def __init__(self, nf: Any) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self.firings = Counter(
            "nexusflow_trigger_firings_total",
            "Runs started by triggers in this process, by kind",
            ["kind"],
            registry=self.registry,
        )
        for kind in TRIGGER_KINDS:
            self.firings.labels(kind)
        self.skipped = Counter(
            "nexusflow_schedule_skipped_firings_total",
            "Schedule firings missed while no service ran and not run "
            "(misfire policy), counted by this process",
            registry=self.registry,
        )
        self.registry.register(StateCollector(nf))  # type: ignore[arg-type]

    def fired(self, kind: str, count: int = 1, skipped: int = 0) -> None:
        """Count ``count`` runs started by a ``kind`` trigger (and firings skipped)."""
        if count > 0:
            self.firings.labels(kind).inc(count)
        if skipped > 0:
            self.skipped.inc(skipped)

    def render(self) -> bytes:
        """Return the exposition text (blocking: reads PostgreSQL and Redis)."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class MetricsHandler(NexusFlowHandler):
    """``GET <base>/metrics``: the metrics token, or an administrator (see the module)."""

    def _metrics_token(self) -> bool:
        expected = self.nf.metrics_token
        raw = (self.request.headers.get("Authorization") or "").strip()
        kind, _, given = raw.partition(" ")
        return bool(
            expected
            and kind.lower() in ("bearer", "token")
            and hmac.compare_digest(given.strip().encode(), expected.encode())
        )

    async def prepare(self) -> None:  # type: ignore[override]
        if self._metrics_token():
            self._nf_by_metrics_token = True
            return  # a scraper, not a user: no identity to look up
        self._nf_by_metrics_token = False
        await super().prepare()

    async def get(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        from .base import Forbidden

        if not self._nf_by_metrics_token:
            if self.current_user is None:
                raise web_unauthorized()
            if not self.is_admin:
                raise Forbidden(
                    "metrics are for Nexus-Flow administrators and the metrics "
                    "token (NEXUSFLOW_METRICS_TOKEN)"
                )
        body = await self.sync(self.nf.metrics().render)
        self.finish(body, set_content_type=CONTENT_TYPE_LATEST)


def web_unauthorized() -> Exception:
    from tornado import web

    return web.HTTPError(401, "a token is required")


__all__ = ["MetricsHandler", "ServiceMetrics", "StateCollector"]

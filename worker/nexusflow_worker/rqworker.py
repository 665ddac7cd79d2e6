"""The RQ worker processes that run node jobs."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty

from nexusflow_kernel.nodes import node_types
from nexusflow_kernel.settings import Settings
from nexusflow_kernel.transport.broker import get_redis
from nexusflow_kernel.transport.presence import withdraw

from .guard import GuardedJob, GuardedWorker
from .jobs import Runtime, runtime, set_runtime
from .presence import Advert

logger = logging.getLogger(__name__)

DRAIN_S = 50.0
"""How long a stopping worker waits for its nodes that wait on I/O in threads (within the
supervisor's grace)."""


class NoDeathPenalty(BaseDeathPenalty):
    """Node timeouts are enforced by the dispatcher itself (it owns SIGALRM)."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class NodeWorker(GuardedWorker, SimpleWorker):
    """Runs node jobs in the worker process itself: no fork per job (the fast default).

    Only Nexus-Flow's own job functions run (``GuardedWorker``, see ``guard``)."""

    death_penalty_class = NoDeathPenalty

    def kill_horse(self, sig: Any = None) -> None:
        """RQ's stop-job command (sent when a run is canceled): there is no work-horse to
        kill, so the lease keeper checks the node's run now and interrupts it if canceled.
        The job itself then ends normally, so RQ must not mark it stopped."""
        self._stopped_job_id = None
        runtime().leases.check_now()

    def handle_payload(self, message: Any) -> None:
        """Any command (a stop-job above all) makes the lease keeper look now: a node that
        waits on I/O in a thread (``ionodes``) is no longer this worker's current job, so
        RQ ignores a stop-job for it, but its run may have been canceled."""
        super().handle_payload(message)
        runtime().leases.check_now()


class ForkingNodeWorker(GuardedWorker, Worker):
    """Runs each node job in a forked work-horse (isolates memory leaks and crashes); a job
    that is not Nexus-Flow's is refused before anything is forked."""

    death_penalty_class = NoDeathPenalty


def queue_names(settings: Settings, queues: list[str]) -> list[str]:
    """Map ``default``/``sandbox`` to the configured RQ queue names."""
    mapping = {"default": settings.queue_name, "sandbox": settings.sandbox_queue_name}
    return [mapping.get(q, q) for q in queues]


def run_worker(settings: Settings, queues: list[str], *, fork: bool = False,
               burst: bool = False, name: str | None = None,
               log_level: str = "WARNING") -> Any:
    """Run one RQ worker in this process until it is told to stop.

    RQ's own scheduler stays off: node jobs that wait for their time are released by the
    supervisor's ``DueReleaser`` (``nexusflow_worker.timer``), to the millisecond.
    """
    rt = Runtime(settings)
    rt.background_io = not fork  # a forked work-horse exits with its job
    set_runtime(rt)
    # Load the node types now, before the first job and its alarm: a node package that is
    # broken is logged once here (and listed by `nexusflow nodes list`); this worker runs on.
    node_types()
    connection = get_redis(rt.settings.redis_url)  # type: ignore[arg-type]
    cls = ForkingNodeWorker if fork else NodeWorker
    worker = cls(queue_names(rt.settings, queues), connection=connection,
                 serializer=JSONSerializer, job_class=GuardedJob, name=name or rt.worker_name)
    advert = rt.advert = Advert(rt.settings, rt.worker_name, queues)
    _ = rt.leases  # start the lease keeper now: it marks this worker alive, with its advert
    # RQ installs its own SIGTERM handler (warm shutdown: the node in hand finishes).
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    logger.info("worker %s (pid %s) serving %s", worker.name, os.getpid(), queues)
    try:
        return worker.work(burst=burst, with_scheduler=False, logging_level=log_level)
    finally:
        if rt._waiting is not None and not rt._waiting.drain(DRAIN_S):
            logger.warning("stopping with %d node(s) still waiting on I/O: their leases run "
                           "out and the reconciler repeats them", rt._waiting.waiting())
        advert.stop()
        try:  # gone now, not when the alive key expires
            withdraw(connection, rt.worker_name)
        except Exception as exc:
            logger.debug("could not withdraw the worker advert: %s", exc)

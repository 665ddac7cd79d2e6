"""Hands node jobs to RQ when they are due: retry backoffs and Delay nodes.

Every worker host runs one ``DueReleaser`` thread in its supervisor. It sleeps until the
earliest waiting job is due (checking at least ten times a second for new ones), then moves
the due jobs into RQ with one atomic Redis script, so with several hosts each job is pushed
once. Nothing waits in a worker process, and a job is never early: a node becomes claimable
only at its ``due_at`` (PostgreSQL checks that too).
"""

from __future__ import annotations

import logging
import threading
import time

from .jobs import Runtime

logger = logging.getLogger(__name__)

POLL_S = 0.1
"""Longest sleep between two looks at the waiting jobs (how late a newly added job can be)."""


class DueReleaser(threading.Thread):
    def __init__(self, rt: Runtime) -> None:
        super().__init__(name="nexusflow-due", daemon=True)
        self.rt = rt
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                due = self.rt.broker.next_due()
                now = time.time()
                if due is not None and due <= now:
                    self.rt.broker.release_due(now)
                    continue
                wait = POLL_S if due is None else min(POLL_S, due - now)
            except Exception as exc:  # Redis away: the reconciler covers what is overdue
                logger.warning("could not release due node jobs: %s", exc)
                wait = 1.0
            self.stopping.wait(wait)

    def stop(self) -> None:
        self.stopping.set()

"""A running node's log so far, kept in Redis while it grows (a model's streamed answer).

The attempt's log is recorded when the node ends; until then readers (the logs panel, a
notebook's ``Run.attempts``) see what the worker last published here. Publishing is cheap by
design: nothing for a node that ends within ``FIRST_AFTER_S``, then at most one write every
``INTERVAL_S``, each masked like the record and holding back a tail that may be the start of
a secret still arriving (``Masker.settled``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nexusflow_kernel.masking import Masker
from nexusflow_kernel.nodes import NodeLog

logger = logging.getLogger(__name__)

FIRST_AFTER_S = 0.5
"""A node that ends sooner publishes nothing (its record comes at once anyway)."""

INTERVAL_S = 0.25
"""Least time between two writes of one attempt's log."""


class LiveLog:
    """``NodeLog.live`` of one attempt: publishes the log so far, throttled."""

    def __init__(self, broker: Any, run_id: str, node_id: str, attempt: int,
                 masker: Callable[[], Masker]) -> None:
        self.broker = broker
        self.run_id, self.node_id, self.attempt = run_id, node_id, attempt
        self.masker = masker
        self._first = time.monotonic() + FIRST_AFTER_S
        self._last = 0.0
        self._off = False

    def __call__(self, log: NodeLog) -> None:
        now = time.monotonic()
        if self._off or now < self._first or now - self._last < INTERVAL_S:
            return
        self._last = now
        try:
            text = self.masker().settled(log.text())
            self.broker.set_live_log(self.run_id, self.node_id, self.attempt, text)
        except Exception as exc:  # a courtesy to readers: never a reason to fail the node
            logger.debug("live log of %s in run %s not published: %s", self.node_id,
                         self.run_id, exc)
            self._off = True


__all__ = ["FIRST_AFTER_S", "INTERVAL_S", "LiveLog"]

"""The jobs raw RQ runs in the baseline (imported by the raw RQ workers by name)."""

from __future__ import annotations

import time


def noop() -> None:
    """Do nothing: the unit of queue overhead."""


def sleep(seconds: float) -> float:
    """Hold the worker for ``seconds``."""
    time.sleep(seconds)
    return seconds

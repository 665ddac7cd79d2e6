"""Node types for trying flows out, testing and benchmarking: ``noop`` and ``sleep``."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from .base import NodeContext, NodeType


class NoopNode(NodeType):
    """Do nothing; output ``value`` (default: null). The unit of orchestration overhead."""

    name = "noop"
    title = "No-op"
    description = "Does nothing and outputs its value: for wiring, tests and benchmarks."
    category = "testing"
    icon = "∅"
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"value": {"title": "Output value", "description": "Any JSON value."}},
    }

    def run(self, ctx: NodeContext) -> Any:
        return ctx.config.get("value")


class SleepNode(NodeType):
    """Hold a worker for ``seconds`` (use ``delay`` to wait without holding a worker)."""

    name = "sleep"
    title = "Sleep (holds a worker)"
    description = ("Keeps a worker busy for some seconds, then outputs how long it slept; "
                   "can fail its first attempts on purpose. For tests and benchmarks — "
                   "use Delay to wait in real flows.")
    category = "testing"
    icon = "💤"
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["seconds"],
        "properties": {
            "seconds": {"type": ["number", "string"], "minimum": 0, "maximum": 86400,
                        "title": "Seconds", "description": "How long to hold the worker."},
            "fail_attempts": {"type": "integer", "minimum": 0, "default": 0,
                              "title": "Fail the first N attempts",
                              "description": "Raise a retryable error on attempts 1..N."},
            "message": {"type": "string", "title": "Log line", "default": ""},
        },
    }

    def run(self, ctx: NodeContext) -> Any:
        try:
            seconds = float(ctx.config["seconds"])
        except (TypeError, ValueError):
            raise NodeExecutionError(f"seconds must be a number, not {ctx.config['seconds']!r}",
                                     retryable=False) from None
        if ctx.config.get("message"):
            ctx.log(ctx.config["message"])
        start = time.monotonic()
        end = start + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        if ctx.attempt <= int(ctx.config.get("fail_attempts", 0)):
            raise NodeExecutionError(f"failing attempt {ctx.attempt} on purpose (fail_attempts)")
        return {"slept_s": round(time.monotonic() - start, 3), "attempt": ctx.attempt}

"""Node types that compute inside the engine: Transform, Condition and Delay."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import check_expression, evaluate, json_safe, template_errors
from ..textbounds import text_size
from .base import Defer, NodeContext, NodeType

EXPRESSION_PROPERTY: dict[str, Any] = {
    "type": "string",
    "title": "Expression",
    "description": (
        "A Python expression over inputs['<parent id>'] (the parents' outputs) and "
        "params['<name>'] (the run's inputs), e.g. inputs['fetch']['json']['count'] > 10. "
        "Helpers: len, str, int, float, round, min, max, sum, sorted, any, all, json_loads, now()."
    ),
    "minLength": 1,
    "maxLength": 20000,
    "x-widget": "code",
}

MAX_DELAY_S = 366 * 86400
"""Longest wait a Delay node accepts."""


def expression_names(ctx: NodeContext) -> dict[str, Any]:
    """Return the names an expression of this node sees (a map item's ``item`` and ``index``
    too)."""
    return {"inputs": ctx.inputs, "params": ctx.params, **ctx.names}


def _expression_faults(config: Mapping[str, Any], exempt: tuple[str, ...]) -> list[tuple[str, str]]:
    faults = template_errors(config, exempt)
    expression = config.get("expression")
    if isinstance(expression, str):
        problem = check_expression(expression)
        if problem:
            faults.insert(0, ("/expression", problem))
    return faults


class TransformNode(NodeType):
    """Compute a value from the parents' outputs and the run params."""

    name = "transform"
    title = "Transform"
    description = "Compute a value from the inputs with a safe Python expression."
    category = "core"
    icon = "ƒ"
    template_exempt: ClassVar[tuple[str, ...]] = ("expression",)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Transform",
        "description": "The node's output is the value of the expression.",
        "type": "object",
        "required": ["expression"],
        "additionalProperties": False,
        "properties": {"expression": EXPRESSION_PROPERTY},
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _expression_faults(config, self.template_exempt)

    def run(self, ctx: NodeContext) -> Any:
        where = f"node {ctx.node_id!r} /config/expression"
        value = evaluate(ctx.config["expression"], expression_names(ctx), where=where)
        # json_safe copies the value: measure its JSON first (a value repeated by reference
        # costs nothing to make and a full copy per appearance to store).
        limit = ctx.settings.max_output_bytes
        size = text_size(value, limit, mode="json", compact=True)
        if size > limit:
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: the output would be over {limit} bytes of JSON "
                "(NEXUSFLOW_MAX_OUTPUT_BYTES)", retryable=False)
        return json_safe(value)


class ConditionNode(NodeType):
    """Take the ``true`` or the ``false`` branch; the other branch is skipped."""

    name = "condition"
    title = "Condition"
    description = "If/else: follow the 'true' or the 'false' edge depending on an expression."
    category = "core"
    icon = "◇"
    output_handles: ClassVar[tuple[str, ...]] = ("true", "false")
    template_exempt: ClassVar[tuple[str, ...]] = ("expression",)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Condition",
        "description": "The expression's truth picks the branch; the output is true or false.",
        "type": "object",
        "required": ["expression"],
        "additionalProperties": False,
        "properties": {
            "expression": {**EXPRESSION_PROPERTY, "examples": ["inputs['A'] > 10"]},
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _expression_faults(config, self.template_exempt)

    def branch(self, output: Any) -> str | None:
        return "true" if output else "false"

    def run(self, ctx: NodeContext) -> bool:
        where = f"node {ctx.node_id!r} /config/expression"
        return bool(evaluate(ctx.config["expression"], expression_names(ctx), where=where))


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 date-time; one without a timezone is taken as UTC."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DelayNode(NodeType):
    """Wait for a number of seconds or until a moment, without holding a worker."""

    name = "delay"
    title = "Delay / Timer"
    description = "Wait some seconds, or until a date and time; no worker is held while waiting."
    category = "core"
    icon = "⏱"
    map_item = False  # it lets go of the worker and resumes later: a node, not an item
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Delay / Timer",
        "description": "Set exactly one of seconds and until.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "seconds": {
                "title": "Seconds",
                "description": "How long to wait, in seconds (or a {{ template }} giving one).",
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_DELAY_S},
                    {"type": "string", "pattern": r"^\s*\{\{.*\}\}\s*$"},
                ],
                "default": 60,
            },
            "until": {
                "title": "Until",
                "description": (
                    "ISO 8601 date-time to wait for, e.g. 2030-01-01T09:00:00+01:00 "
                    "(UTC when no offset is given)."
                ),
                "type": "string",
                "minLength": 1,
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config)
        has_seconds, has_until = "seconds" in config, "until" in config
        if has_seconds and has_until:
            faults.insert(0, ("/until", "set either seconds or until, not both"))
        elif not has_seconds and not has_until:
            faults.insert(0, ("", "set seconds or until"))
        until = config.get("until")
        if isinstance(until, str) and "{{" not in until:
            try:
                parse_instant(until)
            except ValueError:
                faults.append(("/until", f"{until!r} is not an ISO 8601 date-time"))
        return faults

    def _target(self, ctx: NodeContext, now: float) -> float:
        config = ctx.config
        if "until" in config:
            try:
                return parse_instant(str(config["until"])).timestamp()
            except ValueError:
                raise NodeExecutionError(
                    f"node {ctx.node_id!r}: until {config['until']!r} is not an ISO 8601 "
                    "date-time",
                    retryable=False,
                ) from None
        seconds = config.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: seconds must be a number, not {seconds!r}",
                retryable=False,
            )
        if not 0 <= seconds <= MAX_DELAY_S:
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: seconds {seconds} is outside 0..{MAX_DELAY_S}",
                retryable=False,
            )
        return now + float(seconds)

    def run(self, ctx: NodeContext) -> Any:
        now = time.time()
        state = ctx.resume_state
        if state is None:
            target = self._target(ctx, now)
            started = now
            if target > now:
                iso = datetime.fromtimestamp(target, UTC).isoformat()
                ctx.log("waiting until %s (%.3f s)", iso, target - now)
                return Defer(until=target, state={"until": iso, "started": started})
        else:
            target = parse_instant(state["until"]).timestamp()
            started = float(state.get("started", target))
        return {
            "waited_s": round(max(0.0, now - started), 3),
            "until": datetime.fromtimestamp(target, UTC).isoformat(),
        }

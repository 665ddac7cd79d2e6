"""Node types that wait without holding a worker: Sub-flow, Approval and Wait (for a callback).

Each one returns a ``Wait`` from its first run: the node becomes ``waiting`` and the worker
moves on. The run state resolves it later (``runstate/flowcontrol.py``): the child run ends,
a person decides, an external system calls the resume URL. A node with a timeout is run again
at its deadline (with its saved state) only to fail with a clear error.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import template_errors
from .base import NodeContext, NodeType, Wait

MAX_WAIT_S = 366 * 86400
"""Longest timeout of an approval or a wait node."""

MAX_RESUME_BODY_BYTES = 16 * 1024 * 1024
"""Largest body a wait node may accept from its callback."""

FLOW_REF: dict[str, Any] = {
    "title": "Flow",
    "description": (
        "The flow to run: a .nxflow path (relative to the server's root, or the working "
        "directory of a notebook or the CLI), or a stored workflow "
        '{"workflow_id": "...", "version": 3} (version: the latest when the run starts). '
        "It is resolved and pinned when the parent run starts."
    ),
    "type": ["string", "object"],
    "minLength": 1,
    "maxLength": 4096,
    "pattern": r"\.nxflow$",
    "required": ["workflow_id"],
    "additionalProperties": False,
    "properties": {
        "workflow_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "version": {"type": "integer", "minimum": 1},
    },
}

TIMEOUT_PROPERTY: dict[str, Any] = {
    "type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S,
    "title": "Timeout (s)",
    "description": ("Fail the node if it is still waiting after this many seconds (default: "
                    "the node's own timeout_s, else never)."),
}


def _now_iso(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _timed_out(ctx: NodeContext, what: str) -> NodeExecutionError:
    state = ctx.resume_state or {}
    since = state.get("since", "?")
    timeout = state.get("timeout_s")
    return NodeExecutionError(
        f"node {ctx.node_id!r} timed out: {what} within {timeout:g} s (timeout_s; waiting since "
        f"{since})" if isinstance(timeout, (int, float)) else
        f"node {ctx.node_id!r} timed out: {what} (waiting since {since})",
        retryable=False)


def _with_timeout(ctx: NodeContext, state: dict[str, Any], now: float) -> float | None:
    """Return when the wait times out (``None``: never): the config's ``timeout_s``, else the
    node's own ``timeout_s`` (its deadline); keep the seconds in ``state`` for the message."""
    timeout = ctx.config.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        if ctx.deadline is None:
            return None
        # the attempt's deadline, named in messages as the node's timeout_s as written
        state["timeout_s"] = (ctx.timeout_s if ctx.timeout_s is not None
                              else round(ctx.deadline - now, 3))
        return ctx.deadline
    state["timeout_s"] = timeout
    return now + float(timeout)


class SubflowNode(NodeType):
    """Run another flow as a child run and output its sink nodes' outputs."""

    name = "subflow"
    map_item = False  # it waits without a worker: a node, not a map item
    title = "Sub-flow"
    description = ("Run another flow as a child run (its inputs become the child's params); "
                   "outputs the child's last nodes' outputs. Waits without holding a worker.")
    category = "flow"
    icon = "↳"
    subflow_key = "flow"
    template_exempt: ClassVar[tuple[str, ...]] = ("flow",)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Sub-flow",
        "description": "The output is {sink node id: output} of the child run.",
        "type": "object",
        "required": ["flow"],
        "additionalProperties": False,
        "properties": {
            "flow": FLOW_REF,
            "inputs": {
                "type": "object",
                "title": "Inputs",
                "description": ("The child run's params: name -> value; values may be "
                                "{{ templates }} over inputs and params."),
                "default": {},
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config, self.template_exempt)
        flow = config.get("flow")
        if isinstance(flow, str) and ("{{" in flow or "}}" in flow):
            faults.insert(0, ("/flow", "the sub-flow is pinned when the run starts, so it "
                                       "cannot be a {{ template }}; pass values in inputs"))
        return faults

    def run(self, ctx: NodeContext) -> Any:
        if ctx.resume_state is not None:  # only a lost wake-up gets here: nothing to time out
            raise NodeExecutionError(f"node {ctx.node_id!r}: the sub-flow wait was interrupted",
                                     retryable=False)
        inputs = ctx.config.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise NodeExecutionError(f"node {ctx.node_id!r} /config/inputs: must be an object "
                                     f"of the child's params, not {type(inputs).__name__}",
                                     retryable=False)
        ctx.log("starting the sub-flow")
        return Wait("subflow", {"inputs": inputs, "since": _now_iso()})


class ApprovalNode(NodeType):
    """Wait for a person to approve or reject; take the ``approved`` or ``rejected`` branch."""

    name = "approval"
    map_item = False  # it waits without a worker: a node, not a map item
    title = "Approval"
    description = ("Wait for a person to approve or reject (canvas buttons, REST, notebook, "
                   "CLI); the untaken branch is skipped. Holds no worker while it waits.")
    category = "flow"
    icon = "✋"
    output_handles: ClassVar[tuple[str, ...]] = ("approved", "rejected")
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Approval",
        "description": ("The output is {approved, decided_by, decided_at, comment}; edges leave "
                        "from the approved or the rejected handle."),
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "message": {
                "type": "string", "maxLength": 20000, "title": "Message",
                "description": "What the approvers read ({{ templates }} allowed).",
                "format": "multiline",
            },
            "approvers": {
                "type": "array", "maxItems": 200, "title": "Approvers",
                "description": ("Who may decide: user names, and Hub groups as 'group:NAME'. "
                                "Empty: anyone with the runner role on the workflow."),
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            "timeout_s": TIMEOUT_PROPERTY,
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config)
        for i, who in enumerate(config.get("approvers") or []):
            if isinstance(who, str) and who.startswith("group:") and len(who) == len("group:"):
                faults.append((f"/approvers/{i}", "'group:' needs a group name"))
        return faults

    def branch(self, output: Any) -> str | None:
        return "approved" if isinstance(output, dict) and output.get("approved") else "rejected"

    def run(self, ctx: NodeContext) -> Any:
        if ctx.resume_state is not None:
            raise _timed_out(ctx, "nobody approved or rejected it")
        now = time.time()
        message = ctx.config.get("message")
        approvers = [str(a) for a in ctx.config.get("approvers") or []]
        ctx.log("waiting for a decision%s", f": {message}" if message else "")
        state = {"message": "" if message is None else str(message), "approvers": approvers,
                 "since": _now_iso(now)}
        return Wait("approval", state, until=_with_timeout(ctx, state, now))


def resume_token_sha256(token: str) -> str:
    """Return what is stored of a resume token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class WaitNode(NodeType):
    """Wait for an external system to call back on the node's resume URL."""

    name = "wait"
    map_item = False  # it waits without a worker: a node, not a map item
    title = "Wait for callback"
    description = ("Wait until an external system POSTs JSON to this node's resume URL "
                   "({{ resume_url('ID') }} in any node of the run); the body is the output. "
                   "Holds no worker while it waits.")
    category = "flow"
    icon = "⏸"
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Wait for callback",
        "description": ("POST /nexusflow/hooks/resume/<token> with a JSON body resumes the "
                        "node once; the body becomes its output."),
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "timeout_s": TIMEOUT_PROPERTY,
            "max_body_bytes": {
                "type": "integer", "minimum": 1, "maximum": MAX_RESUME_BODY_BYTES,
                "title": "Largest body (bytes)",
                "description": "Bigger callbacks are refused with 413 (default: the server's "
                               "webhook body limit).",
            },
        },
    }

    def run(self, ctx: NodeContext) -> Any:
        if ctx.resume_state is not None:
            raise _timed_out(ctx, "no callback came")
        if ctx.resume_token is None:
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: a wait node needs the secrets key on the workers "
                "(NEXUSFLOW_SECRET_KEY) to make its resume token", retryable=False)
        now = time.time()
        state: dict[str, Any] = {
            "token_sha256": resume_token_sha256(ctx.resume_token(ctx.node_id)),
            "since": _now_iso(now),
        }
        if isinstance(ctx.config.get("max_body_bytes"), int):
            state["max_body_bytes"] = ctx.config["max_body_bytes"]
        ctx.log("waiting for a callback on the resume URL")
        return Wait("resume", state, until=_with_timeout(ctx, state, now))


FLOW_CONTROL_TYPES = (SubflowNode, ApprovalNode, WaitNode)

__all__ = ["FLOW_CONTROL_TYPES", "ApprovalNode", "SubflowNode", "WaitNode",
           "resume_token_sha256"]

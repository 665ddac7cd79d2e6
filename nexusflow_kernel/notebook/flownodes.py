"""The ``Flow`` builder's flow-control nodes: sub-flows, approvals and callbacks.

Mixed into ``Flow`` (``flow.py``)::

    f = Flow("payment", max_active_runs=2, on_failure="alerts/notify.nxflow")
    amount = f.transform("amount", "params['amount']")
    ask = f.approval("ask", "Pay {{ inputs['amount'] }} EUR?", approvers=["group:finance"],
                     timeout=3600)
    amount >> ask
    ask.approved >> f.subflow("pay", "flows/pay.nxflow", inputs={"eur": "{{ inputs['amount'] }}"})
    ask.rejected >> f.transform("tell", "'not paid'")
    f.transform("cleanup", "inputs", trigger_rule="one_failed", recovers=True)

The nodes are the document's, so a flow built here opens on the canvas as it reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class _Builds(Protocol):
    def node(self, type: str, id: str, **fields: Any) -> Any: ...


class FlowControlNodes:
    """``Flow.subflow``, ``Flow.approval`` and ``Flow.wait``."""

    def subflow(self: _Builds, id: str, flow: Any,
                inputs: Mapping[str, Any] | None = None, **fields: Any) -> Any:
        """Add a Sub-flow node: run ``flow`` as a child run with ``inputs`` as its params
        (values may be ``{{ templates }}``); its output is the child's last nodes' outputs by
        node id. ``flow`` is a ``.nxflow`` path (relative to the working directory, or the
        server's root when the canvas runs it), a saved ``Flow`` (its path), or a stored
        workflow ``{"workflow_id": ..., "version": ...}``. It is resolved and pinned when the
        run starts: a missing file or a flow that calls itself is refused then."""
        return self.node("subflow", id, flow=flow_reference(flow),
                         inputs=dict(inputs or {}), **fields)

    def approval(self: _Builds, id: str, message: str | None = None, *,
                 approvers: list[str] | None = None, timeout: float | None = None,
                 **fields: Any) -> Any:
        """Add an Approval node: the run waits (holding no worker) until a person approves or
        rejects, then takes ``node.approved`` or ``node.rejected`` (the other is skipped).
        ``approvers``: user names and ``group:NAME``; by default anyone with the runner role.
        ``timeout`` seconds fail it. Decide with ``run.approve(id)`` / ``run.reject(id)``,
        the canvas buttons, REST or ``nexusflow approve``."""
        config: dict[str, Any] = {}
        if message is not None:
            config["message"] = message
        if approvers:
            config["approvers"] = list(approvers)
        if timeout is not None:
            config["timeout_s"] = timeout
        return self.node("approval", id, **config, **fields)

    def wait(self: _Builds, id: str, *, timeout: float | None = None,
             max_body_bytes: int | None = None, **fields: Any) -> Any:
        """Add a Wait node: the run waits (holding no worker) until an external system POSTs
        JSON to the node's resume URL, which any node of the run templates as
        ``{{ resume_url('<id>') }}``; the body becomes the output. ``timeout`` seconds fail
        it."""
        config: dict[str, Any] = {}
        if timeout is not None:
            config["timeout_s"] = timeout
        if max_body_bytes is not None:
            config["max_body_bytes"] = max_body_bytes
        return self.node("wait", id, **config, **fields)


def flow_reference(flow: Any) -> Any:
    """Return the document's form of a sub-flow reference (a path relative to the working
    directory, or a stored workflow reference)."""
    if isinstance(flow, Mapping):
        return dict(flow)
    path = getattr(flow, "path", flow)  # a saved Flow: its file
    if path is None:
        from ..errors import NodeConfigError

        raise NodeConfigError(f"flow {getattr(flow, 'name', flow)!r} has no file: save it "
                              "(flow.save('name.nxflow')) to call it as a sub-flow, or pass "
                              "a stored workflow {'workflow_id': ...}")
    if isinstance(path, Path) or isinstance(path, str):
        text = str(path)
        if os.path.isabs(text):
            rel = os.path.relpath(text, os.getcwd())
            text = rel if not rel.startswith("..") else text
        return text.replace(os.sep, "/")
    return flow


__all__ = ["FlowControlNodes", "flow_reference"]

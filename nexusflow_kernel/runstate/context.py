"""What one node of a run saw: its recorded inputs, params and rendered config, and its code.

This is what the debug loop starts from (``Run.debug``, "Open in notebook", "Test node" with
the inputs of the latest run). It only reads; the caller masks the answer with the run's
masker like every other read of a run.

The inputs of a node that ran are those of its latest attempt, as recorded. Workers hand
children their parents' *masked* outputs, so a secret one parent passed on as data reached the
node as ``***`` too: the record is exactly what the node saw. A node that never ran (pending,
skipped, canceled before it started) has no record; its inputs are then its parents' outputs
as they are now, and ``recorded`` is false.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFoundError
from ..model.document import Node
from .db import Conn
from .runplan import RunPlan
from .runviews import _iso

CODE_KEYS = {"python_task": "source", "code": "source"}
"""The config key that holds a node type's code (shown and edited as code when debugging)."""


def node_document(node: Node) -> dict[str, Any]:
    """Return a node of a plan as a flow document entry (what the canvas edits)."""
    out: dict[str, Any] = {"id": node.id, "type": node.type, "config": dict(node.config)}
    for key in ("label", "position", "retry", "timeout_s", "pin", "cache"):
        value = getattr(node, key)
        if value is not None:
            out[key] = value
    if node.trigger_rule != "all_success":
        out["trigger_rule"] = node.trigger_rule
    return out


def read_node_context(conn: Conn, head: dict[str, Any], plan_of: Any,
                      node_id: str) -> dict[str, Any]:
    """Return the context of ``node_id`` in the run ``head`` (its header).

    ``plan_of(version)`` returns the ``RunPlan`` of a version of the run's workflow.
    """
    run_id = head["run_id"]
    row = conn.execute(
        "SELECT state, attempt, version, error, output, cached_from, pinned FROM node_runs"
        " WHERE execution_id=%s AND node_id=%s", (run_id, node_id)).fetchone()
    if row is None:
        known = [r["node_id"] for r in conn.execute(
            "SELECT node_id FROM node_runs WHERE execution_id=%s ORDER BY idx", (run_id,))]
        raise NotFoundError(f"run {run_id} has no node {node_id!r} (nodes: "
                            f"{', '.join(known) or 'none'})")
    version = row["version"] or head["version"]
    plan: RunPlan = plan_of(version)
    node = plan.nodes[node_id]
    last = conn.execute(
        "SELECT attempt, status, input, error, log, started_at, ended_at FROM node_logs"
        " WHERE execution_id=%s AND node_id=%s ORDER BY attempt DESC LIMIT 1",
        (run_id, node_id)).fetchone()
    record = last["input"] if last is not None and isinstance(last["input"], dict) else None
    missing: list[str] = []
    if record is not None and isinstance(record.get("inputs"), dict):
        inputs = record["inputs"]
        recorded = True
    else:
        inputs, missing = _parent_outputs(conn, run_id, plan, node_id)
        recorded = False
    config = record.get("config") if record is not None else None
    code_key = CODE_KEYS.get(node.type)
    return {
        "run_id": run_id, "node_id": node_id, "type": node.type,
        "workflow_id": head["workflow_id"], "version": version, "name": head.get("name"),
        "source_file": head.get("source"), "run_status": head["status"],
        "parent": head.get("parent"),
        "state": row["state"], "attempt": row["attempt"],
        "recorded": recorded, "missing": missing,
        "inputs": inputs, "params": head.get("inputs") or {},
        "config": config, "config_rendered": config is not None,
        "node": node_document(node),
        "code": node.config.get(code_key) if code_key else None,
        "function": node.config.get("function") if node.type == "python_task" else None,
        "error": (last["error"] if last is not None else None) or row["error"],
        "log": last["log"] if last is not None else None,
        "output": row["output"] if row["state"] == "succeeded" else None,
        "cached_from": row["cached_from"], "pinned": bool(row["pinned"]),
        "attempt_started_at": _iso(last["started_at"]) if last is not None else None,
        "attempt_ended_at": _iso(last["ended_at"]) if last is not None else None,
    }


def _parent_outputs(conn: Conn, run_id: str, plan: RunPlan,
                    node_id: str) -> tuple[dict[str, Any], list[str]]:
    """Return the outputs the node's parents have now, and the parents that have none."""
    parents = list(plan.parents.get(node_id, ()))
    if not parents:
        return {}, []
    found = {r["node_id"]: r["output"] for r in conn.execute(
        "SELECT node_id, output FROM node_runs WHERE execution_id=%s AND node_id = ANY(%s)"
        " AND state='succeeded'", (run_id, parents))}
    return found, [p for p in parents if p not in found]


def latest_node_context(conn: Conn, workflow_id: str, node_id: str) -> str | None:
    """Return the latest run of ``workflow_id`` in which ``node_id`` ran (so its inputs were
    recorded), or ``None``."""
    row = conn.execute(
        "SELECT e.id FROM executions e JOIN node_runs n ON n.execution_id = e.id"
        " WHERE e.workflow_id=%s AND n.node_id=%s AND n.attempt > 0"
        " ORDER BY e.created_at DESC LIMIT 1", (workflow_id, node_id)).fetchone()
    return str(row["id"]) if row else None


__all__ = ["CODE_KEYS", "latest_node_context", "node_document", "read_node_context"]

"""Reading runs back: a run with its nodes, lists of runs, attempt logs, derived events.

``RunStore`` inherits these; they only read, so they need no lease and take no lock.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import NotFoundError
from .db import Conn, Pool


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


class RunViews:
    """Read-only queries over the run tables."""

    pool: Pool

    def run_header(self, conn: Conn, run_id: str) -> dict[str, Any]:
        try:
            uuid.UUID(str(run_id))
        except ValueError:
            raise NotFoundError(f"no run {run_id!r} (run ids are UUIDs)") from None
        row = conn.execute(
            "SELECT e.*, w.name FROM executions e JOIN workflows w ON w.id = e.workflow_id"
            " WHERE e.id=%s", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id}")
        return {
            "run_id": str(row["id"]), "status": row["status"], "name": row["name"],
            "workflow_id": str(row["workflow_id"]), "version": row["version"],
            "source": row["source"], "trigger": row["trigger"], "inputs": row["inputs"],
            "created_by": row["created_by"], "replay_of": _str(row["replay_of"]),
            "started_at": _iso(row["started_at"]), "ended_at": _iso(row["ended_at"]),
            "parent": None if row["parent_run"] is None else {
                "run_id": str(row["parent_run"]), "node_id": row["parent_node"],
                "item": row["parent_item"]},
            "depth": row["depth"],
            "options": row.get("options") or {},
            "env": row.get("env") or "dev",
            "env_vars": row.get("env_vars") or {},
        }

    def get_run(self, run_id: str, *, outputs: bool = True) -> dict[str, Any]:
        """Return a run with every node's state (and output). A waiting node says what it
        waits for (``waiting``); a node that started a child run names it (``child_run``)."""
        from .flowcontrol import waiting_view

        with self.pool.connection() as conn:
            out = self.run_header(conn, run_id)
            nodes = {}
            for r in conn.execute(
                "SELECT node_id, state, attempt, started_at, ended_at, duration_ms, error,"
                " branch, CASE WHEN state = 'waiting' THEN resume_state END AS waits, due_at,"
                " version, cached_from, pinned"
                + (", output" if outputs else "") +
                " FROM node_runs WHERE execution_id=%s ORDER BY idx", (run_id,)):
                nodes[r["node_id"]] = {
                    "state": r["state"], "attempts": r["attempt"],
                    "started_at": _iso(r["started_at"]), "ended_at": _iso(r["ended_at"]),
                    "duration_ms": r["duration_ms"], "error": r["error"],
                    "output": r.get("output"),
                    "version": r["version"] or out["version"],
                }
                if r["state"] == "succeeded" and r["cached_from"]:
                    nodes[r["node_id"]]["cached_from"] = r["cached_from"]
                if r["state"] == "succeeded" and r["pinned"]:
                    nodes[r["node_id"]]["pinned"] = True
                if r["waits"] is not None:
                    nodes[r["node_id"]]["waiting"] = waiting_view(r["waits"], r["due_at"])
            for child in self._children(conn, run_id):
                node = nodes.get(child["node_id"])
                if node is not None and child["item"] is None:
                    node["child_run"] = child["run_id"]  # the latest child of that node
            out["nodes"] = nodes
            return out

    @staticmethod
    def _children(conn: Conn, run_id: str) -> list[dict[str, Any]]:
        return [{"run_id": str(r["id"]), "node_id": r["parent_node"], "item": r["parent_item"],
                 "status": r["status"], "started_at": _iso(r["started_at"]),
                 "ended_at": _iso(r["ended_at"])}
                for r in conn.execute(
                    "SELECT id, parent_node, parent_item, status, started_at, ended_at"
                    " FROM executions WHERE parent_run=%s ORDER BY created_at, id", (run_id,))]

    def child_runs(self, run_id: str) -> list[dict[str, Any]]:
        """Return the child runs of a run (sub-flows), oldest first."""
        with self.pool.connection() as conn:
            self.run_header(conn, run_id)
            return self._children(conn, run_id)

    def list_runs(self, *, limit: int = 50, workflow_id: str | None = None,
                  source: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        where, args = ["w.deleted_at IS NULL"], []  # a deleted workflow's runs stay with it
        for column, value in (("e.workflow_id", workflow_id), ("e.source", source),
                              ("e.status", status)):
            if value is not None:
                where.append(f"{column} = %s")
                args.append(value)
        sql = ("SELECT e.id, e.status, e.workflow_id, e.version, e.source, e.trigger, e.env,"
               " e.created_by, e.started_at, e.ended_at, e.parent_run, e.parent_node,"
               " w.name FROM executions e"
               " JOIN workflows w ON w.id=e.workflow_id"
               + " WHERE " + " AND ".join(where)
               + " ORDER BY e.created_at DESC LIMIT %s")
        with self.pool.connection() as conn:
            rows = conn.execute(sql, (*args, max(1, min(int(limit), 1000)))).fetchall()
        return [{"run_id": str(r["id"]), "status": r["status"], "name": r["name"],
                 "workflow_id": str(r["workflow_id"]), "version": r["version"],
                 "source": r["source"], "trigger": r["trigger"], "created_by": r["created_by"],
                 "env": r["env"], "started_at": _iso(r["started_at"]),
                 "ended_at": _iso(r["ended_at"]),
                 "parent": None if r["parent_run"] is None else {
                     "run_id": str(r["parent_run"]), "node_id": r["parent_node"]}}
                for r in rows]

    def node_attempts(self, run_id: str, node_id: str) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            self.run_header(conn, run_id)
            rows = conn.execute(
                "SELECT attempt, status, input, output, error, log, worker, duration_ms,"
                " started_at, ended_at, cached_from, pinned FROM node_logs"
                " WHERE execution_id=%s AND node_id=%s ORDER BY attempt",
                (run_id, node_id)).fetchall()
            if not rows and conn.execute(
                    "SELECT 1 FROM node_runs WHERE execution_id=%s AND node_id=%s",
                    (run_id, node_id)).fetchone() is None:
                raise NotFoundError(f"run {run_id} has no node {node_id!r}")
        return [{**r, "started_at": _iso(r["started_at"]), "ended_at": _iso(r["ended_at"])}
                for r in rows]

    def derived_events(self, run_id: str) -> list[dict[str, Any]]:
        """Rebuild a run's event history from PostgreSQL (when Redis lost the stream)."""
        with self.pool.connection() as conn:
            head = self.run_header(conn, run_id)
            out = [{"run": run_id, "node": None, "state": "running", "attempt": 0,
                    "at": head["started_at"], "duration_ms": None}]
            for r in conn.execute(
                "SELECT node_id, attempt, status, error, duration_ms, ended_at, cached_from,"
                " pinned FROM node_logs WHERE execution_id=%s ORDER BY ended_at", (run_id,)):
                ev = {"run": run_id, "node": r["node_id"], "state": r["status"],
                      "attempt": r["attempt"], "at": _iso(r["ended_at"]),
                      "duration_ms": r["duration_ms"]}
                if r["error"]:
                    ev["error"] = r["error"]
                if r["status"] == "succeeded" and r["cached_from"]:  # as the live events say
                    ev["cached_from"] = r["cached_from"]
                if r["status"] == "succeeded" and r["pinned"]:
                    ev["pinned"] = True
                out.append(ev)
            for r in conn.execute(
                "SELECT node_id, state, attempt, ended_at, started_at FROM node_runs"
                " WHERE execution_id=%s AND state <> 'pending'", (run_id,)):
                if r["state"] in ("succeeded", "failed"):
                    continue  # already in the attempt log
                out.append({"run": run_id, "node": r["node_id"], "state": r["state"],
                            "attempt": r["attempt"],
                            "at": _iso(r["ended_at"] or r["started_at"]) or head["started_at"],
                            "duration_ms": None})
            if head["status"] != "running":
                out.append({"run": run_id, "node": None, "state": head["status"], "attempt": 0,
                            "at": head["ended_at"], "duration_ms": None})
            return out

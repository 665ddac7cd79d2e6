"""One-node tests: a node run by a worker outside any run ("Test node", ``Flow.test``).

A test is a row of ``node_tests``: the node as tested, the inputs and params it gets, the
secret names whose values its record must mask, the environment it runs in and that
environment's variables when it was queued. Starting one inserts the row and pushes an RQ
job (``nexusflow_worker.nodetests.execute_test``) to the node type's queue, so it runs where a
run's node would, with the same isolation; the worker claims the row (``queued`` →
``running``, once), runs the node, masks what it records and writes the outcome. Nothing of a
run is read or written. Tests are kept for ``KEEP_S`` and then deleted.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..errors import NotFoundError
from .db import Conn, Pool, jsonb
from .runviews import _iso

KEEP_S = 24 * 3600
"""How long a test's record is kept."""

TEST_JOB_FUNC = "nexusflow_worker.nodetests.execute_test"
"""The RQ job that runs one test: ``execute_test(test_id)``."""


def test_job_id(test_id: str) -> str:
    """Return the RQ job id of a test (RQ allows ``[A-Za-z0-9_-]``)."""
    return f"nf-test-{test_id.replace('-', '')}"


def done_key(test_id: str) -> str:
    """Return the Redis list a worker pushes to when the test is over (the waiters' signal)."""
    return f"nexusflow:test:{test_id}:done"


def create_test(conn: Conn, *, node: dict[str, Any], inputs: dict[str, Any],
                params: dict[str, Any], secret_names: list[str], workflow_id: str | None,
                source: str | None, from_run: str | None, actor: str | None,
                env: str | None = None, env_vars: dict[str, Any] | None = None) -> str:
    """Insert a queued test and return its id (old tests are deleted on the way)."""
    conn.execute("DELETE FROM node_tests WHERE created_at < now() - make_interval(secs => %s)",
                 (KEEP_S,))
    test_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO node_tests (id, workflow_id, source, node_id, node, inputs, params,"
        " secret_names, from_run, status, created_by, env, env_vars) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s)",
        (test_id, workflow_id, source, node["id"], jsonb(node), jsonb(inputs), jsonb(params),
         sorted(secret_names), from_run, actor, env, jsonb(env_vars or {})))
    return test_id


def claim_test(pool: Pool, test_id: str, worker: str) -> dict[str, Any] | None:
    """Take a queued test for ``worker``; ``None`` when it is not queued (a duplicate job)."""
    with pool.connection() as conn, conn.transaction():
        return conn.execute(
            "UPDATE node_tests SET status='running', worker=%s, started_at=clock_timestamp()"
            " WHERE id=%s AND status='queued'"
            " RETURNING id, node, inputs, params, secret_names, created_by, env, env_vars",
            (worker, test_id)).fetchone()


def finish_test(pool: Pool, test_id: str, *, status: str, output: Any, error: str | None,
                log: str, duration_ms: float, inputs: Any, params: Any) -> None:
    """Record how a running test ended (``inputs`` and ``params`` masked like the rest)."""
    with pool.connection() as conn, conn.transaction():
        conn.execute(
            "UPDATE node_tests SET status=%s, output=%s, error=%s, log=%s, duration_ms=%s,"
            " inputs=%s, params=%s, ended_at=clock_timestamp()"
            " WHERE id=%s AND status='running'",
            (status, jsonb(output) if status == "succeeded" else None, error, log or None,
             duration_ms, jsonb(inputs), jsonb(params), test_id))


def read_test(pool: Pool, test_id: str) -> dict[str, Any]:
    """Return a test as stored (already masked by the worker)."""
    try:
        uuid.UUID(str(test_id))
    except ValueError:
        raise NotFoundError(f"no node test {test_id!r} (test ids are UUIDs)") from None
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT id, workflow_id, source, node_id, node, inputs, params, from_run, status,"
            " output, error, log, worker, duration_ms, created_by, created_at, started_at,"
            " ended_at, env FROM node_tests WHERE id=%s", (test_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no node test {test_id} (tests are kept for a day)")
    out = dict(row)
    for key in ("id", "workflow_id", "from_run"):
        out[key] = None if out[key] is None else str(out[key])
    out["test_id"] = out.pop("id")
    out["env"] = out["env"] or "dev"  # tests queued before tests had an environment
    for key in ("created_at", "started_at", "ended_at"):
        out[key] = _iso(out[key])
    return out


__all__ = ["KEEP_S", "TEST_JOB_FUNC", "claim_test", "create_test", "done_key", "finish_test",
           "read_test", "test_job_id"]

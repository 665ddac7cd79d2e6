"""The RQ job of a one-node test ("Test node", ``Flow.test``): run one node outside any run.

``execute_test(test_id)`` claims the test (once: a duplicate delivery does nothing), renders
the node's config over the test's inputs, params and environment variables (``env['NAME']``),
resolves its secrets and connections in the test's environment as a run there would (that
environment's own value, else the one of every environment; a group-scoped one only when the
test's user is in one of its groups, as for a run of theirs), runs the node type under its
timeout on this worker (code under the configured isolation, as in a run), masks what it
records with the values of every secret and connection the node or its flow names, writes the
outcome, and signals the waiters through Redis. Nothing of a run is touched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from nexusflow_kernel.errors import ExpressionError, NodeExecutionError
from nexusflow_kernel.expressions import render_templates
from nexusflow_kernel.masking import Masker
from nexusflow_kernel.model.document import Node
from nexusflow_kernel.nodes import Defer, NodeContext, NodeLog, get_node_type
from nexusflow_kernel.runstate.nodetests import claim_test, done_key, finish_test

from .jobs import MAX_ERROR_CHARS, _alarm, _checked_output, _Interrupt, _resolve_secrets, runtime

logger = logging.getLogger(__name__)

TEST_TIMEOUT_S = 300.0
"""Longest a test may run when its node sets no ``timeout_s``."""


def execute_test(test_id: str) -> str:
    """Run one node test (an RQ job); see the module docstring."""
    rt = runtime()
    row = claim_test(rt.pool, test_id, rt.worker_name)
    if row is None:
        return "duplicate or stale delivery: nothing to do"
    node = Node.from_dict(row["node"])
    inputs, params = row["inputs"] or {}, row["params"] or {}
    env, env_vars = row.get("env") or "dev", dict(row.get("env_vars") or {})
    user = row.get("created_by")
    found: list[str] = []

    def resolve(name: str) -> str:
        if rt.secrets is None:
            raise NodeExecutionError(f"secret {name!r} was asked for, but this worker has no "
                                     "secret store", retryable=False)
        value = _secret(rt, name, env, user)
        if isinstance(value, str):
            found.append(value)
        return value

    def connection(name: str) -> Any:
        found_conn = _connection(rt, name, env, user)
        if found_conn is not None:
            found.extend(found_conn.values)
        return found_conn

    masker = Masker(_secret_values(rt, row["secret_names"] or [], env, user))
    log = NodeLog(mask=lambda text: masker.with_values(found).text(text))
    started = time.monotonic()
    status, output, error = "failed", None, None
    try:
        output = _run(rt, test_id, node, inputs, params, resolve, log, env_vars,
                      connection if rt.connections is not None else None)
        status = "succeeded"
    except NodeExecutionError as exc:
        error = str(exc)
    except ExpressionError as exc:
        error = str(exc)
    except _Interrupt as exc:
        error = exc.reason
    except Exception as exc:  # the node's own failure, shown as a run would show it
        logger.debug("test %s raised", test_id, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
    m = masker.with_values(found)
    finish_test(rt.pool, test_id, status=status, output=m.value(output),
                error=m.text(error)[:MAX_ERROR_CHARS] if error else None, log=log.text(),
                duration_ms=(time.monotonic() - started) * 1000, inputs=m.value(inputs),
                params=m.value(params))
    try:
        pipe = rt.broker.redis.pipeline(transaction=False)
        pipe.rpush(done_key(test_id), status)
        pipe.expire(done_key(test_id), 120)
        pipe.execute()
    except redis.RedisError as exc:  # waiters poll PostgreSQL too
        logger.debug("could not signal the end of test %s: %s", test_id, exc)
    return f"test {status}"


def _run(rt: Any, test_id: str, node: Node, inputs: dict[str, Any], params: dict[str, Any],
         resolve: Any, log: NodeLog, env_vars: dict[str, Any], connection: Any) -> Any:
    node_type = get_node_type(node.type)
    if node_type is None:
        raise NodeExecutionError(f"node type {node.type!r} is not installed on this worker")
    rendered = render_templates(node.config,
                                {"inputs": inputs, "params": params, "env": env_vars},
                                exempt=node_type.template_exempt,
                                where=f"node {node.id!r} /config")
    config = _resolve_secrets(rendered, resolve if rt.secrets is not None else None)
    timeout_s = float(node.timeout_s) if node.timeout_s else TEST_TIMEOUT_S
    ctx = NodeContext(run_id=f"test-{test_id}", node_id=node.id, attempt=1, config=config,
                      inputs=inputs, params=params, settings=rt.settings, log=log,
                      deadline=time.time() + timeout_s, timeout_s=timeout_s, secrets=resolve,
                      connections=connection, names={"env": env_vars}, env=env_vars)
    armed = _alarm.arm(-1, timeout_s)
    try:
        result = node_type.run(ctx)
    finally:
        if armed:
            _alarm.disarm()
    if isinstance(result, Defer):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(result.until))
        log.write(f"the node would wait until {when} UTC in a run; a test does not wait")
        return {"deferred_until": result.until}
    output, _blob = _checked_output(result, rt.settings.max_output_bytes)
    return output


def _secret(rt: Any, name: str, env: str, user: str | None) -> str:
    """Secret ``name`` as a run of ``user`` in ``env`` reads it (the scope checked against the
    test's user; with none, a group-scoped secret is refused, as for a trigger's run)."""
    return str(rt.secrets(name, env=env, principal=user or ""))


def _connection(rt: Any, name: str, env: str, user: str | None) -> Any:
    """Stored connection ``name`` as a run of ``user`` in ``env`` may use it (``None``: no
    stored one: the node falls back as in a run, e.g. ``NEXUSFLOW_CONNECTION_<NAME>``)."""
    from nexusflow_kernel.errors import NotFoundError

    try:
        return rt.connections.resolve(name, run_id=None, env=env, principal=user or "")
    except NotFoundError:
        return None


def _secret_values(rt: Any, names: list[str], env: str, user: str | None) -> list[str]:
    """Return the values of ``names`` the test could read (to mask them in the record)."""
    from nexusflow_kernel.runstate.runplan import CONNECTION_PREFIX

    if rt.secrets is None:
        return []
    values: list[str] = []
    for name in names:
        try:
            if name.startswith(CONNECTION_PREFIX):
                conn = (_connection(rt, name[len(CONNECTION_PREFIX):], env, user)
                        if rt.connections is not None else None)
                values.extend(conn.values if conn is not None else [])
                continue
            value = _secret(rt, name, env, user)
        except Exception:  # missing or out of scope: the test could not have read it either
            continue
        if isinstance(value, str):
            values.append(value)
    return values


__all__ = ["TEST_TIMEOUT_S", "execute_test"]

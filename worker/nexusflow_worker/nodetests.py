"""The RQ job of a one-node test ("Test node", ``Flow.test``): run one node outside any run.

``execute_test(test_id)`` claims the test (once: a duplicate delivery does nothing), renders
the node's config over the test's inputs and params, resolves its secrets (only those a run
could read without a user's group: a test has no run), runs the node type under its timeout on
this worker (code under the configured isolation, as in a run), masks what it records with the
values of every secret the node or its flow names, writes the outcome, and signals the waiters
through Redis. Nothing of a run is touched.
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
    found: list[str] = []

    def resolve(name: str) -> str:
        if rt.secrets is None:
            raise NodeExecutionError(f"secret {name!r} was asked for, but this worker has no "
                                     "secret store", retryable=False)
        value = rt.secrets(name)
        if isinstance(value, str):
            found.append(value)
        return value

    masker = Masker(_secret_values(rt, row["secret_names"] or []))
    log = NodeLog(mask=lambda text: masker.with_values(found).text(text))
    started = time.monotonic()
    status, output, error = "failed", None, None
    try:
        output = _run(rt, test_id, node, inputs, params, resolve, log)
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
         resolve: Any, log: NodeLog) -> Any:
    node_type = get_node_type(node.type)
    if node_type is None:
        raise NodeExecutionError(f"node type {node.type!r} is not installed on this worker")
    rendered = render_templates(node.config, {"inputs": inputs, "params": params},
                                exempt=node_type.template_exempt,
                                where=f"node {node.id!r} /config")
    config = _resolve_secrets(rendered, resolve)
    timeout_s = float(node.timeout_s) if node.timeout_s else TEST_TIMEOUT_S
    ctx = NodeContext(run_id=f"test-{test_id}", node_id=node.id, attempt=1, config=config,
                      inputs=inputs, params=params, settings=rt.settings, log=log,
                      deadline=time.time() + timeout_s, timeout_s=timeout_s, secrets=resolve)
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


def _secret_values(rt: Any, names: list[str]) -> list[str]:
    """Return the values of ``names`` this worker can read (to mask them in the record)."""
    if rt.secrets is None:
        return []
    values = []
    for name in names:
        try:
            value = rt.secrets(name)
        except Exception:  # missing or group-scoped: the test could not have read it either
            continue
        if isinstance(value, str):
            values.append(value)
    return values


__all__ = ["TEST_TIMEOUT_S", "execute_test"]

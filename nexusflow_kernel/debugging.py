"""The debug loop's engine calls: a node's recorded context, resuming a run with the flow's
current version, and one-node tests run by workers (mixed into ``Engine``).

Every answer is masked with the run's masker, like every other read of a run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import NexusFlowError, NodeConfigError, NotFoundError
from .masking import Masker, secret_refs
from .model.compiler import CompiledFlow, compile_flow
from .model.document import FlowInput, load_document, read_flow
from .runstate.context import latest_node_context, read_node_context
from .runstate.db import run_tx
from .runstate.nodetests import (
    TEST_JOB_FUNC,
    create_test,
    done_key,
    read_test,
    test_job_id,
)
from .runstate.resume import UpdatePlan
from .runstate.runplan import RunPlan
from .runstate.store import refuse_child_retry
from .runstate.transitions import Effects, queue_for_type

if TYPE_CHECKING:  # pragma: no cover
    from .environments import EnvStore
    from .runstate.db import Pool
    from .runstate.store import Binding, RunStore
    from .settings import Settings
    from .transport.broker import Broker

logger = logging.getLogger(__name__)

TEST_WAIT_S = 60.0
"""Longest a caller waits for a test by default (the test itself may take longer)."""


def as_compiled(flow: CompiledFlow | FlowInput) -> CompiledFlow:
    """Compile a flow given compiled, or in any form :func:`read_flow` reads."""
    return flow if isinstance(flow, CompiledFlow) else compile_flow(read_flow(flow))


class DebugLoop:
    """``Engine``'s debug-loop calls (see the module docstring)."""

    if TYPE_CHECKING:
        pool: Pool
        store: RunStore
        broker: Broker
        settings: Settings

        @property
        def environments(self) -> EnvStore: ...

        def _masker(self, run_id: str, head: Mapping[str, Any] | None = None) -> Masker: ...

        def _pin_subflows(self, conn: Any, workflow_id: str, version: int, source: str | None,
                          *, actor: str | None, authorize: Callable[[Binding], None] | None,
                          base_dir: str | None, base_name: str | None,
                          file_key: Callable[[str], str] | None,
                          files: Mapping[str, tuple[str, Any]] | None = None,
                          ) -> dict[str, Any]: ...

        def _publish(self, effects: Effects) -> None: ...

    # ------------------------------------------------------------------ recorded context
    def node_context(self, run_id: str, node_id: str) -> dict[str, Any]:
        """Return what node ``node_id`` of run ``run_id`` saw, masked like the run's record.

        ``inputs`` and ``params`` are those of its latest attempt, ``config`` its rendered
        config (``{"$secret": NAME}`` references stay references), ``code`` the code of a
        ``@task`` or code node; ``recorded`` is false for a node that never ran (its
        parents' outputs as they are now, ``missing`` naming the parents without one).
        """
        with self.pool.connection() as conn:
            head = self.store.run_header(conn, run_id)
            context = read_node_context(
                conn, head, lambda v: self.store.plan_for(conn, head["workflow_id"], v),
                node_id)
        return self._masker(run_id, head).value(context)

    def latest_node_run(self, workflow_id: str, node_id: str) -> str | None:
        """Return the latest run of a workflow in which ``node_id`` ran, or ``None``."""
        with self.pool.connection() as conn:
            return latest_node_context(conn, workflow_id, node_id)

    # ------------------------------------------------------------------ resume with a fix
    def retry_updated(self, run_id: str, flow: Any = None, *, from_node: str | None = None,
                      actor: str | None = None,
                      authorize: Callable[[Binding], None] | None = None,
                      subflow_scope: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume a finished run with the flow's current version, in the same run.

        ``flow`` (a document, a compiled flow, JSON text or a path) is stored as a version of
        the run's workflow when it differs from the latest; without it the latest stored
        version is used. The failed nodes (or ``from_node`` and everything after it) run again
        with that version; every other succeeded node keeps its output. A version that does
        not fit what ran raises ``IncompatibleUpdate`` (a ``RunStateError``) naming the node,
        and nothing changes. ``subflow_scope`` (``base_dir``, ``base_name``, ``file_key``)
        resolves the sub-flows the version calls, as ``start_run`` does. Return ``{run_id,
        version, previous_version, rerun, added, removed, stale}``.
        """
        compiled = as_compiled(flow) if flow is not None else None
        stored: list[tuple[str, int]] = []

        def tx(conn: Any) -> tuple[Effects, UpdatePlan, int, int]:
            stored.clear()
            refuse_child_retry(conn, run_id)
            run = self.store.lock_finished_run(conn, run_id)
            workflow_id = str(run["workflow_id"])
            if compiled is not None:
                new = RunPlan.build(compiled.document.data, compiled.plan())
                latest = conn.execute(
                    "SELECT max(version) AS v FROM workflow_versions WHERE workflow_id=%s",
                    (workflow_id,)).fetchone()
                guess = int(latest["v"] or 0) + 1 if latest else 1
            else:
                row = conn.execute(
                    "SELECT version, graph_json, plan FROM workflow_versions WHERE"
                    " workflow_id=%s ORDER BY version DESC LIMIT 1", (workflow_id,)).fetchone()
                assert row is not None  # a run's workflow has its version at least
                guess = row["version"]
                new = RunPlan.build(row["graph_json"], row["plan"])
            # Decide (and refuse) before anything is written; the version number only names
            # the version in messages.
            decided, states = self.store.plan_update(conn, run_id, run, new, guess, from_node)
            version = guess
            if compiled is not None:
                _wid, version, _created = self.store.save_version(
                    conn, compiled, workflow_id=workflow_id, actor=actor, authorize=authorize)
                stored.append((workflow_id, version))
            scope = dict(subflow_scope or {})
            pins = self._pin_subflows(conn, workflow_id, version, run["source"], actor=actor,
                                      authorize=authorize, base_dir=scope.get("base_dir"),
                                      base_name=scope.get("base_name"),
                                      file_key=scope.get("file_key"),
                                      files=scope.get("files"))
            effects = self.store.apply_update(conn, run_id, run, new, version, decided, states,
                                              from_node=from_node, actor=actor,
                                              subflows=pins or None)
            return effects, decided, int(run["version"]), version

        try:
            effects, decided, previous, version = run_tx(self.pool, tx)
        except BaseException:
            for key in stored:  # a version rolled back must not stay in the plan cache
                self.store.plans.forget(key)
            raise
        self._publish(effects)
        return {"run_id": run_id, "version": version, "previous_version": previous,
                "rerun": decided.rerun, "added": decided.added, "removed": decided.removed,
                "stale": decided.stale}

    # ------------------------------------------------------------------ one-node tests
    def start_test(self, node: Mapping[str, Any], *, inputs: Mapping[str, Any] | None = None,
                   params: Mapping[str, Any] | None = None,
                   flow: Mapping[str, Any] | None = None, workflow_id: str | None = None,
                   key: str | None = None, source: str | None = None,
                   from_run: str | None = None, actor: str | None = None,
                   env: str | None = None) -> str:
        """Queue a test of one node (a flow document's node entry) and return its id.

        The node runs on a worker of its type's queue with ``inputs`` (parents' outputs by
        parent id) and ``params``, outside any run; its output, log and error are masked for
        every secret the node, or ``flow`` (the document it belongs to), names. Without
        ``inputs`` (or ``params``) it gets those the node had in ``from_run``, by default the
        latest run of its workflow (``workflow_id``, or the one filed under ``key``) in which
        it ran; a node with parents and no such run needs ``inputs``.

        The test runs in environment ``env`` as a run started there would (``None``: the
        default one, ``dev``): its variables are ``env['NAME']``, and its secrets and
        connections are that environment's (else those of every environment), read with the
        scope checks a run of ``actor`` gets. A named environment must exist and hold what
        the node names, or one error says what is missing (``Environments.for_run``).
        """
        entry = dict(node)
        entry.pop("pin", None)  # a test runs the node itself
        entry.pop("cache", None)
        entry.setdefault("config", {})
        try:
            compiled = compile_flow(load_document(
                {"schema": 1, "name": "test", "nodes": [entry], "edges": []}))
        except NexusFlowError as exc:
            raise NodeConfigError(f"node {entry.get('id')!r} cannot be tested: {exc}") from None
        node_doc = compiled.document.data["nodes"][0]
        if workflow_id is None and key is not None:
            workflow_id = self.store.workflow_for_key(key)
        if inputs is None or params is None:
            inputs, params, from_run = self._test_inputs(node_doc["id"], inputs, params, flow,
                                                         workflow_id, from_run)
        inputs, params = dict(inputs), dict(params)
        json.dumps([inputs, params])  # JSON or a TypeError now
        plan = RunPlan.build(compiled.document.data, compiled.plan())
        names = set(plan.secret_names)
        if flow:
            names |= secret_refs(flow) | set(compile_secret_names(flow))

        def tx(conn: Any) -> str:
            env_name, env_vars = self.environments.for_run(
                conn, env, plan, local_connections=self.settings.connections)
            return create_test(
                conn, node=node_doc, inputs=inputs, params=params, secret_names=sorted(names),
                workflow_id=workflow_id, source=source, from_run=from_run, actor=actor,
                env=env_name, env_vars=env_vars)

        test_id = run_tx(self.pool, tx)
        queue = self.broker.queue_for(queue_for_type(node_doc["type"]))
        queue.enqueue_call(TEST_JOB_FUNC, args=(test_id,), timeout=-1, result_ttl=0,
                           failure_ttl=3600, job_id=test_job_id(test_id),
                           description=f"nexusflow test of node {node_doc['id']}")
        return test_id

    def _test_inputs(self, node_id: str, inputs: Mapping[str, Any] | None,
                     params: Mapping[str, Any] | None, flow: Mapping[str, Any] | None,
                     workflow_id: str | None, from_run: str | None,
                     ) -> tuple[Mapping[str, Any], Mapping[str, Any], str | None]:
        """Fill in a test's missing inputs and params from the node's latest recorded run."""
        run = from_run or (self.latest_node_run(workflow_id, node_id) if workflow_id else None)
        recorded = self.node_context(run, node_id) if run else None
        if inputs is None:
            parents = [e.get("source") for e in (flow or {}).get("edges") or []
                       if isinstance(e, Mapping) and e.get("target") == node_id]
            if recorded is None and parents:
                named = ", ".join(map(str, parents))
                raise NotFoundError(
                    f"node {node_id!r} has not run yet, so there are no recorded inputs to "
                    f"test it with: give its inputs (its parents: {named})")
            inputs = recorded["inputs"] if recorded else {}
        if params is None:
            defaults = {k: v["default"] for k, v in ((flow or {}).get("params") or {}).items()
                        if isinstance(v, Mapping) and "default" in v}
            params = recorded["params"] if recorded else defaults
        return inputs, params, run if recorded else from_run

    def get_test(self, test_id: str) -> dict[str, Any]:
        """Return a node test: status (queued, running, succeeded, failed), output, error, log."""
        return read_test(self.pool, test_id)

    def wait_test(self, test_id: str, timeout: float = TEST_WAIT_S) -> dict[str, Any]:
        """Wait until a test is over (at most ``timeout`` seconds); return it as it is then."""
        deadline = time.monotonic() + timeout
        while True:
            test = self.get_test(test_id)
            left = deadline - time.monotonic()
            if test["status"] in ("succeeded", "failed") or left <= 0:
                return test
            try:  # the worker pushes here when done; a lost signal costs a second at most
                self.broker.redis.blpop([done_key(test_id)], timeout=max(0.1, min(1.0, left)))
            except Exception as exc:  # Redis away: PostgreSQL still answers the next loop
                logger.debug("waiting for test %s: %s", test_id, exc)
                time.sleep(min(0.5, max(0.0, left)))


def compile_secret_names(flow: Mapping[str, Any]) -> list[str]:
    """Return the secret names every node of a flow document may resolve (by its type)."""
    from .nodes import get_node_type

    names: set[str] = set()
    for node in flow.get("nodes") or []:
        if not isinstance(node, Mapping):
            continue
        node_type = get_node_type(str(node.get("type")))
        config = node.get("config") or {}
        if node_type is not None and isinstance(config, Mapping):
            names |= node_type.secret_names(config)
    return sorted(names)


__all__ = ["TEST_WAIT_S", "DebugLoop", "as_compiled", "compile_secret_names"]

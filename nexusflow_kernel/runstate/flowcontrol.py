"""Waiting nodes, child runs, decisions, callbacks and what happens when a run ends.

``RunStore`` inherits these. A node type that returns ``Wait`` makes its node ``waiting``
(``_enter_waiting``, in the finishing transaction): no worker and no lease are held. What it
waits for resolves it later, each in one transaction that records the outcome and the
attempt's log row and decides its successors exactly as a finishing worker does
(``resolve_waiting``):

- ``subflow``: the child run it started ends (``_run_closed`` of the child);
- ``approval``: a person decides (``decide``);
- ``resume``: an external system calls its resume URL (``resume``).

A waiting node with a timeout has a wake-up job at its deadline (the timer's due set, like a
Delay); the wake-up claims the node only if it still waits (``claim`` accepts a due
``waiting`` node), and the node type fails it with its timeout error.

Child runs (the engine entry point for anything that runs a flow inside a run):
``start_child(conn, parent_run, node_id, inputs, item=None)`` starts, in the caller's
transaction, the run of the flow pinned for ``node_id`` when the parent started
(``subflows.py``), as a real run with ``parent_run/parent_node/parent_item``, the parent's
identity (``created_by``) and ``depth + 1``; a failed or canceled earlier child of the same
node and item is resumed in place instead (a retry of the parent resumes the child from its
failed nodes). When a child run ends, ``CHILD_RUN_ENDED[kind]`` is called in the transaction
that ended it, with a ``ChildEnd`` (status, the sink nodes' outputs, or the error): ``node``
(``parent_item`` is null) resolves the waiting node; another kind (``item``: a map's item)
registers its own handler.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import defaults
from ..errors import (
    NexusFlowError,
    NotFoundError,
    ParamValueError,
    PermissionDenied,
    RunStateError,
)
from ..model.compiler import check_param_values
from ..transport.broker import Push, event
from .concurrency import Concurrency
from .db import Conn, jsonb
from .plan import NodeState, RunStatus
from .runplan import RunPlan
from .subflows import ON_FAILURE
from .transitions import Claim, Effects, Follow, KnownOutputs, Outcome, queue_for_type

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChildEnd:
    """A child run that just ended, as its parent sees it."""

    run_id: str
    status: str
    parent_run: str
    parent_node: str
    parent_item: int | None
    output: dict[str, Any] | None
    """``{sink node id: output}`` of a child that succeeded (sinks that were skipped are
    left out)."""
    error: str | None
    """Why a child that did not succeed did not (names its failed node)."""


ChildHandler = Callable[["FlowControl", Conn, ChildEnd, Effects], None]

CHILD_RUN_ENDED: dict[str, ChildHandler] = {}
"""What a parent does when a child run ends, by kind: ``node`` (``parent_item`` is null: a
waiting node) is built in; ``item`` is a map's (registered by its module)."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FlowControl(Concurrency):
    """Waiting nodes, child runs and run ends (mixed into ``RunStore``)."""

    def create_run(self, conn: Conn, workflow_id: str, version: int,
                   inputs: dict[str, Any], *, trigger: str, source: str | None,
                   actor: str | None, replay_of: str | None = None,
                   dedupe_key: str | None = None, subflows: dict[str, Any] | None = None,
                   parent: tuple[str, str, int | None] | None = None,
                   depth: int = 0) -> tuple[str, Effects]:
        raise NotImplementedError  # RunStore's

    def _retry_in(self, conn: Conn, run_id: str, from_node: str | None = None) -> Effects:
        raise NotImplementedError  # RunStore's

    def _update_in(self, conn: Conn, run_id: str, version: int,
                   subflows: dict[str, Any] | None, actor: str | None) -> Effects | None:
        raise NotImplementedError  # RunStore's

    # ------------------------------------------------------------------ entering 'waiting'
    def _enter_waiting(self, conn: Conn, run_id: str, idx: int, node_id: str, attempt: int,
                       token: str, plan: RunPlan, outcome: Outcome, follow: Follow | None,
                       params: dict[str, Any] | None, known: KnownOutputs | None,
                       ) -> tuple[Effects, Claim | None]:
        """Record a node that returned ``Wait`` as ``waiting`` and start what it waits for;
        when that cannot start (a child run refused), the node fails with the reason."""
        effects = Effects()
        kind = outcome.wait or "external"
        state = dict(outcome.resume_state or {})
        state["kind"] = kind
        if outcome.log:
            state["log"] = outcome.log
        try:
            with conn.transaction():  # a savepoint: a child that cannot start leaves nothing
                if kind == "subflow":
                    child, started = self.start_child(conn, run_id, node_id,
                                                      state.get("inputs") or {})
                    state["child"] = child
                    effects.extend(started)
                elif kind == "resume":
                    conn.execute(
                        "INSERT INTO nexusflow_resume_tokens (token_sha256, execution_id,"
                        " node_id) VALUES (%s, %s, %s) ON CONFLICT (token_sha256) DO UPDATE"
                        " SET created_at = now()", (state["token_sha256"], run_id, node_id))
        except NexusFlowError as exc:
            failed = dataclasses.replace(outcome, status="failed", error=str(exc),
                                         retryable=False, resume_state=None, wait=None)
            return self._finish_attempt(conn, run_id, idx, node_id, attempt, token, plan,
                                        failed, follow=follow, params=params, known=known
                                        ) or (effects, None)
        due = outcome.defer_until
        self._record(conn, run_id, idx, node_id, attempt, token, NodeState.WAITING, attempt,
                     False, due, "waiting", dataclasses.replace(outcome, resume_state=state))
        if due is not None:  # the wake-up that fails it at its timeout
            effects.pushes.append(Push(run_id, idx, attempt,
                                       queue_for_type(plan.nodes[node_id].type), at=due,
                                       wake=True))
        effects.events.append(event(run_id, node_id, NodeState.WAITING, attempt,
                                    duration_ms=outcome.duration_ms))
        nxt = None
        if follow is not None:  # the worker goes on with the run's next queued node
            claim_cur = self._claim_send(conn, run_id, follow, with_run=False)
            nxt = self._follow_collect(conn, claim_cur, run_id, plan, follow, params, known,
                                       [], effects)
        return effects, nxt

    # ------------------------------------------------------------------ resolving it
    def resolve_waiting(self, conn: Conn, run_id: str, node_id: str, *, status: str,
                        effects: Effects, output: Any = None, branch: str | None = None,
                        error: str | None = None, note: str = "",
                        kind: str | None = None) -> dict[str, Any]:
        """End a waiting node (``succeeded`` with ``output``, or ``failed`` with ``error``),
        record its attempt and decide its successors, in the caller's transaction.

        Raise ``RunStateError`` (nothing written) when the node is not waiting (for
        ``kind``). Return the node's row as it was.
        """
        row = conn.execute(
            "SELECT n.idx, n.state, n.attempt, n.resume_state, n.output, n.error, e.status,"
            " e.workflow_id, e.version FROM node_runs n JOIN executions e ON e.id=n.execution_id"
            " WHERE n.execution_id=%s AND n.node_id=%s FOR UPDATE OF n",
            (run_id, node_id)).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} has no node {node_id!r}")
        state = row["resume_state"] or {}
        if row["state"] != NodeState.WAITING or (kind and state.get("kind") != kind):
            raise RunStateError(_not_waiting(run_id, node_id, row, kind))
        if row["status"] != RunStatus.RUNNING:
            raise RunStateError(f"run {run_id} is {row['status']}: node {node_id!r} cannot "
                                "be resumed")
        plan = self.plan_for(conn, row["workflow_id"], row["version"])
        log = "\n".join(x for x in (state.get("log"), f"{_clock()} {note}" if note else "") if x)
        record = {k: v for k, v in state.items() if k not in ("log", "token_sha256")}
        conn.execute(
            "WITH u AS (UPDATE node_runs SET state=%(s)s, output=%(o)s, branch=%(b)s,"
            " error=%(e)s, resume_state=NULL, due_at=NULL, ended_at=clock_timestamp(),"
            " duration_ms=1000 * extract(epoch FROM clock_timestamp() - started_at)"
            " WHERE execution_id=%(r)s AND idx=%(i)s AND state='waiting'"
            " RETURNING attempt, worker, started_at, duration_ms)"
            " INSERT INTO node_logs (execution_id, node_id, attempt, status, input, output,"
            " error, log, worker, duration_ms, started_at)"
            " SELECT %(r)s, %(n)s, u.attempt, %(s)s, %(in)s, %(o)s, %(e)s, %(log)s, u.worker,"
            " u.duration_ms, u.started_at FROM u"
            " ON CONFLICT (execution_id, node_id, attempt) DO NOTHING",
            {"s": status, "o": jsonb(output) if status == NodeState.SUCCEEDED else None,
             "b": branch, "e": error, "r": run_id, "i": row["idx"], "n": node_id,
             "in": jsonb({"waited_for": record}), "log": log or None})
        conn.execute("DELETE FROM nexusflow_resume_tokens WHERE execution_id=%s AND node_id=%s",
                     (run_id, node_id))
        effects.events.append(event(run_id, node_id, status, row["attempt"], error=error))
        ready, skipped = self._decide_successors(conn, run_id, plan,
                                                 [(node_id, status, branch)], effects)
        self._dispatch_ready(conn, run_id, plan, ready, effects)
        self._finalize_if_done(conn, run_id, 1 + skipped, effects)
        return row

    def waiting_node(self, run_id: str, node_id: str) -> dict[str, Any]:
        """Return what a node waits for (its kind, message, approvers, since, timeout)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT state, resume_state, due_at FROM node_runs"
                " WHERE execution_id=%s AND node_id=%s", (run_id, node_id)).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} has no node {node_id!r}")
        return {"state": row["state"], **waiting_view(row["resume_state"], row["due_at"])}

    # ------------------------------------------------------------------ approvals
    def decide(self, run_id: str, node_id: str, approved: bool, *, actor: str,
               comment: str | None = None, groups: frozenset[str] = frozenset(),
               ) -> tuple[dict[str, Any], Effects]:
        """Approve or reject a waiting approval node as ``actor`` (in ``groups``).

        ``PermissionDenied`` when the node names approvers and ``actor`` is none of
        them; ``RunStateError`` when it is not waiting for a decision (decided already, not
        reached yet, timed out). Return the node's output (the decision) and the effects.
        """
        effects = Effects()
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT n.state, n.resume_state, n.output, n.error, e.workflow_id, e.version"
                " FROM node_runs n JOIN executions e ON e.id=n.execution_id"
                " WHERE n.execution_id=%s AND n.node_id=%s FOR UPDATE OF n",
                (run_id, node_id)).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id} has no node {node_id!r}")
            plan = self.plan_for(conn, row["workflow_id"], row["version"])
            node_type = plan.nodes[node_id].type
            if node_type != "approval":
                raise RunStateError(f"node {node_id!r} of run {run_id} is a {node_type} node, "
                                    "not an approval: there is nothing to decide")
            state = row["resume_state"] or {}
            if row["state"] != NodeState.WAITING:
                raise RunStateError(_not_waiting(run_id, node_id, row, "approval"))
            approvers = [str(a) for a in state.get("approvers") or []]
            if approvers and not may_decide(actor, groups, approvers):
                raise PermissionDenied(
                    f"{actor} may not decide node {node_id!r} of run {run_id}: its approvers are "
                    + ", ".join(approvers))
            output = {"approved": bool(approved), "decided_by": actor,
                      "decided_at": _now_iso(), "comment": comment or ""}
            verb = "approved" if approved else "rejected"
            self.resolve_waiting(conn, run_id, node_id, status=NodeState.SUCCEEDED,
                                 effects=effects, output=output, branch=verb,
                                 note=f"{verb} by {actor}" + (f": {comment}" if comment else ""),
                                 kind="approval")
        return output, effects

    # ------------------------------------------------------------------ resume URLs
    def resume_target(self, token_sha256: str) -> dict[str, Any]:
        """Return ``{run_id, node_id, state, max_body_bytes?}`` of the wait node a resume
        token's hash belongs to (``NotFoundError`` when none does)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT t.execution_id::text AS run_id, t.node_id, n.state, n.resume_state"
                " FROM nexusflow_resume_tokens t JOIN node_runs n"
                " ON n.execution_id = t.execution_id AND n.node_id = t.node_id"
                " WHERE t.token_sha256=%s", (token_sha256,)).fetchone()
        if row is None:
            raise NotFoundError("no wait node waits for this resume URL (it was used already, "
                                "timed out, or never existed)")
        state = row["resume_state"] or {}
        out = {"run_id": row["run_id"], "node_id": row["node_id"], "state": row["state"]}
        if isinstance(state.get("max_body_bytes"), int):
            out["max_body_bytes"] = state["max_body_bytes"]
        return out

    def resume(self, token_sha256: str, payload: Any) -> tuple[dict[str, Any], Effects]:
        """Resume the wait node of a resume token (by its hash) with ``payload`` as its
        output; the token is used up. Return ``{run_id, node_id}`` and the effects."""
        effects = Effects()
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "DELETE FROM nexusflow_resume_tokens WHERE token_sha256=%s"
                " RETURNING execution_id::text AS run_id, node_id", (token_sha256,)).fetchone()
            if row is None:
                raise NotFoundError("no wait node waits for this resume URL (it was used "
                                    "already, timed out, or never existed)")
            self.resolve_waiting(conn, row["run_id"], row["node_id"],
                                 status=NodeState.SUCCEEDED, effects=effects, output=payload,
                                 note="resumed by a callback on its resume URL", kind="resume")
        return {"run_id": row["run_id"], "node_id": row["node_id"]}, effects

    # ------------------------------------------------------------------ child runs
    def start_child(self, conn: Conn, parent_run: str, node_id: str, inputs: dict[str, Any],
                    *, item: int | None = None, resume: bool = True) -> tuple[str, Effects]:
        """Start the child run of ``node_id`` (and ``item``) of ``parent_run`` in ``conn``'s
        transaction; return its id and the effects to publish after the commit.

        The child runs the version pinned for the node when the parent started, with
        ``inputs`` (plus the child flow's param defaults) as its params, as the parent's
        user. With ``resume``, an earlier child of the same node and item that failed or was
        canceled is retried in place (its succeeded nodes keep their outputs), and one that
        still runs is returned as it is. When the parent was resumed with a newer version of
        the sub-flow pinned (a retry with the current flow after the sub-flow's file was
        fixed), the child is resumed in place with that version, as ``retry --update`` does;
        when that version does not fit what the child already did, or the node now calls
        another flow, a new child starts. ``RunStateError`` / ``NotFoundError`` when it cannot
        start (nothing pinned, too deep, the workflow deleted).
        """
        parent = conn.execute(
            "SELECT created_by, depth, subflows FROM executions WHERE id=%s",
            (parent_run,)).fetchone()
        if parent is None:
            raise NotFoundError(f"no run {parent_run}")
        pin = (parent["subflows"] or {}).get(node_id)
        if not pin:
            raise RunStateError(f"node {node_id!r} of run {parent_run} has no sub-flow pinned "
                                "(the run started without resolving it)")
        if parent["depth"] + 1 > defaults.MAX_SUBFLOW_DEPTH:
            raise RunStateError(f"node {node_id!r}: sub-flows nest deeper than "
                                f"{defaults.MAX_SUBFLOW_DEPTH} levels (does a flow call itself?)")
        if resume:
            prev = conn.execute(
                "SELECT id, status, workflow_id::text AS workflow_id, version FROM executions"
                " WHERE parent_run=%s AND parent_node=%s"
                " AND parent_item IS NOT DISTINCT FROM %s ORDER BY created_at DESC LIMIT 1"
                " FOR UPDATE", (parent_run, node_id, item)).fetchone()
            if prev is not None and prev["status"] in (RunStatus.RUNNING, RunStatus.QUEUED):
                return str(prev["id"]), Effects()
            if prev is not None and prev["status"] in (RunStatus.FAILED, RunStatus.CANCELED) \
                    and prev["workflow_id"] == str(pin["workflow_id"]):
                if prev["version"] == pin["version"]:
                    return str(prev["id"]), self._retry_in(conn, str(prev["id"]))
                updated = self._update_in(conn, str(prev["id"]), int(pin["version"]),
                                          pin.get("subflows"), parent["created_by"])
                if updated is not None:
                    return str(prev["id"]), updated
        plan = self.plan_for(conn, pin["workflow_id"], pin["version"])
        params = dict(inputs)
        declared = plan.document.get("params") or {}
        for name, spec in declared.items():
            if name not in params and isinstance(spec, dict) and "default" in spec:
                params[name] = spec["default"]
        try:  # as a run started any other way: a value outside a param's enum is refused
            check_param_values(declared, params)
        except ParamValueError as exc:
            raise ParamValueError(f"node {node_id!r}: the sub-flow's {exc}",
                                  f"/config/inputs{exc.pointer[len('/params'):]}") from None
        return self.create_run(conn, pin["workflow_id"], pin["version"], params,
                               trigger="subflow", source=pin.get("source"),
                               actor=parent["created_by"], subflows=pin.get("subflows"),
                               parent=(parent_run, node_id, item), depth=parent["depth"] + 1)

    # ------------------------------------------------------------------ a run ended
    def _run_closed(self, conn: Conn, run_id: str, status: str, effects: Effects) -> None:
        """In the transaction that ended a run: tell its parent, start its ``on_failure``
        flow, and start the next queued runs of its flow."""
        head = conn.execute(
            "SELECT workflow_id, version, trigger, created_by, subflows, parent_run::text AS"
            " parent_run, parent_node, parent_item FROM executions WHERE id=%s",
            (run_id,)).fetchone()
        assert head is not None  # the run being closed
        if head["parent_run"] is not None:
            end = self._child_end(conn, run_id, status, head)
            handler = CHILD_RUN_ENDED.get("node" if end.parent_item is None else "item")
            if handler is None:
                logger.warning("no handler for the end of child run %s (item %s)", run_id,
                               end.parent_item)
            else:
                handler(self, conn, end, effects)
        if status == RunStatus.FAILED and head["trigger"] != "on_failure":
            self._start_on_failure(conn, run_id, head, effects)
        self._promote_queued(conn, head["workflow_id"], effects)

    def _child_end(self, conn: Conn, run_id: str, status: str,
                   head: dict[str, Any]) -> ChildEnd:
        output: dict[str, Any] | None = None
        error: str | None = None
        if status == RunStatus.SUCCEEDED:
            plan = self.plan_for(conn, head["workflow_id"], head["version"])
            output = {r["node_id"]: r["output"] for r in conn.execute(
                "SELECT node_id, output FROM node_runs WHERE execution_id=%s"
                " AND idx = ANY(%s) AND state='succeeded' ORDER BY idx",
                (run_id, [plan.idx_of[n] for n in plan.sinks]))}
        elif status == RunStatus.CANCELED:
            error = f"sub-flow run {run_id} was canceled"
        else:
            failed = conn.execute(
                "SELECT node_id, error FROM node_runs WHERE execution_id=%s AND state='failed'"
                " ORDER BY idx LIMIT 1", (run_id,)).fetchone()
            error = (f"sub-flow run {run_id} failed at node {failed['node_id']!r}: "
                     f"{failed['error'] or 'no error text'}" if failed
                     else f"sub-flow run {run_id} failed")
        return ChildEnd(run_id, status, head["parent_run"], head["parent_node"],
                        head["parent_item"], output, error)

    def _start_on_failure(self, conn: Conn, run_id: str, head: dict[str, Any],
                          effects: Effects) -> None:
        """Start the flow's ``on_failure`` flow with ``{run_id, flow, failed_nodes}``."""
        pin = (head["subflows"] or {}).get(ON_FAILURE)
        if not pin:
            return
        plan = self.plan_for(conn, head["workflow_id"], head["version"])
        failed = [{"id": r["node_id"], "error": r["error"]} for r in conn.execute(
            "SELECT node_id, error FROM node_runs WHERE execution_id=%s AND state='failed'"
            " ORDER BY idx", (run_id,))]
        inputs = {"run_id": run_id, "flow": plan.document.get("name") or "flow",
                  "failed_nodes": failed}
        try:
            with conn.transaction():  # a savepoint: the failed run closes whatever happens
                _id, started = self.create_run(
                    conn, pin["workflow_id"], pin["version"], inputs, trigger="on_failure",
                    source=pin.get("source"), actor=head["created_by"],
                    subflows=pin.get("subflows"))
            effects.extend(started)
        except NexusFlowError as exc:
            logger.warning("could not start the on_failure flow of run %s: %s", run_id, exc)


def _child_ended_node(store: FlowControl, conn: Conn, end: ChildEnd, effects: Effects) -> None:
    """A sub-flow node's child ended: the node succeeds with the child's sink outputs, or
    fails naming the child's failure (if it still waits for this child)."""
    row = conn.execute(
        "SELECT n.state, n.resume_state, e.status FROM node_runs n"
        " JOIN executions e ON e.id=n.execution_id"
        " WHERE n.execution_id=%s AND n.node_id=%s FOR UPDATE OF n",
        (end.parent_run, end.parent_node)).fetchone()
    if (row is None or row["state"] != NodeState.WAITING or row["status"] != RunStatus.RUNNING
            or (row["resume_state"] or {}).get("child") != end.run_id):
        return  # the parent moved on (canceled, or waits for another child)
    if end.status == RunStatus.SUCCEEDED:
        store.resolve_waiting(conn, end.parent_run, end.parent_node,
                              status=NodeState.SUCCEEDED, effects=effects, output=end.output,
                              note=f"sub-flow run {end.run_id} succeeded", kind="subflow")
    else:
        store.resolve_waiting(conn, end.parent_run, end.parent_node, status=NodeState.FAILED,
                              effects=effects, error=end.error, note=end.error or "",
                              kind="subflow")


CHILD_RUN_ENDED["node"] = _child_ended_node


def may_decide(actor: str, groups: frozenset[str], approvers: list[str]) -> bool:
    """Whether ``actor`` (member of ``groups``) is one of ``approvers`` (names, ``group:G``)."""
    for who in approvers:
        if who.startswith("group:"):
            if who[len("group:"):] in groups:
                return True
        elif who == actor:
            return True
    return False


def waiting_view(state: dict[str, Any] | None, due_at: Any) -> dict[str, Any]:
    """Return what a waiting node shows of itself: never its token hash or its log."""
    state = state or {}
    out = {k: v for k, v in state.items()
           if k in ("kind", "message", "approvers", "since", "child")}
    if due_at is not None:
        out["timeout_at"] = due_at.isoformat().replace("+00:00", "Z")
    return out


def _not_waiting(run_id: str, node_id: str, row: dict[str, Any], kind: str | None) -> str:
    what = {"approval": "a decision", "resume": "a callback",
            "subflow": "its sub-flow"}.get(kind or "", "anything")
    output = row.get("output")
    if row["state"] == NodeState.SUCCEEDED and isinstance(output, dict) and "decided_by" in output:
        verb = "approved" if output.get("approved") else "rejected"
        return (f"node {node_id!r} of run {run_id} was already decided: {verb} by "
                f"{output.get('decided_by')} at {output.get('decided_at')}")
    if row["state"] == NodeState.WAITING:
        kind_now = (row.get("resume_state") or {}).get("kind")
        return f"node {node_id!r} of run {run_id} waits for {kind_now}, not for {what}"
    extra = f" ({row['error']})" if row["state"] == NodeState.FAILED and row.get("error") else ""
    return (f"node {node_id!r} of run {run_id} is not waiting for {what}: it is "
            f"{row['state']}{extra}")


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S")


__all__ = ["CHILD_RUN_ENDED", "ChildEnd", "ChildHandler", "FlowControl", "may_decide",
           "waiting_view"]

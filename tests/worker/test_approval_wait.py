"""Approval and wait nodes: they wait without a worker until decided, called back or timed out."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NotFoundError, PermissionDenied, RunStateError


def approval_flow(**config) -> dict:
    ask = node("ask", "approval", message="Pay {{ inputs['amount'] }} EUR?")
    ask["config"].update(config)  # timeout_s of the approval's config, not the node's
    doc = flow(node("amount", expression="params['amount']"), ask,
               node("pay", expression="'paid'"), node("stop", expression="'stopped'"),
               edges=[("amount", "ask"), ("ask", "pay", "approved"),
                      ("ask", "stop", "rejected")], name="payment")
    return doc


def wait_state(engine, run_id: str, node_id: str, state: str, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = engine.get_run(run_id)["nodes"][node_id]
        if info["state"] == state:
            return info
        time.sleep(0.1)
    raise AssertionError(f"{node_id} never became {state}: {engine.get_run(run_id)}")


def busy_workers(engine) -> int:
    from rq import Worker

    return sum(1 for w in Worker.all(connection=engine.redis) if w.get_current_job_id())


def test_approval_waits_without_a_worker_and_takes_the_decided_branch(engine, settings,
                                                                     workers) -> None:
    workers.start(1)
    run_id = engine.start_run(approval_flow(), inputs={"amount": 120})
    info = wait_state(engine, run_id, "ask", "waiting")
    assert info["waiting"]["kind"] == "approval"
    assert info["waiting"]["message"] == "Pay 120 EUR?"
    assert info["waiting"]["approvers"] == []
    time.sleep(1.0)
    assert busy_workers(engine) == 0  # nothing holds the only worker while it waits
    # Another run goes through the same single worker meanwhile.
    other = wait_run(engine, engine.start_run(flow(node("x", expression="1"))), timeout=30)
    assert other["status"] == "succeeded"
    decision = engine.decide(run_id, "ask", True, comment="ok for this month", actor="alice")
    assert decision["approved"] is True and decision["decided_by"] == "alice"
    assert decision["comment"] == "ok for this month" and decision["decided_at"]
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded"
    assert run["nodes"]["ask"]["output"] == decision
    assert run["nodes"]["pay"]["output"] == "paid"
    assert run["nodes"]["stop"]["state"] == "skipped"
    attempt = engine.node_attempts(run_id, "ask")[0]
    assert attempt["status"] == "succeeded" and "approved by alice" in attempt["log"]
    assert attempt["input"]["waited_for"]["message"] == "Pay 120 EUR?"
    # A second decision is refused, and says who decided.
    with pytest.raises(RunStateError, match="already decided: approved by alice"):
        engine.decide(run_id, "ask", False, actor="bob")
    with pytest.raises(RunStateError, match="is a transform node, not an approval"):
        engine.decide(run_id, "pay", True, actor="alice")
    with pytest.raises(NotFoundError):
        engine.decide(run_id, "nope", True, actor="alice")
    from nexusflow_worker.chaos import check_invariants, wait_rq_idle

    wait_rq_idle(engine.redis, settings)
    rep = check_invariants(engine.pool, engine.redis, settings, [run_id], store=engine.store)
    assert rep.ok, str(rep)


def test_rejection_approvers_and_a_decision_too_early(engine, workers) -> None:
    doc = flow(node("first", "delay", seconds=2), node("ask", "approval",
                                                       approvers=["carol", "group:finance"]),
               node("pay", "noop"), node("stop", "noop"),
               edges=[("first", "ask"), ("ask", "pay", "approved"), ("ask", "stop", "rejected")])
    run_id = engine.start_run(doc)
    with pytest.raises(RunStateError, match="is not waiting for a decision: it is pending"):
        engine.decide(run_id, "ask", True, actor="carol")
    workers.start(1)
    wait_state(engine, run_id, "ask", "waiting")
    with pytest.raises(PermissionDenied, match="mallory may not decide node 'ask'"):
        engine.decide(run_id, "ask", True, actor="mallory", groups=frozenset({"sales"}))
    engine.decide(run_id, "ask", False, actor="dave", groups=frozenset({"finance"}))
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded"
    assert run["nodes"]["pay"]["state"] == "skipped"
    assert run["nodes"]["stop"]["state"] == "succeeded"
    assert run["nodes"]["ask"]["output"]["approved"] is False


def test_an_approval_times_out_with_a_clear_error(engine, workers) -> None:
    workers.start(1)
    run_id = engine.start_run(approval_flow(timeout_s=1.5), inputs={"amount": 1})
    wait_state(engine, run_id, "ask", "waiting")
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "failed"
    error = run["nodes"]["ask"]["error"]
    assert error.startswith("node 'ask' timed out: nobody approved or rejected it within 1.5 s")
    assert {run["nodes"]["pay"]["state"], run["nodes"]["stop"]["state"]} == {"skipped"}
    with pytest.raises(RunStateError, match="is not waiting for a decision: it is failed"):
        engine.decide(run_id, "ask", True, actor="alice")


class _Recorder(BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jobs", _Recorder.bodies
    server.shutdown()


def test_wait_node_resumes_once_with_the_posted_body(engine, workers, recorder) -> None:
    url, bodies = recorder
    workers.start(1)
    doc = flow(node("send", "http", method="POST", url=url,
                    json={"callback": "{{ resume_url('W') }}"}),
               node("W", "wait"), node("after", expression="inputs['W']['result'] * 2"),
               edges=[("W", "after")], name="callback")
    run_id = engine.start_run(doc)
    wait_state(engine, run_id, "W", "waiting")
    deadline = time.monotonic() + 20
    while not bodies and time.monotonic() < deadline:
        time.sleep(0.1)
    callback = bodies[0]["callback"]
    assert callback.startswith("/nexusflow/hooks/resume/")  # no public URL configured
    token = callback.rsplit("/", 1)[1]
    assert len(token) >= 43
    # The token is a credential: it is in no record, only its hash is stored.
    with engine.pool.connection() as conn:
        for table in ("node_runs", "node_logs", "executions", "nexusflow_resume_tokens"):
            rows = conn.execute(f"SELECT t::text AS t FROM {table} t").fetchall()
            assert not any(token in r["t"] for r in rows), table
    assert token not in json.dumps(engine.node_attempts(run_id, "send"))
    assert engine.resume_target(token) == {"run_id": run_id, "node_id": "W",
                                           "state": "waiting"}
    assert engine.resume(token, {"result": 21}) == {"run_id": run_id, "node_id": "W"}
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded"
    assert run["nodes"]["W"]["output"] == {"result": 21}
    assert run["nodes"]["after"]["output"] == 42
    with pytest.raises(NotFoundError, match="used already"):  # single use
        engine.resume(token, {"result": 1})
    with pytest.raises(NotFoundError):
        engine.resume("not-a-token", {})


def test_wait_node_times_out(engine, workers) -> None:
    workers.start(1)
    run_id = engine.start_run(flow(node("W", "wait", timeout_s=1)))  # the node's timeout_s
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "failed"
    assert run["nodes"]["W"]["error"].startswith("node 'W' timed out: no callback came within 1 s")


def test_resume_url_names_a_wait_node(engine, workers) -> None:
    workers.start(1)
    run = wait_run(engine, engine.start_run(flow(
        node("bad", "noop", value="{{ resume_url('nope') }}"),
        node("W", "wait", timeout_s=5))), timeout=30)
    assert "'nope' is not a wait node of this flow (wait nodes: W)" in \
        run["nodes"]["bad"]["error"]

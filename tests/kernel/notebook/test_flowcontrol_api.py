"""The notebook API of flow control: sub-flows, approvals, error handlers, limits, pools."""

from __future__ import annotations

import time

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.errors import NodeConfigError, RunStateError


@pytest.fixture
def env(settings, monkeypatch):
    from tests.conftest import settings_env

    for key, value in settings_env(settings).items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    return settings


def started(workers, settings, n: int) -> None:
    """Start ``n`` worker processes and wait until they serve the queue (a busy machine may
    take longer than ``flow.run``'s own wait for a worker to appear)."""
    from nexusflow_kernel.workers import worker_count

    workers.start(n)
    deadline = time.monotonic() + 60
    while worker_count(settings) < n:
        assert time.monotonic() < deadline, "the workers never came up"
        time.sleep(0.2)


def payment() -> nf.Flow:
    f = nf.Flow("payment", params={"amount": {"type": "number", "default": 10}},
                max_active_runs=3)
    amount = f.transform("amount", "params['amount']")
    ask = f.approval("ask", "Pay {{ inputs['amount'] }} EUR?", timeout=600)
    amount >> ask
    ask.approved >> f.transform("pay", "'paid ' + str(inputs['ask']['decided_by'])")
    ask.rejected >> f.transform("stop", "'stopped'")
    return f


def test_the_builder_writes_the_documents_fields() -> None:
    f = payment()
    f.transform("fix", "inputs", trigger_rule="one_failed", recovers=True, pool="api")
    f.wait("W", timeout=30, max_body_bytes=1000)
    f.subflow("S", {"workflow_id": "00000000-0000-0000-0000-000000000001"}, inputs={"n": 1})
    doc = f.to_dict()
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert nodes["ask"]["config"] == {"message": "Pay {{ inputs['amount'] }} EUR?",
                                      "timeout_s": 600}
    assert {(e["source"], e.get("source_handle"), e["target"]) for e in doc["edges"]} >= {
        ("ask", "approved", "pay"), ("ask", "rejected", "stop")}
    assert nodes["fix"]["trigger_rule"] == "one_failed" and nodes["fix"]["recovers"] is True
    assert nodes["fix"]["pool"] == "api"
    assert nodes["W"]["config"] == {"timeout_s": 30, "max_body_bytes": 1000}
    assert doc["max_active_runs"] == 3
    f.validate()
    again = nf.Flow.from_dict(doc)
    assert again.to_dict() == doc and again.max_active_runs == 3
    with pytest.raises(NodeConfigError, match="trigger_rule 'sometimes'"):
        f.transform("x", "1", trigger_rule="sometimes")
    with pytest.raises(NodeConfigError, match="no file: save it"):
        f.subflow("T", nf.Flow("unsaved"))


def test_approve_in_a_notebook(env, workers) -> None:
    started(workers, env, 1)
    run = payment().run(inputs={"amount": 12}, wait=False)
    deadline = time.monotonic() + 30
    while "ask" not in run.waiting:
        assert time.monotonic() < deadline, run.summary()
        time.sleep(0.1)
    assert run.waiting["ask"]["message"] == "Pay 12 EUR?"
    assert run.waiting["ask"]["timeout_at"]
    decision = run.approve("ask", comment="fine")
    assert decision["approved"] is True and decision["comment"] == "fine"
    run.wait(timeout=30, progress=False)
    assert run.outputs["pay"].startswith("paid ")
    with pytest.raises(RunStateError, match="already decided"):
        run.reject("ask")


def test_a_subflow_and_its_child_run_in_a_notebook(env, workers, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    child = nf.Flow("child", params={"n": {"type": "integer", "default": 0}})
    child.transform("square", "params['n'] ** 2")
    child.save(tmp_path / "child.nxflow")
    parent = nf.Flow("parent")
    parent.transform("n", "7") >> parent.subflow("S", child, inputs={"n": "{{ inputs['n'] }}"})
    assert parent["S"].config["flow"] == "child.nxflow"
    started(workers, env, 2)
    run = parent.run(timeout=60, progress=False)
    assert run.outputs["S"] == {"square": 49}
    kid = run.child("S")
    assert kid.outputs["square"] == 49 and kid.parent is not None and kid.parent.id == run.id
    assert [c.id for c in run.children()] == [kid.id]


def test_error_handlers_pools_and_run_limits_in_a_notebook(env, workers, tmp_path,
                                                           monkeypatch) -> None:
    from nexusflow_kernel.notebook.run import get_engine, runs

    monkeypatch.chdir(tmp_path)
    get_engine().set_pool("nb", 1)
    alert = nf.Flow("alert")
    alert.transform("seen", "[f['id'] for f in params['failed_nodes']]")
    alert.save(tmp_path / "alert.nxflow")
    f = nf.Flow("guarded", max_active_runs=1, on_failure=alert)
    bad = f.transform("bad", "1 / 0", pool="nb")
    bad >> f.transform("fix", "'division by zero' in inputs['bad']['error']",
                       trigger_rule="one_failed", recovers=True)
    f.transform("other", "2", pool="nb")
    started(workers, env, 2)
    first, second = f.run(wait=False), f.run(wait=False)
    assert second.status == "queued"  # max_active_runs=1: it waits for the first
    first.wait(timeout=60, progress=False)
    second.wait(timeout=60, progress=False)
    assert first.status == "succeeded"  # the handler recovered the failure
    assert first.outputs["fix"] is True
    assert first.nodes["bad"]["state"] == "failed"
    # No alert: the run succeeded. Without the recovering handler it fails, and alerts.
    f.remove("fix")
    failed = f.run(wait=False)
    assert failed.wait(timeout=60, progress=False, raise_on_failure=False).status == "failed"
    deadline = time.monotonic() + 30
    while True:
        alerts = [r for r in runs(limit=50) if r["trigger"] == "on_failure"]
        if alerts and alerts[0]["status"] == "succeeded":
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.2)
    assert nf.Run.attach(alerts[0]["run_id"]).outputs["seen"] == ["bad"]

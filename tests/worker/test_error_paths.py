"""Error paths: one_failed / all_failed handlers, recovering handlers, on_failure flows."""

from __future__ import annotations

import json
import time
from datetime import datetime

from nftest import flow, node, wait_run


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def invariants(engine, settings, run_ids: list[str]) -> None:
    from nexusflow_worker.chaos import check_invariants, wait_rq_idle

    wait_rq_idle(engine.redis, settings)
    rep = check_invariants(engine.pool, engine.redis, settings, run_ids, store=engine.store)
    assert rep.ok, str(rep)


def test_one_failed_runs_at_the_first_failure_and_sees_the_error(engine, settings,
                                                                  workers) -> None:
    workers.start(2)
    doc = flow(
        node("bad", expression="1 / 0"),
        node("slow", "sleep", seconds=3),
        node("handler", expression="inputs", trigger_rule="one_failed"),
        node("all_failed", "noop", trigger_rule="all_failed"),
        edges=[("bad", "handler"), ("slow", "handler"), ("bad", "all_failed"),
               ("slow", "all_failed")])
    run_id = engine.start_run(doc)
    run = wait_run(engine, run_id, timeout=60)
    n = run["nodes"]
    assert n["handler"]["state"] == "succeeded"
    # It ran while 'slow' still held its worker: it did not wait for every parent.
    assert ts(n["handler"]["ended_at"]) < ts(n["slow"]["ended_at"])
    error = n["handler"]["output"]["bad"]
    assert error["state"] == "failed" and "division by zero" in error["error"]
    assert "slow" not in n["handler"]["output"]  # not finished when the handler ran
    assert n["all_failed"]["state"] == "skipped"  # 'slow' succeeded
    assert run["status"] == "failed"  # a handler that does not recover changes nothing
    invariants(engine, settings, [run_id])  # the handler started after a parent failed


def test_all_failed_runs_when_every_parent_failed(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node("a", expression="1 / 0"), node("b", expression="[][1]"),
        node("both", expression="sorted(inputs)", trigger_rule="all_failed"),
        node("one", expression="len(inputs)", trigger_rule="one_failed"),
        node("quiet", "noop", trigger_rule="one_failed"),
        node("ok", "noop"),
        edges=[("a", "both"), ("b", "both"), ("a", "one"), ("b", "one"), ("ok", "quiet")])
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    n = run["nodes"]
    assert n["both"]["output"] == ["a", "b"]
    assert n["one"]["state"] == "succeeded"
    assert n["quiet"]["state"] == "skipped"  # its parent did not fail
    assert run["status"] == "failed"


def test_a_recovering_handler_makes_the_run_succeed(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("bad", expression="1 / 0"),
               node("fix", expression="'fixed: ' + inputs['bad']['error'][:20]",
                    trigger_rule="one_failed"),
               node("after", expression="inputs['fix']"),
               edges=[("bad", "fix"), ("fix", "after")])
    doc["nodes"][1]["recovers"] = True
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["bad"]["state"] == "failed"
    assert run["nodes"]["after"]["output"].startswith("fixed: ")
    # A failure no recovering handler caught still fails the run.
    doc = flow(node("bad", expression="1 / 0"), node("other", expression="[][0]"),
               node("fix", "noop", trigger_rule="one_failed"), edges=[("bad", "fix")])
    doc["nodes"][2]["recovers"] = True
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "failed"
    # A recovering handler that itself fails recovers nothing.
    doc = flow(node("bad", expression="1 / 0"),
               node("fix", expression="[][0]", trigger_rule="one_failed"),
               edges=[("bad", "fix")])
    doc["nodes"][1]["recovers"] = True
    run = wait_run(engine, engine.start_run(doc), timeout=60)
    assert run["status"] == "failed"


def test_on_failure_starts_the_error_flow_with_the_failed_nodes(engine, workers,
                                                                 tmp_path) -> None:
    workers.start(2)
    (tmp_path / "alert.nxflow").write_text(json.dumps(flow(
        node("report", expression="[params['flow'], params['run_id'],"
                                  " [f['id'] for f in params['failed_nodes']]]"),
        name="alert")))
    main = tmp_path / "main.nxflow"
    main.write_text(json.dumps(flow(node("ok", "noop"), node("bad", expression="1 / 0"),
                                    name="nightly", on_failure="alert.nxflow")))
    run_id = engine.start_run(main, base_dir=str(tmp_path))
    assert wait_run(engine, run_id, timeout=60)["status"] == "failed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alerts = [r for r in engine.list_runs() if r["trigger"] == "on_failure"]
        if alerts and alerts[0]["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert len(alerts) == 1, alerts
    alert = engine.get_run(alerts[0]["run_id"])
    assert alert["status"] == "succeeded" and alert["name"] == "alert"
    assert alert["inputs"]["run_id"] == run_id and alert["inputs"]["flow"] == "nightly"
    assert alert["inputs"]["failed_nodes"][0]["id"] == "bad"
    assert "division by zero" in alert["inputs"]["failed_nodes"][0]["error"]
    assert alert["nodes"]["report"]["output"] == ["nightly", run_id, ["bad"]]
    assert alert["created_by"] == engine.get_run(run_id)["created_by"]
    # A run that succeeds starts nothing; a missing error flow is refused at start.
    ok = tmp_path / "fine.nxflow"
    ok.write_text(json.dumps(flow(node("ok", "noop"), name="fine",
                                  on_failure="alert.nxflow")))
    assert wait_run(engine, engine.start_run(ok, base_dir=str(tmp_path)))["status"] == \
        "succeeded"
    time.sleep(1)
    assert len([r for r in engine.list_runs() if r["trigger"] == "on_failure"]) == 1
    missing = tmp_path / "missing.nxflow"
    missing.write_text(json.dumps(flow(node("ok", "noop"), name="m",
                                       on_failure="nope.nxflow")))
    import pytest

    from nexusflow_kernel.errors import NodeConfigError

    with pytest.raises(NodeConfigError, match=r"at /on_failure: on_failure: nope.nxflow does "
                                              "not exist"):
        engine.start_run(missing, base_dir=str(tmp_path))

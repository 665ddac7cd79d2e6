"""Sub-flow nodes: child runs, their outputs, recursion, cancel and retry, with real workers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NodeConfigError


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def child_doc(**top) -> dict:
    return flow(node("double", expression="params['n'] * 2"),
                node("label", expression="'n=' + str(params['n'])"),
                node("total", expression="inputs['double'] + 1"),
                edges=[("double", "total")], name="child",
                params={"n": {"type": "integer", "default": 1}}, **top)


def subflow(id: str, ref, **inputs) -> dict:
    return {"id": id, "type": "subflow", "config": {"flow": ref, "inputs": inputs}}


def runs_count(engine) -> int:
    with engine.pool.connection() as conn:
        return conn.execute("SELECT count(*) AS n FROM executions").fetchone()["n"]


def test_subflow_by_path_is_a_child_run_and_outputs_its_sinks(engine, settings, workers,
                                                               tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "flows" / "child.nxflow", child_doc())
    parent = write(tmp_path / "parent.nxflow", flow(
        node("A", expression="20"),
        subflow("S", "flows/child.nxflow", n="{{ inputs['A'] + 1 }}"),
        node("after", expression="inputs['S']['total'] * 10"),
        edges=[("A", "S"), ("S", "after")], name="parent"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    # The output: every sink of the child by id (double is not a sink).
    assert run["nodes"]["S"]["output"] == {"label": "n=21", "total": 43}
    assert run["nodes"]["after"]["output"] == 430
    child_id = run["nodes"]["S"]["child_run"]
    child = engine.get_run(child_id)
    assert child["status"] == "succeeded"
    assert child["parent"] == {"run_id": run_id, "node_id": "S", "item": None}
    assert child["inputs"] == {"n": 21}
    assert child["name"] == "child" and child["created_by"] == run["created_by"]
    assert child["source"] == "flows/child.nxflow"
    # Listed in history, with its parent.
    listed = {r["run_id"]: r for r in engine.list_runs()}
    assert listed[child_id]["parent"] == {"run_id": run_id, "node_id": "S"}
    assert engine.child_runs(run_id)[0]["run_id"] == child_id
    # The wait held no worker: the node's attempt shows the whole wait and its log.
    attempts = engine.node_attempts(run_id, "S")
    assert [a["status"] for a in attempts] == ["succeeded"]
    assert "sub-flow run" in attempts[0]["log"] and child_id in attempts[0]["log"]
    from nexusflow_worker.chaos import check_invariants, wait_rq_idle

    wait_rq_idle(engine.redis, settings)
    rep = check_invariants(engine.pool, engine.redis, settings, [run_id, child_id],
                           store=engine.store)
    assert rep.ok, str(rep)


def test_subflow_by_workflow_id_pins_the_version(engine, workers) -> None:
    workers.start(1)
    saved = engine.save_workflow(child_doc(), name="child")
    engine.save_workflow(flow(node("x", expression="'v2'"), name="child"),
                         workflow_id=saved["workflow_id"])
    pinned = {"workflow_id": saved["workflow_id"], "version": 1}
    latest = {"workflow_id": saved["workflow_id"]}
    run_id = engine.start_run(flow(subflow("S1", pinned, n=4), subflow("S2", latest),
                                   name="by-id"))
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["S1"]["output"] == {"label": "n=4", "total": 9}
    assert run["nodes"]["S2"]["output"] == {"x": "v2"}


def test_missing_and_recursive_subflows_are_refused_at_start(engine, tmp_path) -> None:
    before = runs_count(engine)
    parent = write(tmp_path / "p.nxflow", flow(node("A", expression="1"),
                                                subflow("S", "nope.nxflow"),
                                                edges=[("A", "S")], name="p"))
    with pytest.raises(NodeConfigError) as err:
        engine.start_run(parent, base_dir=str(tmp_path))
    assert err.value.pointer.endswith("/config/flow")
    assert "node 'S'" in str(err.value) and "nope.nxflow does not exist" in str(err.value)
    # Directly: a flow that calls itself.
    selfish = write(tmp_path / "self.nxflow", flow(subflow("me", "self.nxflow"), name="self"))
    with pytest.raises(NodeConfigError, match=r"self.nxflow at /nodes/0/config/flow: node 'me' "
                                              r"\(subflow\): self.nxflow calls itself "
                                              r"\(self.nxflow -> self.nxflow\)"):
        engine.start_run(selfish, base_dir=str(tmp_path))
    # Through another flow.
    write(tmp_path / "a.nxflow", flow(subflow("call_b", "b.nxflow"), name="a"))
    write(tmp_path / "b.nxflow", flow(subflow("call_a", "a.nxflow"), name="b"))
    with pytest.raises(NodeConfigError, match=r"node 'call_b' \(subflow\): in b.nxflow: "
                                              r"node 'call_a' \(subflow\): a.nxflow calls "
                                              r"itself \(a.nxflow -> b.nxflow -> a.nxflow\)"):
        engine.start_run(tmp_path / "a.nxflow", base_dir=str(tmp_path))
    # A path may not leave the folder it is relative to.
    outside = write(tmp_path / "in" / "o.nxflow", flow(subflow("S", "../p.nxflow"), name="o"))
    with pytest.raises(NodeConfigError, match="outside"):
        engine.start_run(outside, base_dir=str(tmp_path / "in"))
    # A child that does not compile names its own fault.
    write(tmp_path / "broken.nxflow", flow(node("x", "nosuchtype"), name="broken"))
    calls = write(tmp_path / "calls.nxflow", flow(subflow("S", "broken.nxflow"), name="calls"))
    with pytest.raises(NodeConfigError, match=r"broken.nxflow does not compile.*nosuchtype"):
        engine.start_run(calls, base_dir=str(tmp_path))
    assert runs_count(engine) == before  # nothing half-written


def test_too_deep_subflows_are_refused_at_start_and_at_run_time(engine, workers,
                                                                tmp_path) -> None:
    from nexusflow_kernel import defaults

    depth = defaults.MAX_SUBFLOW_DEPTH
    for level in range(depth + 2):  # l0 calls l1 ... calls l<depth+1>: one level too many
        nxt = [subflow("down", f"l{level + 1}.nxflow")] if level <= depth else [
            node("leaf", expression="1")]
        write(tmp_path / f"l{level}.nxflow", flow(*nxt, name=f"l{level}"))
    with pytest.raises(NodeConfigError, match=f"deeper than {depth}"):
        engine.start_run(tmp_path / "l0.nxflow", base_dir=str(tmp_path))
    engine.start_run(tmp_path / "l1.nxflow", base_dir=str(tmp_path))  # at the limit: fine
    # At run time: a child that would pass the limit fails its node (say the record of an
    # older start was deeper than the limit allows now).
    workers.start(1)
    write(tmp_path / "leaf.nxflow", flow(node("leaf", expression="1"), name="leaf"))
    top = write(tmp_path / "top.nxflow", flow(subflow("S", "leaf.nxflow"), name="top"))
    run_id = engine.start_run(top, base_dir=str(tmp_path))
    with engine.pool.connection() as conn:
        conn.execute("UPDATE executions SET depth=%s WHERE id=%s", (depth, run_id))
        conn.commit()
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "failed"
    assert f"deeper than {depth}" in run["nodes"]["S"]["error"]
    assert engine.child_runs(run_id) == []


def test_a_failed_child_fails_its_node_and_retry_resumes_the_child(engine, workers,
                                                                    tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "child.nxflow", flow(
        node("ok", expression="1"), node("flaky", "sleep", seconds=0, fail_attempts=1),
        node("end", expression="inputs['flaky']['attempt']"),
        edges=[("ok", "flaky"), ("flaky", "end")], name="child"))
    parent = write(tmp_path / "parent.nxflow", flow(subflow("S", "child.nxflow"),
                                                    node("after", "noop"),
                                                    edges=[("S", "after")], name="parent"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "failed"
    child_id = run["nodes"]["S"]["child_run"]
    assert run["nodes"]["S"]["error"].startswith(f"sub-flow run {child_id} failed at node "
                                                 "'flaky': ")
    assert run["nodes"]["after"]["state"] == "skipped"
    assert engine.get_run(child_id)["status"] == "failed"
    # The child alone is not retried (its parent would stay failed): the error names the run
    # to retry, and nothing changes.
    from nexusflow_kernel.errors import RunStateError

    for retry in (lambda: engine.retry_run(child_id),
                  lambda: engine.retry_updated(child_id)):
        with pytest.raises(RunStateError, match=f"sub-flow run of node 'S' of run {run_id}: "
                                                "retry that run instead"):
            retry()
    assert engine.get_run(child_id)["status"] == "failed"
    engine.retry_run(run_id)
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["S"]["child_run"] == child_id  # the same child, resumed in place
    assert run["nodes"]["S"]["output"] == {"end": 2}
    assert [c["run_id"] for c in engine.child_runs(run_id)] == [child_id]
    # The child's succeeded node ran once; its failed node ran again.
    assert [a["status"] for a in engine.node_attempts(child_id, "ok")] == ["succeeded"]
    assert [a["status"] for a in engine.node_attempts(child_id, "flaky")] == [
        "failed", "succeeded"]


def test_a_retry_with_the_fixed_subflow_file_resumes_the_child_with_it(engine, workers,
                                                                        tmp_path) -> None:
    """The debug loop through a sub-flow: the child fails; its file is fixed; the parent's
    retry with the current flow re-pins the sub-flow and resumes the same child run with the
    fixed version (its succeeded node keeps its output), as a retry --update of the child."""
    workers.start(2)
    child_file = write(tmp_path / "lib" / "child.nxflow", flow(
        node("ok", expression="{'n': 3}"), node("bad", expression="inputs['ok']['m'] * 2"),
        edges=[("ok", "bad")], name="child"))
    parent = write(tmp_path / "parent.nxflow", flow(subflow("S", "lib/child.nxflow"),
                                                    node("after", expression="inputs['S']"),
                                                    edges=[("S", "after")], name="parent"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    assert wait_run(engine, run_id, timeout=60)["status"] == "failed"
    child_id = engine.get_run(run_id)["nodes"]["S"]["child_run"]
    first = engine.get_run(child_id)
    assert first["status"] == "failed" and first["version"] == 1
    # A plain retry resumes the child with the version it ran: it fails again the same way.
    engine.retry_run(run_id)
    assert wait_run(engine, run_id, timeout=60)["status"] == "failed"
    assert engine.get_run(child_id)["version"] == 1
    # The fix in the sub-flow's file, then a retry with the current flow.
    write(child_file, flow(
        node("ok", expression="{'n': 3}"), node("bad", expression="inputs['ok']['n'] * 2"),
        edges=[("ok", "bad")], name="child"))
    engine.retry_updated(run_id, subflow_scope={"base_dir": str(tmp_path)})
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["S"]["child_run"] == child_id  # the same child, resumed in place
    assert run["nodes"]["after"]["output"] == {"bad": 6}
    assert [c["run_id"] for c in engine.child_runs(run_id)] == [child_id]
    child = engine.get_run(child_id)
    assert child["status"] == "succeeded" and child["version"] == 2
    assert [a["status"] for a in engine.node_attempts(child_id, "ok")] == ["succeeded"]
    assert [a["status"] for a in engine.node_attempts(child_id, "bad")] == [
        "failed", "failed", "succeeded"]


def test_cancel_of_the_parent_cancels_the_child(engine, workers, tmp_path) -> None:
    workers.start(2)
    write(tmp_path / "slow.nxflow", flow(node("wait", "delay", seconds=30),
                                         node("never", "noop"), edges=[("wait", "never")],
                                         name="slow"))
    parent = write(tmp_path / "parent.nxflow", flow(subflow("S", "slow.nxflow"), name="parent"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = engine.get_run(run_id)
        child_id = run["nodes"]["S"].get("child_run")
        if child_id and engine.get_run(child_id)["nodes"]["wait"]["state"] == "scheduled":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the child never started waiting: {engine.get_run(run_id)}")
    assert run["nodes"]["S"]["state"] == "waiting"
    assert run["nodes"]["S"]["waiting"]["kind"] == "subflow"
    engine.cancel_run(run_id)
    run = wait_run(engine, run_id, timeout=20)
    child = wait_run(engine, child_id, timeout=20)
    assert run["status"] == "canceled" and run["nodes"]["S"]["state"] == "canceled"
    assert child["status"] == "canceled"
    assert {n["state"] for n in child["nodes"].values()} == {"canceled"}


def test_a_subflow_input_outside_the_child_params_enum_fails_the_node_naming_it(
        engine, workers, tmp_path) -> None:
    """A child run is checked as any run: a value outside a param's enum fails the sub-flow
    node (and a map's item) with the param, the allowed values and the node named; no child
    run is created."""
    workers.start(1)
    write(tmp_path / "sized.nxflow", flow(
        node("show", expression="'size=' + params['size']"), name="sized",
        params={"size": {"type": "string", "enum": ["small", "large"], "default": "small"}}))
    parent = write(tmp_path / "parent.nxflow", flow(
        subflow("ok", "sized.nxflow", size="large"),
        subflow("bad", "sized.nxflow", size="{{ 'hu' + 'ge' }}"),
        {"id": "each", "type": "map",
         "config": {"items": "['small', 'tiny']", "flow": "sized.nxflow",
                    "inputs": {"size": "{{ item }}"}}},
        name="parent"))
    run_id = engine.start_run(parent, base_dir=str(tmp_path))
    run = wait_run(engine, run_id, timeout=60)
    assert run["nodes"]["ok"]["state"] == "succeeded", run["nodes"]["ok"]
    assert run["nodes"]["ok"]["output"] == {"show": "size=large"}
    bad = engine.node_attempts(run_id, "bad")[-1]
    assert bad["status"] == "failed"
    assert "node 'bad': the sub-flow's param 'size' must be one of" in bad["error"], bad
    assert '"huge"' in bad["error"] and '"small", "large"' in bad["error"]
    assert run["nodes"]["bad"].get("child_run") is None
    each = engine.node_attempts(run_id, "each")[-1]
    assert each["status"] == "failed" and "item 1" in each["error"], each
    assert '"tiny"' in each["error"] and "param 'size'" in each["error"]

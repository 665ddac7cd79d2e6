"""The debug loop on real workers: a node's recorded context, and resuming a failed run with
the flow's current version (``retry --update``), keeping what succeeded (issue #15)."""

from __future__ import annotations

import psycopg
import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NotFoundError, RunStateError
from nexusflow_kernel.runstate.resume import IncompatibleUpdate


def failing(**top) -> dict:
    """A -> B -> C; B divides by zero unless params['d'] is set; D beside them."""
    return flow(node("A", expression="params['n'] * 2"),
                node("B", expression="inputs['A'] // params['d']"),
                node("C", expression="inputs['B'] + 1"),
                node("D", expression="'side'"),
                edges=[("A", "B"), ("B", "C")], name=top.pop("name", "fixme"),
                params={"n": {"type": "integer", "default": 5},
                        "d": {"type": "integer", "default": 0}}, **top)


def attempts(database_url: str, run_id: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT node_id, count(*) FROM node_logs"
                                 " WHERE execution_id=%s GROUP BY node_id", (run_id,)).fetchall())


def test_node_context_is_what_the_node_saw(engine, workers):
    workers.start(1)
    run_id = engine.start_run(failing())
    run = wait_run(engine, run_id)
    assert run["status"] == "failed" and run["nodes"]["B"]["state"] == "failed"
    ctx = engine.node_context(run_id, "B")
    assert ctx["recorded"] and ctx["inputs"] == {"A": 10}
    assert ctx["params"] == {"n": 5, "d": 0}
    assert ctx["config"] == {"expression": "inputs['A'] // params['d']"}
    assert "ZeroDivisionError" in ctx["error"] or "division" in ctx["error"]
    assert ctx["state"] == "failed" and ctx["version"] == run["version"] and ctx["code"] is None
    # C never ran: no record, and its parent has no output.
    c = engine.node_context(run_id, "C")
    assert not c["recorded"] and c["missing"] == ["B"] and c["state"] == "skipped"
    with pytest.raises(NotFoundError, match="no node 'Z'"):
        engine.node_context(run_id, "Z")


def test_retry_updated_resumes_the_same_run_with_the_fix(engine, workers, database_url):
    workers.start(1)
    run_id = engine.start_run(failing())
    first = wait_run(engine, run_id)
    assert first["status"] == "failed"
    fixed = failing()
    fixed["nodes"][1]["config"]["expression"] = "inputs['A'] // max(params['d'], 1)"
    done = engine.retry_updated(run_id, fixed)
    assert done["run_id"] == run_id and done["previous_version"] == first["version"]
    assert done["version"] == first["version"] + 1
    assert done["rerun"] == ["B", "C"] and done["added"] == [] and done["stale"] == []
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["C"]["output"] == 11
    # A and D ran once, in the first version; B and C ran with the new one.
    assert attempts(database_url, run_id) == {"A": 1, "B": 2, "C": 1, "D": 1}
    versions = {k: v["version"] for k, v in run["nodes"].items()}
    assert versions == {"A": first["version"], "D": first["version"],
                        "B": done["version"], "C": done["version"]}
    assert run["version"] == done["version"]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT seq, from_version, to_version, rerun FROM run_updates"
                            " WHERE execution_id=%s", (run_id,)).fetchall()
    assert rows == [(1, first["version"], done["version"], ["B", "C"])]


def test_retry_updated_refuses_what_does_not_fit(engine, workers):
    workers.start(1)
    run_id = engine.start_run(failing())
    before = wait_run(engine, run_id)
    stored = engine.list_versions(before["workflow_id"])
    removed = failing()
    removed["nodes"] = [n for n in removed["nodes"] if n["id"] != "D"]
    with pytest.raises(IncompatibleUpdate, match="node 'D' succeeded") as info:
        engine.retry_updated(run_id, removed)
    assert info.value.node == "D" and isinstance(info.value, RunStateError)
    rewired = failing()
    rewired["edges"].append({"id": "D-A", "source": "D", "target": "A"})
    with pytest.raises(IncompatibleUpdate, match="node 'A' succeeded .* from no parents; "
                                                 "version .* wires it to D"):
        engine.retry_updated(run_id, rewired)
    # Nothing changed: same status, version, nodes; no version was stored for the refusals.
    after = engine.get_run(run_id)
    assert after["status"] == "failed" and after["version"] == before["version"]
    assert {k: v["state"] for k, v in after["nodes"].items()} == \
        {k: v["state"] for k, v in before["nodes"].items()}
    assert engine.list_versions(before["workflow_id"]) == stored
    with pytest.raises(RunStateError, match="still running"):
        slow = engine.start_run(flow(node("S", "sleep", seconds=5), name="slow"))
        engine.retry_updated(slow, None)


def test_retry_updated_adds_and_drops_nodes(engine, workers, database_url):
    """The new version drops the failed B, adds E and F; rows are renumbered for its order."""
    workers.start(1)
    run_id = engine.start_run(failing())
    wait_run(engine, run_id)
    new = flow(node("A", expression="params['n'] * 2"),
               node("D", expression="'side'"),
               node("E", expression="inputs['A'] + 100"),
               node("F", expression="inputs['E'] * 2"),
               node("C", expression="inputs['F'] + 1"),
               edges=[("A", "E"), ("E", "F"), ("F", "C")], name="fixme",
               params={"n": {"type": "integer", "default": 5},
                       "d": {"type": "integer", "default": 0}})
    done = engine.retry_updated(run_id, new)
    assert done["removed"] == ["B"] and sorted(done["added"]) == ["E", "F"]
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded", run
    assert list(run["nodes"]) == ["A", "D", "E", "F", "C"]  # the new version's order
    assert run["nodes"]["C"]["output"] == 221
    assert attempts(database_url, run_id)["A"] == 1
    with psycopg.connect(database_url) as conn:
        idx = conn.execute("SELECT node_id, idx FROM node_runs WHERE execution_id=%s"
                           " ORDER BY idx", (run_id,)).fetchall()
    assert [i for _n, i in idx] == list(range(5))


def test_retry_updated_from_a_node_and_with_the_latest_version(engine, workers, database_url):
    workers.start(1)
    doc = failing()
    doc["params"]["d"]["default"] = 1
    run_id = engine.start_run(doc)
    first = wait_run(engine, run_id)
    assert first["status"] == "succeeded"
    changed = failing()
    changed["params"]["d"]["default"] = 1
    changed["nodes"][0]["config"]["expression"] = "params['n'] * 3"
    saved = engine.save_workflow(changed, workflow_id=first["workflow_id"])
    # Without a flow: the latest stored version. A changed, but kept: it is reported stale.
    with pytest.raises(RunStateError, match="nothing to retry"):
        engine.retry_updated(run_id)
    done = engine.retry_updated(run_id, from_node="B")
    assert done["version"] == saved["version"] and done["rerun"] == ["B", "C"]
    assert done["stale"] == ["A"]
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded" and run["nodes"]["C"]["output"] == 11
    done = engine.retry_updated(run_id, from_node="A")
    assert done["rerun"] == ["A", "B", "C"] and done["stale"] == []
    run = wait_run(engine, run_id)
    assert run["nodes"]["C"]["output"] == 16
    assert attempts(database_url, run_id) == {"A": 2, "B": 3, "C": 3, "D": 1}
    with pytest.raises(NotFoundError, match="no node 'Q' to retry from"):
        engine.retry_updated(run_id, from_node="Q")

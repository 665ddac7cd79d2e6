"""Recording an attempt: what a worker that lost its lease, or follows a run, may write."""

from __future__ import annotations

import psycopg
from nexusflow_worker.jobs import Runtime
from nftest import flow, node

from nexusflow_kernel.runstate.transitions import Follow, KnownOutputs, Outcome


def _rows(database_url: str, run_id: str) -> dict[str, dict]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        return {r["node_id"]: r for r in conn.execute(
            "SELECT node_id, state, n_done, n_success, lease_token FROM node_runs"
            " WHERE execution_id=%s", (run_id,))}


def test_a_success_after_the_lease_was_lost_writes_nothing(settings, engine) -> None:
    doc = flow(node("A", expression="1"), node("B", expression="inputs['A'] + 1"),
               edges=[("A", "B")])
    run_id = engine.start_run(doc)  # no workers: A stays queued until claimed here
    rt = Runtime(settings)
    claim = rt.store.claim(run_id, 0, 1, "mine", "test-worker", 30.0)
    assert claim is not None and claim.node_id == "A"
    with psycopg.connect(settings.database_url) as conn:  # another worker owns A now
        conn.execute("UPDATE node_runs SET lease_token='theirs' WHERE execution_id=%s"
                     " AND node_id='A'", (run_id,))
    follow = Follow("next", "test-worker", 30.0)
    assert rt.store.finish(claim, Outcome("succeeded", output=1, output_json="1"),
                           follow=follow) is None
    rows = _rows(settings.database_url, run_id)
    assert rows["A"]["state"] == "running" and rows["A"]["lease_token"] == "theirs"
    assert (rows["B"]["state"], rows["B"]["n_done"], rows["B"]["n_success"]) == ("pending", 0, 0)
    assert engine.node_attempts(run_id, "A") == []


def test_a_followed_child_gets_its_parents_outputs_as_its_own_copy(settings, engine) -> None:
    doc = flow(node("A", expression="{'k': [1]}"), node("B", expression="1"),
               node("C", expression="2"), edges=[("A", "B"), ("A", "C")])
    run_id = engine.start_run(doc)
    rt = Runtime(settings)
    known = KnownOutputs()
    claim = rt.store.claim(run_id, 0, 1, "t0", "test-worker", 30.0)
    effects, b = rt.store.finish(claim, Outcome("succeeded", output={"k": [1]},
                                                output_json='{"k":[1]}'),
                                 follow=Follow("t1", "test-worker", 30.0), known=known)
    assert b is not None and b.inputs == {"A": {"k": [1]}}
    b.inputs["A"]["k"].append("changed by B")  # a node may change what it was given
    effects, c = rt.store.finish(b, Outcome("succeeded", output=1, output_json="1"),
                                 follow=Follow("t2", "test-worker", 30.0), known=known)
    assert c is not None and c.node_id == "C" and c.inputs == {"A": {"k": [1]}}
    assert known.values == {"A": '{"k":[1]}', "B": "1"}


def test_the_sql_ready_rule_agrees_with_decide_counts(database_url) -> None:
    """The finishing statement queues a child in SQL; it must decide as ``decide_counts``."""
    import itertools

    from nexusflow_kernel.model.document import TRIGGER_RULES
    from nexusflow_kernel.runstate.plan import RUN, WAIT, decide_counts
    from nexusflow_kernel.runstate.transitions import NodeTransitions

    cases = []
    for rule in TRIGGER_RULES:  # every rule a flow may use
        for total in range(1, 5):
            for done, succ, failed in itertools.product(range(total), repeat=3):
                if succ + failed > done or decide_counts(rule, total, done, succ, failed) != WAIT:
                    continue  # not a pending child
                for outcome, cnt in itertools.product(("success", "failed", "skipped"),
                                                      range(1, total - done + 1)):
                    new = (done + cnt, succ + cnt * (outcome == "success"),
                           failed + cnt * (outcome == "failed"))
                    cases.append((rule, total, done, succ, failed, outcome, cnt,
                                  decide_counts(rule, total, *new) == RUN))
    sql = NodeTransitions._READY.replace("%(o)s", "c.o")
    with psycopg.connect(database_url) as conn:
        got = [r[0] for r in conn.execute(
            "SELECT " + sql + " FROM unnest(%s::text[], %s::int[], %s::int[], %s::int[],"
            " %s::int[], %s::text[], %s::int[]) WITH ORDINALITY"
            " AS c(rule, n_parents, n_done, n_success, n_failed, o, cnt, k),"
            " LATERAL (SELECT 'pending'::text AS state, c.n_parents, c.n_done, c.n_success,"
            "  c.n_failed) AS n, LATERAL (SELECT c.rule, c.cnt) AS d ORDER BY c.k",
            [list(col) for col in zip(*[c[:7] for c in cases], strict=True)]).fetchall()]
    assert len(cases) > 200
    wrong = [c for c, g in zip(cases, got, strict=True) if g != c[7]]
    assert wrong == []


def _batch_flow() -> dict:
    return flow(node("A", expression="1"),
                *[node(f"B{i}", expression=f"inputs['A'] + {i}") for i in range(3)],
                node("J", expression="1"),
                edges=[("A", f"B{i}") for i in range(3)] + [(f"B{i}", "J") for i in range(3)])


def _claim_batch(settings, engine) -> tuple:
    """Start the batch flow, finish its root here and claim its three children together."""
    run_id = engine.start_run(_batch_flow())  # no workers: every claim is this test's
    rt = Runtime(settings)
    a = rt.store.claim(run_id, 0, 1, "t0", "test-worker", 30.0)
    follow = Follow("batch", "test-worker", 30.0, take=8, workers=1)
    _, first = rt.store.finish(a, Outcome("succeeded", output=1, output_json="1"),
                               follow=follow)
    assert first is not None
    batch = [first, *first.more]
    assert [c.node_id for c in batch] == ["B0", "B1", "B2"]
    return run_id, rt, batch


def test_a_batch_of_successes_is_recorded_in_one_statement_as_each_alone(settings,
                                                                         engine) -> None:
    run_id, rt, batch = _claim_batch(settings, engine)
    outcomes = [Outcome("succeeded", output={"v": i, "s": "é\"'"}, output_json=None if i == 1
                        else f'{{"v":{i},"s":"é\\"\'"}}', log=f"log {i}", duration_ms=1.5 + i,
                        input={"config": {"expression": f"x{i}"}, "inputs": {"A": 1}},
                        branch=None) for i in range(3)]
    effects, nxt = rt.store.finish_batch(batch, outcomes,
                                         follow=Follow("next", "test-worker", 30.0))
    assert nxt is not None and nxt.node_id == "J" and nxt.attempt == 1
    with psycopg.connect(settings.database_url, row_factory=psycopg.rows.dict_row) as conn:
        rows = {r["node_id"]: r for r in conn.execute(
            "SELECT node_id, state, attempt, output, duration_ms, lease_token, lease_until,"
            " ended_at, error FROM node_runs WHERE execution_id=%s", (run_id,))}
        logs = {r["node_id"]: r for r in conn.execute(
            "SELECT node_id, attempt, status, input, output, log, worker, duration_ms,"
            " started_at FROM node_logs WHERE execution_id=%s", (run_id,))}
    for i in range(3):
        row, log = rows[f"B{i}"], logs[f"B{i}"]
        assert (row["state"], row["attempt"], row["lease_token"], row["lease_until"],
                row["error"]) == ("succeeded", 1, None, None, None)
        assert row["output"] == {"v": i, "s": "é\"'"} and row["ended_at"] is not None
        assert row["duration_ms"] == 1.5 + i
        assert (log["attempt"], log["status"], log["output"], log["log"], log["worker"],
                log["duration_ms"]) == (1, "succeeded", {"v": i, "s": "é\"'"}, f"log {i}",
                                        "test-worker", 1.5 + i)
        assert log["input"] == {"config": {"expression": f"x{i}"}, "inputs": {"A": 1}}
        assert log["started_at"] is not None
    assert rows["J"]["state"] == "running"
    assert {e["node"] for e in effects.events if e.get("state") == "succeeded"} == \
        {"B0", "B1", "B2"}


def test_a_batch_with_a_lost_lease_records_the_others_alone(settings, engine) -> None:
    run_id, rt, batch = _claim_batch(settings, engine)
    with psycopg.connect(settings.database_url) as conn:  # another worker owns B1 now
        conn.execute("UPDATE node_runs SET lease_token='theirs' WHERE execution_id=%s"
                     " AND node_id='B1'", (run_id,))
    outcomes = [Outcome("succeeded", output=i, output_json=str(i)) for i in range(3)]
    effects, nxt = rt.store.finish_batch(batch, outcomes,
                                         follow=Follow("next", "test-worker", 30.0))
    assert nxt is None
    rows = _rows(settings.database_url, run_id)
    assert rows["B1"]["state"] == "running" and rows["B1"]["lease_token"] == "theirs"
    assert rows["B0"]["state"] == rows["B2"]["state"] == "succeeded"
    assert (rows["J"]["state"], rows["J"]["n_done"], rows["J"]["n_success"]) == \
        ("pending", 2, 2)
    assert engine.node_attempts(run_id, "B1") == []
    assert [a["status"] for a in engine.node_attempts(run_id, "B0")] == ["succeeded"]

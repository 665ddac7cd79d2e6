"""The engine end to end: real PostgreSQL, real Redis, real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from nftest import diamond, flow, node, settings_env, wait_run

from nexusflow_kernel.errors import BackendUnavailable, CycleError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_diamond_runs_b_and_c_in_parallel(engine, workers) -> None:
    workers.start(2)
    doc = diamond(b=node("B", "sleep", seconds=1), c=node("C", "sleep", seconds=1),
                  d=node("D", expression="[inputs['B']['slept_s'], inputs['C']['slept_s']]"))
    run = wait_run(engine, engine.start_run(doc, inputs={"n": 21}))
    assert run["status"] == "succeeded", run
    n = run["nodes"]
    assert n["A"]["output"] == 42
    # B and C overlap: each started before the other ended.
    assert ts(n["B"]["started_at"]) < ts(n["C"]["ended_at"])
    assert ts(n["C"]["started_at"]) < ts(n["B"]["ended_at"])
    assert ts(n["D"]["started_at"]) >= max(ts(n["B"]["ended_at"]), ts(n["C"]["ended_at"]))
    assert ts(run["ended_at"]) - ts(n["B"]["started_at"]) < 1.9


def test_condition_skips_the_untaken_branch(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node("A", expression="params['x']"),
        node("C", "condition", expression="inputs['A'] > 10"),
        node("yes", expression="'big'"),
        node("no", expression="'small'"),
        node("after_yes", "noop"),
        node("join", expression="inputs", trigger_rule="none_failed"),
        node("strict", "noop"),
        edges=[
            ("A", "C"),
            ("C", "yes", "true"),
            ("C", "no", "false"),
            ("yes", "after_yes"),
            ("after_yes", "join"),
            ("no", "join"),
            ("after_yes", "strict"),
            ("no", "strict"),
        ],
    )
    run = wait_run(engine, engine.start_run(doc, inputs={"x": 3}))
    states = {k: v["state"] for k, v in run["nodes"].items()}
    assert states == {
        "A": "succeeded",
        "C": "succeeded",
        "yes": "skipped",
        "no": "succeeded",
        "after_yes": "skipped",
        "join": "succeeded",
        "strict": "skipped",
    }
    assert run["nodes"]["join"]["output"] == {"no": "small"}
    assert run["status"] == "succeeded"


def test_trigger_rules_after_a_failure(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node("ok", "noop", value=1),
        node("bad", expression="1 / 0"),
        node("all_success", "noop"),
        node("all_done", "noop", trigger_rule="all_done"),
        node("one_success", "noop", trigger_rule="one_success"),
        node("none_failed", "noop", trigger_rule="none_failed"),
        edges=[
            (p, c)
            for p in ("ok", "bad")
            for c in ("all_success", "all_done", "one_success", "none_failed")
        ],
    )
    run = wait_run(engine, engine.start_run(doc))
    states = {k: v["state"] for k, v in run["nodes"].items()}
    assert states == {
        "ok": "succeeded",
        "bad": "failed",
        "all_success": "skipped",
        "all_done": "succeeded",
        "one_success": "succeeded",
        "none_failed": "skipped",
    }
    assert run["status"] == "failed"
    assert "division by zero" in run["nodes"]["bad"]["error"].lower()


def test_retry_with_backoff_timing(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node(
            "flaky",
            "sleep",
            seconds=0,
            fail_attempts=2,
            retry={"max_attempts": 3, "backoff_s": 1, "factor": 2},
        )
    )
    run_id = engine.start_run(doc)
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded"
    attempts = engine.node_attempts(run_id, "flaky")
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    gaps = [ts(attempts[i + 1]["started_at"]) - ts(attempts[i]["ended_at"]) for i in range(2)]
    # Released to the millisecond by the supervisor's timer: never early, barely late (the
    # gap also holds the commit and the claim).
    assert 1.0 <= gaps[0] < 1.6, gaps
    assert 2.0 <= gaps[1] < 2.6, gaps
    assert "on purpose" in attempts[0]["error"]


def test_retries_stop_at_max_attempts(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node(
            "poison",
            "sleep",
            seconds=0,
            fail_attempts=99,
            retry={"max_attempts": 2, "backoff_s": 0},
        ),
        node("after", "noop"),
        edges=[("poison", "after")],
    )
    run_id = engine.start_run(doc)
    run = wait_run(engine, run_id)
    assert run["status"] == "failed"
    assert run["nodes"]["poison"]["attempts"] == 2
    assert run["nodes"]["after"]["state"] == "skipped"
    assert len(engine.node_attempts(run_id, "poison")) == 2


def test_timeout_stops_the_node(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("slow", "sleep", seconds=30, timeout_s=1))
    start = time.monotonic()
    run_id = engine.start_run(doc)
    run = wait_run(engine, run_id, timeout=20)
    assert time.monotonic() - start < 6
    assert run["status"] == "failed"
    assert "timed out after 1 s" in run["nodes"]["slow"]["error"]
    [attempt] = engine.node_attempts(run_id, "slow")
    assert 900 <= attempt["duration_ms"] < 2500


def test_http_node_gets_idempotency_key(engine, workers) -> None:
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"key": self.headers.get("Idempotency-Key"), "body": body})
            payload = json.dumps({"got": body}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        workers.start(1)
        url = f"http://127.0.0.1:{server.server_port}/items"
        doc = flow(
            node("A", expression="{'n': params['n']}"),
            node("post", "http", method="POST", url=url, json="{{ inputs['A'] }}"),
            node("status", expression="inputs['post']['json']['got']['n']"),
            edges=[("A", "post"), ("post", "status")],
        )
        run_id = engine.start_run(doc, inputs={"n": 7})
        run = wait_run(engine, run_id)
        assert run["status"] == "succeeded", run
        assert run["nodes"]["status"]["output"] == 7
        assert seen == [{"key": f"{run_id}:post", "body": {"n": 7}}]
    finally:
        server.shutdown()


def test_db_query_node(settings, database_url, workers) -> None:
    from dataclasses import replace

    from nexusflow_kernel.engine import Engine

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id int, name text)")
        conn.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    settings = replace(settings, connections={"main": database_url},  # a superuser: trusted
                       trusted_connections=frozenset({"main"}))
    workers.settings = settings
    workers.start(1)
    engine = Engine(settings)
    doc = flow(
        node(
            "q",
            "db_query",
            connection="main",
            sql="SELECT id, name FROM items WHERE id > %s ORDER BY id",
            params=[0],
        )
    )
    run = wait_run(engine, engine.start_run(doc))
    assert run["status"] == "succeeded", run
    assert run["nodes"]["q"]["output"]["rows"] == [
        {"id": 1, "name": "one"},
        {"id": 2, "name": "two"},
    ]


def test_delay_node_goes_through_the_scheduler(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("wait", "delay", seconds=4), node("blocked", "sleep", seconds=0.2))
    run = wait_run(engine, engine.start_run(doc))
    assert run["status"] == "succeeded"
    wait, blocked = run["nodes"]["wait"], run["nodes"]["blocked"]
    assert 4.0 <= wait["output"]["waited_s"] < 4.5  # released on time, not on a 1 s tick
    # The delay held no worker: the other root ran on the only worker at once, while it
    # waited (the deferring job went on with the run's next queued node).
    assert ts(blocked["started_at"]) - ts(wait["started_at"]) < 1.0
    assert ts(blocked["ended_at"]) < ts(wait["ended_at"]) - 3


def test_expression_error_fails_once_without_retry(engine, workers) -> None:
    workers.start(1)
    doc = flow(node("A", expression="inputs['nope']", retry={"max_attempts": 3}))
    run = wait_run(engine, engine.start_run(doc))
    assert run["nodes"]["A"]["attempts"] == 1
    assert "inputs has no key 'nope'" in run["nodes"]["A"]["error"]


def test_every_attempt_is_logged_with_input(engine, workers) -> None:
    workers.start(1)
    doc = flow(
        node("A", expression="params['n']"),
        node("B", "sleep", seconds=0, message="hello from B"),
        edges=[("A", "B")],
    )
    run_id = engine.start_run(doc, inputs={"n": 5})
    wait_run(engine, run_id)
    [b] = engine.node_attempts(run_id, "B")
    assert b["input"]["inputs"] == {"A": 5}
    assert "hello from B" in b["log"]
    assert b["status"] == "succeeded" and b["output"]["attempt"] == 1
    events = [e for _id, e in engine.read_events(run_id)]
    # B is queued for RQ, or claimed at once by the worker that finished A (a chain).
    assert [e["state"] for e in events if e["node"] == "B"] in (
        ["queued", "running", "succeeded"], ["running", "succeeded"])
    assert events[-1] == {**events[-1], "node": None, "state": "succeeded"}


def test_nothing_is_stored_for_a_flow_that_does_not_compile(engine) -> None:
    doc = flow(node("A", "noop"), node("B", "noop"), edges=[("A", "B"), ("B", "A")])
    before = len(engine.list_runs(limit=1000))
    with pytest.raises(CycleError):
        engine.start_run(doc)
    assert len(engine.list_runs(limit=1000)) == before
    assert engine.redis.keys("rq:job:*") == []
    with pytest.raises(NotFoundError):
        engine.get_run("not-a-run")


def cli(settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_cli_run_json_with_temporary_workers(settings) -> None:
    result = cli(
        settings,
        "run",
        "examples/diamond.nxflow",
        "--workers",
        "2",
        "--json",
        "--input",
        "hold_s=1",
    )
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "succeeded"
    assert set(run["nodes"]) == {"A", "B", "C", "D", "E", "big", "small"}
    b, c = run["nodes"]["B"], run["nodes"]["C"]
    # B and C overlap: each started before the other ended.
    assert ts(b["started_at"]) < ts(c["ended_at"]) and ts(c["started_at"]) < ts(b["ended_at"])
    assert run["nodes"]["big"]["state"] == "succeeded"
    assert run["nodes"]["small"]["state"] == "skipped"
    for info in run["nodes"].values():
        assert {"state", "attempts", "started_at", "ended_at", "output"} <= set(info)
    shown = json.loads(cli(settings, "show", run["run_id"], "--json").stdout)
    assert shown == run
    listed = cli(settings, "runs", "--json")
    assert run["run_id"] in listed.stdout


def test_cli_bad_input_is_one_line(settings, tmp_path) -> None:
    bad = tmp_path / "bad.nxflow"
    bad.write_text(json.dumps(flow(node("A", "nosuch"))))
    result = cli(settings, "run", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "/nodes/0/type" in result.stderr and "unknown type 'nosuch'" in result.stderr
    result = cli(settings, "run", str(tmp_path / "missing.nxflow"))
    assert result.returncode == 2


def test_cli_unreachable_backends_mask_passwords(settings, tmp_path) -> None:
    from dataclasses import replace

    dead = replace(
        settings,
        database_url="postgresql://u:hunter2@127.0.0.1:9/x",
        redis_url="redis://:hunter2@127.0.0.1:9/0",
    )
    result = cli(dead, "run", "examples/diamond.nxflow", timeout=60)
    assert result.returncode == 3
    assert "hunter2" not in result.stderr and "***" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    with pytest.raises(BackendUnavailable):
        from nexusflow_kernel.transport.broker import Broker, check_redis

        check_redis(Broker(dead).redis, dead.redis_url)


def test_cli_detach(settings, workers) -> None:
    workers.start(1)
    result = cli(settings, "run", "examples/diamond.nxflow", "--detach", "--json")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    from nexusflow_kernel.engine import Engine

    assert wait_run(Engine(settings), run_id)["status"] == "succeeded"


def test_start_with_a_dedupe_key_is_idempotent(engine) -> None:
    doc = flow(node("A", "noop"))
    first = engine.start_run(doc, dedupe_key="schedule:s1:2026-11-25T10:00")
    again = engine.start_run(doc, dedupe_key="schedule:s1:2026-11-25T10:00")
    other = engine.start_run(doc, dedupe_key="schedule:s1:2026-11-25T11:00")
    assert first == again != other
    ids = [r["run_id"] for r in engine.list_runs(limit=1000)]
    assert ids.count(first) == 1 and ids.count(other) == 1


def test_param_enum_is_checked_when_a_run_starts(engine, workers) -> None:
    """A run's input outside its param's ``enum`` is refused before anything is stored, naming
    the param; one of the values runs (a stored version is checked too)."""
    from nexusflow_kernel.errors import ParamValueError

    doc = flow(node("A", expression="params['size'] + '!'"),
               params={"size": {"type": "string", "enum": ["small", "large"],
                                "default": "small"}})
    before = len(engine.list_runs(limit=1000))
    with pytest.raises(ParamValueError, match=r"param 'size' must be one of \"small\", "
                                              r"\"large\"; got \"huge\""):
        engine.start_run(doc, inputs={"size": "huge"})
    assert len(engine.list_runs(limit=1000)) == before
    workers.start(1)
    run = wait_run(engine, engine.start_run(doc, inputs={"size": "large"}))
    assert run["status"] == "succeeded" and run["nodes"]["A"]["output"] == "large!", run
    with pytest.raises(ParamValueError, match="param 'size' must be one of"):
        engine.start_run(workflow_id=run["workflow_id"], inputs={"size": "tiny"})
    assert len(engine.list_runs(limit=1000)) == before + 1

"""Retention (issue #14, item 4): ``nexusflow prune --older-than 30d`` deletes runs that ended
long ago, with their node rows, logs and event streams, in batches; recent and unfinished runs
stay; the service does the same once a day (``NexusFlow.retention_days``), one replica a day."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import redis
from nftest import RunningService, flow, node, settings_env, wait_run

from nexusflow_kernel.transport.broker import events_key


def _age(database_url: str, run_ids: list[str], days: int) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE executions SET created_at = created_at - make_interval(days => %s),"
            " started_at = started_at - make_interval(days => %s),"
            " ended_at = ended_at - make_interval(days => %s) WHERE id = ANY(%s::uuid[])",
            (days, days, days, run_ids),
        )


def _count(database_url: str, table: str, run_ids: list[str]) -> int:
    column = "id" if table == "executions" else "execution_id"
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s::uuid[])", (run_ids,)
        ).fetchone()[0]


def _prune(settings, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", "prune", *args, "--json"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _runs(engine, count: int) -> list[str]:
    doc = flow(
        node("A", expression="41"),
        node("B", expression="inputs['A'] + 1"),
        edges=[("A", "B")],
        name="retained",
    )
    ids = [engine.start_run(doc) for _ in range(count)]
    for run_id in ids:
        assert wait_run(engine, run_id)["status"] == "succeeded"
    return ids


def test_prune_deletes_old_runs_in_batches_and_keeps_recent_ones(settings, engine, workers) -> None:
    db = settings.database_url
    workers.start(1)
    old = _runs(engine, 4)
    recent = _runs(engine, 1)
    # an unfinished run that started long ago (an approval nobody gave)
    stuck = engine.start_run(flow(node("W", "approval", message="ok?"), name="stuck"))
    _age(db, [*old, stuck], 40)
    r = redis.Redis.from_url(settings.redis_url)
    assert all(r.exists(events_key(i)) for i in old + recent)
    assert _count(db, "node_logs", old) == 8

    dry = _prune(settings, "--older-than", "30d", "--dry-run")
    assert dry["dry_run"] and dry["runs"] == 4 and dry["node_rows"] == 8
    assert dry["log_rows"] == 8
    assert _count(db, "executions", old) == 4  # nothing deleted

    done = _prune(settings, "--older-than", "30d", "--batch-size", "3")
    assert done["runs"] == 4 and done["node_rows"] == 8 and done["log_rows"] == 8
    assert done["batches"] == 2 and done["runs_per_batch"] == [3, 1]
    for table in ("executions", "node_runs", "node_logs"):
        assert _count(db, table, old) == 0, table
    assert not any(r.exists(events_key(i)) for i in old)
    # the recent run and the unfinished old one are untouched
    kept = engine.get_run(recent[0])
    assert kept["status"] == "succeeded" and set(kept["nodes"]) == {"A", "B"}
    assert r.exists(events_key(recent[0]))
    assert engine.get_run(stuck)["status"] == "running"
    assert engine.node_attempts(recent[0], "B")[0]["status"] == "succeeded"
    # nothing left to prune; a wrong age is refused naming the option's value
    assert _prune(settings, "--older-than", "30d")["runs"] == 0
    bad = subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", "prune", "--older-than", "30 days"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "'30 days' is not an age" in bad.stderr
    engine.cancel_run(stuck)


def test_the_service_prunes_daily_once_across_replicas(settings, engine, workers) -> None:
    db = settings.database_url
    workers.start(1)
    old = _runs(engine, 2)
    recent = _runs(engine, 1)
    _age(db, old, 31)
    extra = {"retention_days": 30, "retention_check_s": 0.2}
    services = [RunningService(settings, extra=extra), RunningService(settings, extra=extra)]
    try:
        end = time.monotonic() + 60
        while _count(db, "executions", old) and time.monotonic() < end:
            time.sleep(0.2)
        assert _count(db, "executions", old) == 0
        assert _count(db, "executions", recent) == 1
        # the pass records its result once its last batch is done, a moment after the rows go
        row = None
        while time.monotonic() < end:
            with psycopg.connect(db) as conn:
                row = conn.execute(
                    "SELECT last_by, result FROM nexusflow_maintenance WHERE task = 'prune'"
                ).fetchone()
            if row is not None and row[1] is not None:
                break
            time.sleep(0.2)
        assert row is not None and row[1] is not None, row
        assert row[1]["runs"] == 2
        assert row[0]  # the replica that ran it; the other found the day's pass done
        more = _runs(engine, 1)
        _age(db, more, 31)
        time.sleep(3)  # both replicas check 5 times a second: not again within the day
        assert _count(db, "executions", more) == 1
    finally:
        for s in services:
            s.stop()

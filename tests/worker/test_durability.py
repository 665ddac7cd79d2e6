"""Fault injection: real worker processes killed, Redis flushed, PostgreSQL cut off.

Every case ends with ``assert_invariants`` (see ``nexusflow_worker.chaos.check_invariants``):
every run finished, at most one success per (run, node), no node started before its parents
finished, attempts within their limits, nothing left in RQ's queue or started registry.
Measured times (recovery, backoff, timeouts, throughput) are printed; run with ``-s`` to see.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from nexusflow_worker.chaos import check_invariants, child_pids, wait_rq_idle
from nftest import flow, node, wait_for, wait_run

from nexusflow_kernel import defaults
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import read_flow
from nexusflow_kernel.runstate.transitions import LOST_RETRIES

SLOW = os.environ.get("NEXUSFLOW_SLOW_TESTS") == "1"


# ---------------------------------------------------------------------------- helpers


def assert_invariants(engine, settings, run_ids: list[str], *, openings: int = 1):
    wait_rq_idle(engine.redis, settings, timeout=15)
    rep = check_invariants(
        engine.pool, engine.redis, settings, run_ids, openings=openings, store=engine.store
    )
    print(rep)
    assert rep.ok, str(rep)
    return rep




def node_row(engine, run_id: str, node_id: str) -> dict[str, Any]:
    with engine.pool.connection() as conn:
        return conn.execute(
            "SELECT state, attempt, tries, worker, started_at, ended_at, error FROM node_runs"
            " WHERE execution_id=%s AND node_id=%s",
            (run_id, node_id),
        ).fetchone()


def attempts(engine, run_id: str, node_id: str) -> list[dict[str, Any]]:
    with engine.pool.connection() as conn:
        return conn.execute(
            "SELECT attempt, status, error, worker, duration_ms, started_at, ended_at"
            " FROM node_logs WHERE execution_id=%s AND node_id=%s ORDER BY attempt",
            (run_id, node_id),
        ).fetchall()


def wait_running(engine, run_id: str, node_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (r := node_row(engine, run_id, node_id))["state"] == "running" and r,
        timeout,
        f"{node_id} running",
    )


def worker_pid(row: dict[str, Any]) -> int:
    return int(row["worker"].rsplit(":", 1)[1])


def kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def next_attempt_started(engine, run_id: str, node_id: str, after: int) -> float:
    """Return the UNIX time attempt ``after + 1`` (or later) of a node started."""

    def started() -> float | None:
        with engine.pool.connection() as conn:
            row = conn.execute(
                "SELECT min(s) AS s FROM (SELECT started_at AS s FROM node_runs"
                " WHERE execution_id=%(r)s AND node_id=%(n)s AND attempt > %(a)s"
                " AND started_at IS NOT NULL AND state NOT IN ('pending', 'queued', 'scheduled')"
                " UNION ALL SELECT started_at FROM node_logs"
                " WHERE execution_id=%(r)s AND node_id=%(n)s AND attempt > %(a)s) t",
                {"r": run_id, "n": node_id, "a": after},
            ).fetchone()
        return row["s"].timestamp() if row["s"] else None

    return wait_for(started, 40, f"attempt {after + 1} of {node_id} to start")


# ---------------------------------------------------------------------------- killed workers


def test_worker_sigkill_mid_node_reruns_within_15s(engine, settings, workers) -> None:
    sup = workers.start(2)
    run_id = engine.start_run(
        flow(node("A", "sleep", seconds=4), node("B", "noop"), edges=[("A", "B")], name="sigkill")
    )
    held = wait_running(engine, run_id, "A")
    time.sleep(0.5)
    killed_at = time.time()
    kill_group(sup)  # the supervisor, its reconciler and every worker process
    workers.start(2)
    started = next_attempt_started(engine, run_id, "A", held["attempt"])
    recovery = started - killed_at
    print(
        f"\nSIGKILL of every worker: node re-ran {recovery:.2f} s after the kill "
        f"(lease {settings.lease_s:g} s, reconcile every {settings.reconcile_interval_s:g} s)"
    )
    assert recovery < 15
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    log = attempts(engine, run_id, "A")
    assert [a["status"] for a in log] == ["lost", "succeeded"]
    assert "lease expired" in log[0]["error"]
    assert_invariants(engine, settings, [run_id])


def test_child_worker_killed_alone(engine, settings, workers) -> None:
    sup = workers.start(2)
    run_id = engine.start_run(
        flow(
            node("A", "sleep", seconds=4), node("B", "noop"), edges=[("A", "B")], name="child-kill"
        )
    )
    held = wait_running(engine, run_id, "A")
    pid = worker_pid(held)
    before = child_pids(sup.pid)
    assert pid in before, (pid, before)
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    # The supervisor notices and starts a replacement process.
    wait_for(
        lambda: len(kids := child_pids(sup.pid)) == 2 and pid not in kids,
        10,
        "the supervisor to replace the killed worker",
    )
    started = next_attempt_started(engine, run_id, "A", held["attempt"])
    print(f"\nworker process killed alone: node re-ran {started - killed_at:.2f} s after")
    assert started - killed_at < 15
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert sup.poll() is None
    assert [a["status"] for a in attempts(engine, run_id, "A")] == ["lost", "succeeded"]
    assert_invariants(engine, settings, [run_id])


def test_sigterm_lets_the_node_in_hand_finish(engine, settings, workers) -> None:
    sup = workers.start(1)
    run_id = engine.start_run(
        flow(node("A", "sleep", seconds=3), node("B", "noop"), edges=[("A", "B")], name="sigterm")
    )
    wait_running(engine, run_id, "A")
    time.sleep(0.3)
    sup.send_signal(signal.SIGTERM)  # the supervisor only; it asks its children to stop
    assert sup.wait(timeout=20) == 0
    a = node_row(engine, run_id, "A")
    assert a["state"] == "succeeded" and a["attempt"] == 1, a
    assert [x["status"] for x in attempts(engine, run_id, "A")] == ["succeeded"]
    assert node_row(engine, run_id, "B")["state"] == "queued"  # pushed, for the next worker
    workers.start(1)
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert_invariants(engine, settings, [run_id])


# ---------------------------------------------------------------------------- Redis, PostgreSQL


def test_redis_flushed_mid_run_completes(engine, settings, workers) -> None:
    workers.start(1)
    doc = flow(
        node("root", "sleep", seconds=0.5),
        *[node(f"w{i}", "sleep", seconds=0.4) for i in range(8)],
        node("join", "noop"),
        edges=[("root", f"w{i}") for i in range(8)] + [(f"w{i}", "join") for i in range(8)],
        name="flush",
    )
    run_id = engine.start_run(doc)
    wait_for(
        lambda: node_row(engine, run_id, "w0")["state"] in ("queued", "running"),
        20,
        "the fan-out to be queued",
    )
    time.sleep(0.5)
    with engine.pool.connection() as conn:
        queued = conn.execute(
            "SELECT count(*) AS n FROM node_runs WHERE execution_id=%s AND state='queued'",
            (run_id,),
        ).fetchone()["n"]
    flushed_at = time.time()
    engine.redis.flushdb()  # Redis restarted empty: every queued job is gone
    run = wait_run(engine, run_id, timeout=40)
    print(
        f"\nRedis FLUSHDB with {queued} queued node(s): run finished "
        f"{time.time() - flushed_at:.2f} s later"
    )
    assert queued > 0
    assert run["status"] == "succeeded", run
    assert_invariants(engine, settings, [run_id])


@pytest.fixture
def db_blocker(backend_urls, settings) -> Iterator[Callable[[float], None]]:
    """Cut the test database off for some seconds: no new connections, existing ones ended."""
    admin = backend_urls[0]
    name = urlsplit(settings.database_url).path.lstrip("/")

    def allow(ok: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(ok).lower()}')
            if not ok:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname=%s AND pid <> pg_backend_pid()",
                    (name,),
                )

    def block(seconds: float) -> None:
        allow(False)
        try:
            time.sleep(seconds)
        finally:
            allow(True)

    try:
        yield block
    finally:
        allow(True)


def test_postgres_down_10s_loses_nothing(engine, settings, workers, db_blocker) -> None:
    # The production lease outlasts a 10 s outage, so a worker keeps its node; with a lease
    # shorter than the outage it would have to stop the node (see the lease test).
    workers.settings = replace(settings, lease_s=defaults.LEASE_S)
    workers.start(2)
    doc = flow(
        node("A", "noop"),
        node("long", "sleep", seconds=14),  # runs across the whole outage
        node("short", "sleep", seconds=3),  # finishes during it: its commit waits
        node("D", "noop"),
        edges=[("A", "long"), ("A", "short"), ("long", "D"), ("short", "D")],
        name="pg-down",
    )
    run_id = engine.start_run(doc)
    wait_running(engine, run_id, "long")
    wait_running(engine, run_id, "short")
    down_at = time.monotonic()
    db_blocker(10.0)
    print(f"\nPostgreSQL cut off for {time.monotonic() - down_at:.1f} s")
    run = wait_run(engine, run_id, timeout=60)
    for n in ("long", "short"):
        log = [(a["attempt"], a["status"], a["error"]) for a in attempts(engine, run_id, n)]
        print(f"  {n}: {log}")
    assert run["status"] == "succeeded", run
    for n in ("long", "short"):  # neither result thrown away, no extra attempt
        assert [a["status"] for a in attempts(engine, run_id, n)] == ["succeeded"]
    assert_invariants(engine, settings, [run_id])


# ---------------------------------------------------------------------------- deliveries, retries


def test_same_job_delivered_twice_runs_once(engine, settings, workers) -> None:
    run_id = engine.start_run(
        flow(node("A", "sleep", seconds=2), node("B", "noop"), edges=[("A", "B")], name="dup")
    )
    queue = engine.broker.queue_for("default")
    [jid] = queue.job_ids  # whatever job the engine pushed for the root
    queue.push_job_id(jid)  # the same RQ job, delivered a second time
    assert queue.job_ids == [jid, jid]
    workers.start(2)
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "succeeded", run
    assert queue.count == 0
    assert [a["status"] for a in attempts(engine, run_id, "A")] == ["succeeded"]
    assert_invariants(engine, settings, [run_id])


def test_poison_node_stops_at_max_attempts_with_backoff(engine, settings, workers) -> None:
    workers.start(2)
    retry = {"max_attempts": 3, "backoff_s": 1, "factor": 2}
    run_id = engine.start_run(
        flow(
            node("P", "sleep", seconds=0, fail_attempts=99, retry=retry),
            node("after", "noop"),
            edges=[("P", "after")],
            name="poison",
        )
    )
    run = wait_run(engine, run_id, timeout=40)
    assert run["status"] == "failed", run
    log = attempts(engine, run_id, "P")
    assert [a["status"] for a in log] == ["failed"] * 3
    gaps = [(log[i + 1]["started_at"] - log[i]["ended_at"]).total_seconds() for i in range(2)]
    print(
        f"\npoison node: 3 attempts, waits {[round(g, 2) for g in gaps]} s "
        "(configured 1 s, 2 s; RQ's scheduler works in whole seconds)"
    )
    for gap, want in zip(gaps, (1.0, 2.0), strict=True):
        assert want - 0.3 <= gap <= want + 2.5
    assert node_row(engine, run_id, "after")["state"] == "skipped"
    time.sleep(1.5)
    assert len(attempts(engine, run_id, "P")) == 3  # no loop
    assert_invariants(engine, settings, [run_id])


def test_timeout_stops_and_retries_per_policy(engine, settings, workers) -> None:
    workers.start(2)
    retry = {"max_attempts": 2, "backoff_s": 1}
    run_id = engine.start_run(
        flow(node("T", "sleep", seconds=30, timeout_s=2, retry=retry), name="timeout")
    )
    run = wait_run(engine, run_id, timeout=30)
    assert run["status"] == "failed", run
    log = attempts(engine, run_id, "T")
    assert [a["status"] for a in log] == ["failed", "failed"]
    durations = [a["duration_ms"] / 1000 for a in log]
    gap = (log[1]["started_at"] - log[0]["ended_at"]).total_seconds()
    print(
        f"\ntimeout_s=2: attempts stopped after {[round(d, 2) for d in durations]} s, "
        f"retried after {gap:.2f} s (backoff 1 s)"
    )
    for d in durations:
        assert 1.9 <= d <= 3.0
    assert 0.7 <= gap <= 4.0  # RQ's scheduler: whole seconds, polled every second
    assert all("timed out after 2 s" in a["error"] for a in log)
    assert_invariants(engine, settings, [run_id])


def test_cancel_mid_run_stops_the_node_within_a_heartbeat(engine, settings, workers) -> None:
    workers.start(2)
    run_id = engine.start_run(
        flow(
            node("A", "sleep", seconds=20),
            node("B", "noop"),
            node("C", "noop"),
            edges=[("A", "B"), ("B", "C")],
            name="cancel",
        )
    )
    wait_running(engine, run_id, "A")
    time.sleep(0.5)
    asked = time.time()
    engine.cancel_run(run_id)
    a = wait_for(
        lambda: (r := node_row(engine, run_id, "A"))["state"] != "running" and r, 10, "A to stop"
    )
    stopped = a["ended_at"].timestamp() - asked
    print(
        f"\ncancel: running node stopped {stopped:.2f} s after the request "
        f"(heartbeat {settings.heartbeat_s:g} s)"
    )
    assert a["state"] == "canceled"
    assert stopped <= settings.heartbeat_s + 1.0
    run = wait_run(engine, run_id, timeout=10)
    assert run["status"] == "canceled"
    time.sleep(1.5)
    for n in ("B", "C"):
        assert node_row(engine, run_id, n)["state"] == "canceled"
        assert attempts(engine, run_id, n) == []
    assert_invariants(engine, settings, [run_id])


# ---------------------------------------------------------------------------- side effects


class _EffectServer:
    """A local HTTP server that records Idempotency-Key headers; it can hold the first
    request until told to answer (so the test can kill the worker in between)."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []
        self.seen = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.keys.append(self.headers.get("Idempotency-Key"))
                first = len(outer.keys) == 1
                outer.seen.set()
                if first:
                    outer.release.wait(30)
                body = b'{"charged": true}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the worker that asked is dead

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/charge"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _EffectServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_crash_between_side_effect_and_commit_reuses_idempotency_key(
    engine, settings, workers
) -> None:
    with _EffectServer() as server:
        sup = workers.start(1)
        run_id = engine.start_run(
            flow(
                node("charge", "http", method="POST", url=server.url, json={"amount": 5}),
                node("after", "noop"),
                edges=[("charge", "after")],
                name="effect",
            )
        )
        assert server.seen.wait(20), "the worker never called the server"
        held = node_row(engine, run_id, "charge")
        assert held["state"] == "running"
        killed_at = time.time()
        kill_group(sup)  # the request reached the server; the worker dies before its commit
        server.release.set()
        workers.start(1)
        run = wait_run(engine, run_id, timeout=40)
        print(
            f"\ncrash after the side effect: retried {time.time() - killed_at:.2f} s later"
            f" with keys {server.keys}"
        )
    assert run["status"] == "succeeded", run
    assert len(server.keys) == 2
    assert server.keys[0] == server.keys[1] == f"{run_id}:charge"
    assert [a["status"] for a in attempts(engine, run_id, "charge")] == ["lost", "succeeded"]
    assert_invariants(engine, settings, [run_id])


# ---------------------------------------------------------------------------- load and size


def _layered(width: int, depth: int, name: str) -> dict:
    nodes = [node("root", "noop", value=1)]
    edges: list[tuple] = []
    prev = ["root"]
    for d in range(depth):
        layer = [f"l{d}_{i}" for i in range(width)]
        nodes += [node(n, "noop") for n in layer]
        edges += [
            (p, n)
            for n in layer
            for p in prev
            if prev == ["root"] or p.endswith(f"_{n.rsplit('_', 1)[1]}")
        ]
        prev = layer
    nodes.append(node("join", "noop"))
    edges += [(p, "join") for p in prev]
    return flow(*nodes, edges=edges, name=name)


def test_100_concurrent_runs_of_20_nodes(engine, settings, workers) -> None:
    doc = _layered(6, 3, "load-20")  # root + 3 layers of 6 + join = 20 nodes
    assert len(doc["nodes"]) == 20
    t0 = time.monotonic()
    run_ids = [engine.start_run(doc, inputs={"i": i}) for i in range(100)]
    started = time.monotonic() - t0
    workers.start(2)
    end = time.monotonic() + 150
    while time.monotonic() < end:
        with engine.pool.connection() as conn:
            left = conn.execute(
                "SELECT count(*) AS n FROM executions WHERE id = ANY(%s::uuid[])"
                " AND status='running'",
                (run_ids,),
            ).fetchone()["n"]
        if left == 0:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    with engine.pool.connection() as conn:
        lat = conn.execute(
            "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM"
            " (l.started_at - p.ended_at))) AS p95 FROM node_logs l JOIN node_logs p"
            " ON p.execution_id=l.execution_id AND p.node_id='root' AND l.node_id LIKE 'l0_%%'"
            " WHERE l.execution_id = ANY(%s::uuid[])",
            (run_ids,),
        ).fetchone()["p95"]
    print(
        f"\n100 runs x 20 nodes: started in {started:.1f} s, all finished in {elapsed:.1f} s "
        f"({2000 / elapsed:.0f} nodes/s on 2 worker processes); p95 parent-end to child-start"
        f" {lat:.2f} s (queueing behind 2000 nodes included)"
    )
    rep = assert_invariants(engine, settings, run_ids)
    assert rep.statuses == {"succeeded": 100}


def _big(shape: str, n: int) -> dict:
    if shape == "chain":
        return flow(
            *[node(f"n{i}", "noop") for i in range(n)],
            edges=[(f"n{i}", f"n{i + 1}") for i in range(n - 1)],
            name=f"chain-{n}",
        )
    if shape == "wide":
        return flow(
            node("root", "noop"),
            *[node(f"n{i}", "noop") for i in range(n - 2)],
            node("join", "noop"),
            edges=[("root", f"n{i}") for i in range(n - 2)]
            + [(f"n{i}", "join") for i in range(n - 2)],
            name=f"wide-{n}",
        )
    # lattice: w x w grid, each node feeds the node below and the one below-right
    w = int(round(n**0.5))
    nodes = [node(f"g{r}_{c}", "noop") for r in range(w) for c in range(w)]
    edges = [
        (f"g{r}_{c}", f"g{r + 1}_{c2}")
        for r in range(w - 1)
        for c in range(w)
        for c2 in {c, (c + 1) % w}
    ]
    return flow(*nodes, edges=edges, name=f"lattice-{n}")


@pytest.mark.parametrize("shape", ["chain", "wide", "lattice"])
def test_10k_node_flows_compile_and_start(engine, settings, shape: str) -> None:
    doc = _big(shape, 10_000)
    t0 = time.monotonic()
    compiled = compile_flow(read_flow(doc))
    t1 = time.monotonic()
    run_id = engine.start_run(compiled)
    t2 = time.monotonic()
    print(f"\n10k {shape}: compiled in {t1 - t0:.2f} s, stored and started in {t2 - t1:.2f} s")
    assert len(compiled.order) == 10_000
    with engine.pool.connection() as conn:
        counts = {
            r["state"]: r["n"]
            for r in conn.execute(
                "SELECT state, count(*) AS n FROM node_runs WHERE execution_id=%s GROUP BY state",
                (run_id,),
            )
        }
    roots = {"chain": 1, "wide": 1, "lattice": 100}[shape]
    assert counts == {"queued": roots, "pending": 10_000 - roots}
    assert t1 - t0 < 10
    engine.cancel_run(run_id)  # no later test's workers should pick it up


@pytest.mark.parametrize("shape", ["chain", "wide", "lattice"])
def test_large_flows_complete(engine, settings, workers, shape: str) -> None:
    """10,000 nodes with NEXUSFLOW_SLOW_TESTS=1; otherwise 1,200 (a chain past Python's
    default recursion limit) to keep the suite's wall time bounded."""
    n = 10_000 if SLOW else 1_200
    if shape == "lattice" and not SLOW:
        n = 35 * 35
    doc = _big(shape, n)
    run_id = engine.start_run(doc)
    t0 = time.monotonic()
    workers.start(2)
    run = wait_run(engine, run_id, timeout=600 if SLOW else 90)
    elapsed = time.monotonic() - t0
    print(
        f"\n{shape} of {len(doc['nodes'])} noop nodes: {elapsed:.1f} s on 2 worker processes"
        f" ({len(doc['nodes']) / elapsed:.0f} nodes/s)"
    )
    assert run["status"] == "succeeded"
    rep = assert_invariants(engine, settings, [run_id])
    assert rep.attempts == len(doc["nodes"])


def test_lost_retries_allowance_is_bounded() -> None:
    # The invariant helper allows max_attempts + LOST_RETRIES: keep the allowance small.
    assert 0 < LOST_RETRIES <= 3

"""Durability checks and the chaos soak (``nexusflow soak``).

``check_invariants`` reads PostgreSQL (the record) and Redis (the transport) after a set of runs
and reports what the engine promises and whether it held:

- every run is finished (none left ``running``);
- at most one succeeded attempt per (run, node);
- no attempt of a node started before its parents finished, by its trigger rule;
- attempts never exceed ``max_attempts`` (plus ``LOST_RETRIES`` for lost workers);
- nothing is stuck in RQ: the queue is empty and no job is left in its started registry.

``soak`` keeps N runs going on W worker processes while it kills workers (one process or the
whole supervisor) and restarts Redis empty at random, for a bounded time, then prints the
invariants and counts and exits non-zero when one of them failed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from nexusflow_kernel.procs import free_port
from nexusflow_kernel.runstate.transitions import LOST_RETRIES
from nexusflow_kernel.services import resolve_backends

# ---------------------------------------------------------------------------- invariants


@dataclass
class InvariantReport:
    """What ``check_invariants`` found; ``ok`` when every invariant held."""

    runs: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    duplicate_successes: list[tuple[str, str, int]] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    attempt_violations: list[str] = field(default_factory=list)
    rq_stuck: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    lost_attempts: int = 0

    @property
    def ok(self) -> bool:
        return not (self.unfinished or self.duplicate_successes or self.order_violations
                    or self.attempt_violations or any(self.rq_stuck.values()))

    def lines(self) -> list[str]:
        def mark(good: bool) -> str:
            return "ok  " if good else "FAIL"

        return [
            f"{mark(not self.unfinished)} every run finished: {self.runs - len(self.unfinished)}"
            f"/{self.runs} {dict(sorted(self.statuses.items()))}"
            + (f" unfinished: {self.unfinished[:5]}" if self.unfinished else ""),
            f"{mark(not self.duplicate_successes)} at most one success per (run, node):"
            f" {len(self.duplicate_successes)} duplicated"
            + (f" {self.duplicate_successes[:5]}" if self.duplicate_successes else ""),
            f"{mark(not self.order_violations)} no node started before its parents finished:"
            f" {len(self.order_violations)} violations"
            + (f" {self.order_violations[:5]}" if self.order_violations else ""),
            f"{mark(not self.attempt_violations)} attempts within limits"
            f" ({self.attempts} attempts, {self.lost_attempts} lost to killed workers):"
            f" {len(self.attempt_violations)} violations"
            + (f" {self.attempt_violations[:5]}" if self.attempt_violations else ""),
            f"{mark(not any(self.rq_stuck.values()))} nothing stuck in RQ: {self.rq_stuck}",
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def check_invariants(pool: Any, redis_conn: Any, settings: Any, run_ids: list[str], *,
                     openings: int = 1, store: Any = None) -> InvariantReport:
    """Check the durability invariants over ``run_ids``.

    ``openings`` is how many times a run may have been (re)opened by ``retry``: each opening
    may add one success and a fresh set of attempts per node.
    """
    from nexusflow_kernel.runstate.store import RunStore

    store = store or RunStore(pool)
    rep = InvariantReport(runs=len(run_ids))
    statuses: dict[str, int] = defaultdict(int)
    with pool.connection() as conn:
        runs = {str(r["id"]): r for r in conn.execute(
            "SELECT id, status, workflow_id, version FROM executions WHERE id = ANY(%s::uuid[])",
            (run_ids,))}
        logs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for r in conn.execute(
            "SELECT execution_id::text AS run, node_id, attempt, status, started_at, ended_at"
            " FROM node_logs WHERE execution_id = ANY(%s::uuid[])", (run_ids,)):
            logs[r["run"]][r["node_id"]].append(r)
        rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in conn.execute(
            "SELECT execution_id::text AS run, node_id, state, attempt, max_attempts,"
            " started_at, ended_at FROM node_runs WHERE execution_id = ANY(%s::uuid[])",
            (run_ids,)):
            rows[r["run"]][r["node_id"]] = r
        plans = {}
        for run in runs.values():
            key = (str(run["workflow_id"]), run["version"])
            if key not in plans:
                plans[key] = store.plan_for(conn, *key)
    for run_id in run_ids:
        run = runs.get(run_id)
        if run is None:
            rep.unfinished.append(f"{run_id} (missing)")
            continue
        statuses[run["status"]] += 1
        if run["status"] == "running":
            rep.unfinished.append(run_id)
        plan = plans[(str(run["workflow_id"]), run["version"])]
        _check_run(rep, run_id, plan, logs[run_id], rows[run_id], openings)
    rep.statuses = dict(statuses)
    rep.rq_stuck = rq_leftovers(redis_conn, settings)
    return rep


def _check_run(rep: InvariantReport, run_id: str, plan: Any,
               logs: dict[str, list[dict[str, Any]]], rows: dict[str, dict[str, Any]],
               openings: int) -> None:
    first_success: dict[str, Any] = {}
    for node_id, items in logs.items():
        rep.attempts += len(items)
        lost = sum(1 for i in items if i["status"] == "lost")
        rep.lost_attempts += lost
        successes = sum(1 for i in items if i["status"] == "succeeded")
        if successes > openings:
            rep.duplicate_successes.append((run_id, node_id, successes))
        limit = rows[node_id]["max_attempts"]
        if len(items) - lost > limit * openings or len(items) > (limit + LOST_RETRIES) * openings:
            rep.attempt_violations.append(
                f"{run_id}/{node_id}: {len(items)} attempts ({lost} lost), max_attempts {limit}")
        times = [i["ended_at"] for i in items if i["status"] == "succeeded"]
        if times:
            first_success[node_id] = min(times)
    for node_id, items in logs.items():
        parents = plan.parents.get(node_id, ())
        if not parents:
            continue
        rule = plan.nodes[node_id].trigger_rule
        starts = [i["started_at"] for i in items if i["started_at"] is not None]
        for start in starts:
            def done_by(p: str, start: Any = start) -> bool:
                t = first_success.get(p)
                if t is None and rows[p]["state"] in ("failed", "skipped", "canceled"):
                    t = rows[p]["ended_at"]
                return t is not None and t <= start

            def succeeded_by(p: str, start: Any = start) -> bool:
                t = first_success.get(p)
                return t is not None and t <= start

            def failed_by(p: str, start: Any = start) -> bool:
                t = rows[p]["ended_at"] if rows[p]["state"] in ("failed", "canceled") else None
                return t is not None and t <= start

            if rule == "one_success":
                good = any(succeeded_by(p) for p in parents)
            elif rule == "one_failed":  # an error handler: at the first failure
                good = any(failed_by(p) for p in parents)
            elif rule == "all_failed":
                good = all(failed_by(p) for p in parents)
            elif rule in ("all_done", "none_failed"):
                good = all(done_by(p) for p in parents)
            else:
                good = all(succeeded_by(p) for p in parents)
            if not good:
                rep.order_violations.append(f"{run_id}/{node_id} started {start} ({rule})")


def rq_leftovers(redis_conn: Any, settings: Any) -> dict[str, int]:
    """Count what is left in RQ for the engine's queues: queued and started jobs, overdue
    scheduled jobs (more than 10 s past their time, in RQ's registry or Nexus-Flow's)."""
    from rq import Queue
    from rq.registry import ScheduledJobRegistry, StartedJobRegistry
    from rq.serializers import JSONSerializer

    from nexusflow_kernel.transport.broker import DUE_KEY

    out: dict[str, int] = {}
    for name in (settings.queue_name, settings.sandbox_queue_name):
        queue = Queue(name, connection=redis_conn, serializer=JSONSerializer)
        out[f"{name}:queued"] = queue.count
        out[f"{name}:started"] = len(StartedJobRegistry(queue=queue).get_job_ids(cleanup=False))
        overdue = redis_conn.zcount(ScheduledJobRegistry(queue=queue).key, 0, time.time() - 10)
        out[f"{name}:overdue_scheduled"] = int(overdue)
    out["overdue_due"] = int(redis_conn.zcount(DUE_KEY, 0, time.time() - 10))
    return out


def wait_rq_idle(redis_conn: Any, settings: Any, timeout: float = 15.0) -> dict[str, int]:
    """Wait until ``rq_leftovers`` is all zero (workers finish their bookkeeping after the
    run's final commit); return the last count."""
    end = time.monotonic() + timeout
    while True:
        left = rq_leftovers(redis_conn, settings)
        if not any(left.values()) or time.monotonic() > end:
            return left
        time.sleep(0.2)


# ---------------------------------------------------------------------------- processes


def child_pids(pid: int) -> list[int]:
    """Return the pids of the direct children of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            out.append(int(entry.name))
    return sorted(out)


class PrivateRedis:
    """A redis-server on a loopback port with no persistence, restartable empty."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="nf-soak-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise click.ClickException("redis-server is not on PATH (use --redis-mode flush)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "yes",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise click.ClickException(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerGroup:
    """One ``nexusflow worker`` supervisor (own session) that the soak kills and restarts."""

    def __init__(self, env: dict[str, str], processes: int) -> None:
        self.env = env
        self.processes = processes
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nexusflow_worker", "--processes", str(self.processes),
             "--grace", "10"], env=self.env, start_new_session=True)

    def kill_all(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def kill_one(self, rng: random.Random) -> int | None:
        if self.proc is None:
            return None
        kids = child_pids(self.proc.pid)
        if not kids:
            return None
        pid = rng.choice(kids)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ---------------------------------------------------------------------------- soak flows


def _node(id: str, type: str, trigger_rule: str | None = None, retry: dict | None = None,
          **config: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "type": type, "config": config}
    if trigger_rule:
        out["trigger_rule"] = trigger_rule
    if retry:
        out["retry"] = retry
    return out


def _flow(name: str, nodes: list[dict[str, Any]], edges: list[tuple]) -> dict[str, Any]:
    out_edges = []
    for src, dst, *handle in edges:
        item = {"id": f"{src}-{dst}", "source": src, "target": dst}
        if handle:
            item["source_handle"] = handle[0]
        out_edges.append(item)
    return {"schema": 1, "name": name, "nodes": nodes, "edges": out_edges}


def soak_flows() -> list[dict[str, Any]]:
    """The mixed flows the soak runs: chains, a condition diamond, a fan-out, a flaky node."""
    chain = _flow("soak-chain", [
        _node("a", "noop", value=1), _node("b", "sleep", seconds=0.5),
        _node("c", "noop"), _node("d", "sleep", seconds=1.0), _node("e", "noop"),
    ], [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e")])
    branch = _flow("soak-branch", [
        _node("n", "noop", value=7),
        _node("big", "condition", expression="inputs['n'] > 5"),
        _node("yes", "sleep", seconds=0.4), _node("no", "noop"),
        _node("join", "noop", trigger_rule="none_failed"),
    ], [("n", "big"), ("big", "yes", "true"), ("big", "no", "false"), ("yes", "join"),
        ("no", "join")])
    fan = _flow("soak-fan", [_node("root", "noop")]
                + [_node(f"w{i}", "sleep", seconds=0.2 + 0.1 * i) for i in range(6)]
                + [_node("sum", "noop")],
                [("root", f"w{i}") for i in range(6)] + [(f"w{i}", "sum") for i in range(6)])
    flaky = _flow("soak-flaky", [
        _node("first", "noop"),
        _node("flaky", "sleep", seconds=0.3, fail_attempts=1,
              retry={"max_attempts": 3, "backoff_s": 0.5}),
        _node("after", "noop", trigger_rule="all_done"),
    ], [("first", "flaky"), ("flaky", "after")])
    return [chain, branch, fan, flaky]


# ---------------------------------------------------------------------------- the soak


@dataclass
class Fault:
    at: float
    kind: str
    held: list[tuple[str, str, int]]  # (run, node, attempt) running or queued at the fault


def _snapshot(pool: Any, run_ids: list[str], states: tuple[str, ...],
              worker_pid: int | None = None) -> list[tuple[str, str, int]]:
    sql = ("SELECT execution_id::text AS run, node_id, attempt, worker FROM node_runs"
           " WHERE execution_id = ANY(%s::uuid[]) AND state = ANY(%s)")
    with pool.connection() as conn:
        rows = conn.execute(sql, (run_ids, list(states))).fetchall()
    return [(r["run"], r["node_id"], r["attempt"]) for r in rows
            if worker_pid is None or (r["worker"] or "").endswith(f":{worker_pid}")]


def recovery_times(pool: Any, faults: list[Fault]) -> list[tuple[str, float]]:
    """For each fault, seconds until every node it hit started again (next attempt, or the
    queued attempt for a Redis loss)."""
    out = []
    with pool.connection() as conn:
        for f in faults:
            if not f.held:
                continue
            worst = 0.0
            for run, node_id, attempt in f.held:
                min_attempt = attempt if f.kind == "redis" else attempt + 1
                row = conn.execute(
                    "SELECT min(s) AS s FROM (SELECT started_at AS s FROM node_logs"
                    " WHERE execution_id=%(r)s AND node_id=%(n)s AND attempt >= %(a)s"
                    " UNION ALL SELECT started_at FROM node_runs WHERE execution_id=%(r)s"
                    " AND node_id=%(n)s AND attempt >= %(a)s AND started_at IS NOT NULL"
                    " AND state NOT IN ('pending', 'queued', 'scheduled')"
                    " UNION ALL SELECT ended_at FROM node_logs WHERE execution_id=%(r)s"
                    " AND node_id=%(n)s AND attempt = %(a0)s AND status <> 'lost') t",
                    {"r": run, "n": node_id, "a": min_attempt, "a0": attempt}).fetchone()
                if row["s"] is None:
                    continue
                worst = max(worst, row["s"].timestamp() - f.at)
            out.append((f.kind, max(0.0, worst)))
    return out


@click.command("soak")
@click.option("--duration", default=600.0, show_default=True, type=click.FloatRange(10),
              help="Total seconds, draining included; the soak stops by itself.")
@click.option("--runs", "concurrent", default=8, show_default=True, type=click.IntRange(1, 500),
              help="Runs kept going at once.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes.")
@click.option("--fault-every", default=8.0, show_default=True, type=click.FloatRange(1),
              help="Mean seconds between faults.")
@click.option("--redis-mode", type=click.Choice(["restart", "flush"]), default="restart",
              show_default=True,
              help="restart: a private redis-server on loopback, killed and restarted empty; "
                   "flush: FLUSHDB on NEXUSFLOW_REDIS_URL.")
@click.option("--lease", default=10.0, show_default=True, help="Lease seconds of the workers.")
@click.option("--seed", default=None, type=int, help="Random seed (printed).")
@click.option("--json", "as_json", is_flag=True, help="Also print the counts as JSON.")
def soak(duration: float, concurrent: int, workers: int, fault_every: float, redis_mode: str,
         lease: float, seed: int | None, as_json: bool) -> None:
    """Keep runs going while killing workers and restarting Redis; check the invariants."""
    import json

    from nexusflow_kernel.engine import Engine
    from nexusflow_kernel.settings import Settings

    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    t0 = time.monotonic()
    deadline = t0 + duration
    drain_s = max(20.0, min(120.0, duration * 0.3))
    settings = Settings.from_env()
    redis_srv: PrivateRedis | None = None
    if redis_mode == "restart":
        redis_srv = PrivateRedis()
        settings = replace(settings, redis_url=redis_srv.url)
    settings = resolve_backends(replace(settings, lease_s=lease, heartbeat_s=min(1.0, lease / 5),
                       reconcile_interval_s=0.5, requeue_grace_s=2.0))
    try:
        # Fail on an unreachable database before starting anything that needs stopping.
        Engine(replace(settings, redis_url=settings.redis_url))
    except Exception as exc:
        if redis_srv is not None:
            redis_srv.stop()
        raise click.ClickException(str(exc)) from None
    if redis_srv is not None:
        redis_srv.start()
    env = dict(os.environ)
    env.update({"NEXUSFLOW_DATABASE_URL": settings.database_url or "",
                "NEXUSFLOW_REDIS_URL": settings.redis_url or "",
                "NEXUSFLOW_LEASE_S": str(settings.lease_s),
                "NEXUSFLOW_HEARTBEAT_S": str(settings.heartbeat_s),
                "NEXUSFLOW_RECONCILE_INTERVAL_S": str(settings.reconcile_interval_s),
                "NEXUSFLOW_REQUEUE_GRACE_S": str(settings.requeue_grace_s)})
    engine = Engine(settings)
    group = WorkerGroup(env, workers)
    flows = soak_flows()
    run_ids: list[str] = []
    active: list[str] = []
    faults: list[Fault] = []
    counts: dict[str, int] = defaultdict(int)
    click.echo(f"soak: {duration:g} s, {concurrent} concurrent runs, {workers} workers, "
               f"redis {redis_mode}, lease {lease:g} s, seed {seed}")
    report = None
    try:
        group.start()
        next_fault = time.monotonic() + rng.expovariate(1 / fault_every)
        while time.monotonic() < deadline - drain_s:
            active = [r for r in active if _status(engine, r) == "running"]
            while len(active) < concurrent:
                try:
                    rid = engine.start_run(rng.choice(flows), inputs={"n": rng.randint(0, 9)})
                except Exception as exc:  # PostgreSQL down would be a finding, not a crash
                    click.echo(f"  could not start a run: {exc}")
                    break
                run_ids.append(rid)
                active.append(rid)
            now = time.monotonic()
            if now >= next_fault:
                _fault(rng, group, redis_srv, engine, run_ids, faults, counts, t0)
                next_fault = now + rng.expovariate(1 / fault_every)
            if group.proc is not None and group.proc.poll() is not None:
                group.start()
            time.sleep(0.2)
        click.echo(f"  {time.monotonic() - t0:6.1f}s draining: no new runs or faults")
        if group.proc is None or group.proc.poll() is not None:
            group.start()
        while time.monotonic() < deadline:
            if all(_status(engine, r) != "running" for r in run_ids):
                break
            time.sleep(0.5)
        wait_rq_idle(engine.redis, settings, timeout=max(1.0, min(10.0, deadline
                                                                   - time.monotonic())))
        report = check_invariants(engine.pool, engine.redis, settings, run_ids,
                                  store=engine.store)
        recoveries = recovery_times(engine.pool, faults)
    finally:
        group.stop()
        if redis_srv is not None:
            redis_srv.stop()
    finished = sum(v for k, v in report.statuses.items() if k != "running")
    longest = max((s for _k, s in recoveries), default=0.0)
    by_kind: dict[str, float] = {}
    for kind, s in recoveries:
        by_kind[kind] = max(by_kind.get(kind, 0.0), s)
    summary = {
        "seed": seed, "elapsed_s": round(time.monotonic() - t0, 1),
        "runs_started": len(run_ids), "runs_finished": finished,
        "runs_lost": len(report.unfinished), "statuses": report.statuses,
        "duplicated_node_successes": len(report.duplicate_successes),
        "attempts": report.attempts, "lost_attempts": report.lost_attempts,
        "faults": dict(counts), "longest_recovery_s": round(longest, 2),
        "longest_recovery_by_fault_s": {k: round(v, 2) for k, v in by_kind.items()},
        "ok": report.ok,
    }
    click.echo("invariants:")
    for line in report.lines():
        click.echo(f"  {line}")
    click.echo("counts:")
    for key in ("runs_started", "runs_finished", "runs_lost", "duplicated_node_successes",
                "attempts", "lost_attempts", "faults", "longest_recovery_s",
                "longest_recovery_by_fault_s", "statuses", "elapsed_s"):
        click.echo(f"  {key}: {summary[key]}")
    if as_json:
        click.echo(json.dumps(summary))
    unexpected = {k: v for k, v in report.statuses.items() if k not in ("succeeded",)}
    if unexpected:
        click.echo(f"  note: runs not succeeded: {unexpected}")
    ok = report.ok and not unexpected
    click.echo("soak: " + ("PASS" if ok else "FAIL"))
    sys.exit(0 if ok else 1)


def _status(engine: Any, run_id: str) -> str:
    try:
        with engine.pool.connection() as conn:
            row = conn.execute("SELECT status FROM executions WHERE id=%s", (run_id,)).fetchone()
        return row["status"] if row else "missing"
    except Exception:
        return "running"


def _fault(rng: random.Random, group: WorkerGroup, redis_srv: PrivateRedis | None,
           engine: Any, run_ids: list[str], faults: list[Fault], counts: dict[str, int],
           t0: float) -> None:
    kind = rng.choices(["kill_child", "kill_all", "redis"], weights=[4, 2, 2])[0]
    recent = run_ids[-200:]
    at = time.time()
    if kind == "kill_child":
        pid = group.kill_one(rng)
        if pid is None:
            return
        held = _snapshot(engine.pool, recent, ("running",), worker_pid=pid)
    elif kind == "kill_all":
        held = _snapshot(engine.pool, recent, ("running",))
        group.kill_all()
        time.sleep(rng.uniform(0, 2))
        group.start()
    else:
        held = _snapshot(engine.pool, recent, ("queued",))
        if redis_srv is not None:
            redis_srv.kill()
            time.sleep(rng.uniform(0.2, 2))
            redis_srv.start()
        else:
            engine.redis.flushdb()
    counts[kind] += 1
    faults.append(Fault(at, kind, held))
    click.echo(f"  {time.monotonic() - t0:6.1f}s fault {kind}: {len(held)} node(s) in hand")

"""Prometheus metrics (issue #14, item 4): the service's ``/nexusflow/metrics`` (metrics token or
an administrator) and the workers' metrics port (prometheus_client multiprocess mode, all
processes of a supervisor on one port); both scraped, and the values move after runs, a
schedule's firing and a worker killed in the middle of a node."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

import httpx
import psutil
import psycopg
from nftest import ServiceProcess, flow, node, wait_run
from prometheus_client.parser import text_string_to_metric_families

from nexusflow_kernel.procs import free_port

METRICS_TOKEN = "metrics-token-for-the-test-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _wait(what: str, check, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout:g} s")


def test_service_and_worker_metrics_move_after_runs(keyed, tokens, workers, engine) -> None:
    port = free_port()
    workers.settings = keyed
    pool = workers.start(2, "--metrics-port", str(port))
    service = ServiceProcess(keyed, env={"NEXUSFLOW_METRICS_TOKEN": METRICS_TOKEN})
    url = service.url + "nexusflow/metrics"
    worker_url = f"http://127.0.0.1:{port}/metrics"
    alice, root = tokens("alice"), tokens("root", admin=True)

    def scrape() -> dict:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        return _samples(resp.text)

    def scrape_workers() -> dict:
        resp = httpx.get(worker_url, timeout=30)
        assert resp.status_code == 200, resp.text
        return _samples(resp.text)

    try:
        # Who may scrape: the metrics token, an administrator; not a user, not nobody.
        assert httpx.get(url, timeout=30).status_code == 401
        assert (
            httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        )
        assert (
            httpx.get(url, headers={"Authorization": f"token {alice}"}, timeout=30).status_code
            == 403
        )
        assert (
            httpx.get(url, headers={"Authorization": f"token {root}"}, timeout=30).status_code
            == 200
        )

        before = scrape()
        assert _value(before, "nexusflow_live_workers", queue="default") == 2
        assert _value(before, "nexusflow_runs", status="succeeded") == 0
        assert ("nexusflow_trigger_firings_total", (("kind", "schedule"),)) in before
        workers_before = scrape_workers()
        assert _value(workers_before, "nexusflow_worker_processes") == 2

        with service.client(alice) as api:
            good = api.post(
                "runs",
                json={
                    "graph": flow(
                        node("A", expression="20"),
                        node("B", expression="inputs['A'] + 1"),
                        edges=[("A", "B")],
                        name="metered",
                    )
                },
            )
            bad = api.post(
                "runs", json={"graph": flow(node("X", expression="1 / 0"), name="broken")}
            )
            assert good.status_code == 201 and bad.status_code == 201, (good.text, bad.text)
            assert wait_run(engine, good.json()["run_id"])["status"] == "succeeded"
            assert wait_run(engine, bad.json()["run_id"])["status"] == "failed"
            # a schedule's firing (its current minute, due now)
            wid = engine.get_run(good.json()["run_id"])["workflow_id"]
            sched = api.post(f"workflows/{wid}/schedules", json={"cron": "* * * * *"}).json()
        from croniter import croniter

        slot = croniter("* * * * *", datetime.now(UTC)).get_prev(datetime)
        with psycopg.connect(keyed.database_url) as conn:
            conn.execute(
                "UPDATE nexusflow_schedules SET next_fire_at = %s WHERE schedule_id = %s",
                (slot, sched["schedule_id"]),
            )

        after = _wait(
            "the schedule's firing counted",
            lambda: (
                lambda s: (
                    s
                    if _value(s, "nexusflow_trigger_firings_total", kind="schedule") >= 1
                    else None
                )
            )(scrape()),
        )
        fired = [r for r in engine.list_runs(limit=20) if r["trigger"] == "schedule"]
        assert len(fired) == 1, engine.list_runs(limit=20)
        assert wait_run(engine, fired[0]["run_id"])["status"] == "succeeded"
        after = scrape()
        assert _value(after, "nexusflow_runs", status="succeeded") >= 2
        assert _value(after, "nexusflow_runs", status="failed") == 1
        assert _value(after, "nexusflow_queue_depth", queue="default") >= 0
        assert ("nexusflow_due_jobs", ()) in after

        w = _wait(
            "the workers' counts",
            lambda: (
                lambda s: (
                    s
                    if _value(s, "nexusflow_runs_finished_total", status="succeeded") >= 2
                    else None
                )
            )(scrape_workers()),
        )
        assert _value(w, "nexusflow_runs_finished_total", status="failed") == 1
        assert (
            _value(w, "nexusflow_node_duration_seconds_count", type="transform", status="succeeded")
            >= 3
        )
        assert (
            _value(w, "nexusflow_node_duration_seconds_count", type="transform", status="failed")
            == 1
        )
        assert (
            _value(
                w,
                "nexusflow_node_duration_seconds_bucket",
                type="transform",
                status="succeeded",
                le="+Inf",
            )
            >= 3
        )

        # A worker process killed in the middle of a node: its lease runs out, the
        # supervisor's reconciler records the lost attempt, and the count survives the process.
        with service.client(alice) as api:
            slow = api.post(
                "runs", json={"graph": flow(node("S", "sleep", seconds=30), name="slow")}
            ).json()["run_id"]

        def busy_child() -> int | None:
            # The worker process that claimed S ("host:pid" in its row), one of the pool's.
            with psycopg.connect(keyed.database_url) as conn:
                row = conn.execute(
                    "SELECT worker FROM node_runs WHERE execution_id = %s AND node_id = 'S'"
                    " AND state = 'running'", (slow,)).fetchone()
            if not row or not row[0]:
                return None
            pid = int(row[0].rsplit(":", 1)[1])
            children = {c.pid for c in psutil.Process(pool.pid).children(recursive=True)}
            return pid if pid in children else None

        victim = _wait("a worker running the sleep", busy_child)
        os.kill(victim, signal.SIGKILL)
        lost = _wait(
            "the lost lease counted",
            lambda: (
                lambda s: (
                    s if _value(s, "nexusflow_lease_losses_total", by="reconciler") >= 1 else None
                )
            )(scrape_workers()),
            timeout=90,
        )
        assert (
            _value(
                lost, "nexusflow_node_duration_seconds_count", type="transform", status="succeeded"
            )
            >= 3
        )  # the dead process's counts are still there
        _wait(
            "the restarted worker",
            lambda: _value(scrape_workers(), "nexusflow_worker_processes") == 2,
        )
        engine.cancel_run(slow)
    finally:
        service.stop()

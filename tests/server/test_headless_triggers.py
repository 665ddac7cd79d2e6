"""Headless triggers (issue #14, item 3): schedules fire from ``nexusflow server`` processes and
workers alone (no JupyterLab anywhere), exactly once with two services running, and firings
missed while everything was down follow each schedule's ``misfire`` policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis
from nexusflow_server.triggers import plan_firings
from nftest import ServiceProcess, flow, node, wait_run


def _slots_back(cron: str, count: int, now: datetime) -> list[datetime]:
    """The last ``count`` times of ``cron`` up to ``now``, oldest first."""
    from croniter import croniter

    it = croniter(cron, now)
    return sorted(it.get_prev(datetime).astimezone(UTC) for _ in range(count))


def test_plan_firings_policies() -> None:
    now = datetime(2026, 3, 2, 12, 30, 0, tzinfo=UTC)
    hourly = "0 * * * *"
    due = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # 6 firings missed: 7:00 ... 12:00
    fire, skipped, nxt = plan_firings(
        hourly, "UTC", due, now, misfire="skip", catch_up_limit=10, grace_s=60
    )
    assert fire == [] and skipped == 6 and nxt == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    fire, skipped, nxt = plan_firings(
        hourly, "UTC", due, now, misfire="catch_up", catch_up_limit=4, grace_s=60
    )
    assert fire == [datetime(2026, 3, 2, h, 0, tzinfo=UTC) for h in (9, 10, 11, 12)]
    assert skipped == 2 and nxt == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    # on time (within the grace): fires under either policy, nothing skipped
    late = datetime(2026, 3, 2, 12, 0, 20, tzinfo=UTC)
    for policy in ("skip", "catch_up"):
        fire, skipped, _ = plan_firings(
            hourly,
            "UTC",
            datetime(2026, 3, 2, 12, 0, tzinfo=UTC),
            late,
            misfire=policy,
            catch_up_limit=3,
            grace_s=60,
        )
        assert fire == [datetime(2026, 3, 2, 12, 0, tzinfo=UTC)] and skipped == 0
    # a long outage of a minutely schedule: bounded work, bounded count
    fire, skipped, _ = plan_firings(
        "* * * * *",
        "UTC",
        now - timedelta(days=30),
        now,
        misfire="catch_up",
        catch_up_limit=100,
        grace_s=60,
    )
    assert len(fire) == 100 and fire[-1] == now and skipped == 1000  # counted up to 1000


def _firings(database_url: str, schedule_id: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT fire_at, fired_by, run_id FROM nexusflow_schedule_firings"
            " WHERE schedule_id = %s ORDER BY fire_at",
            (schedule_id,),
        ).fetchall()


def _schedule(database_url: str, schedule_id: str) -> dict:
    with psycopg.connect(database_url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(
            "SELECT * FROM nexusflow_schedules WHERE schedule_id = %s", (schedule_id,)
        ).fetchone()


def _set_due(database_url: str, schedule_id: str, due: datetime) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE nexusflow_schedules SET next_fire_at = %s WHERE schedule_id = %s",
            (due, schedule_id),
        )


def _wait(what: str, check, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:g} s")


def test_schedules_fire_headless_once_with_two_services_and_follow_misfire(
    keyed, tokens, workers, engine, tmp_path
) -> None:
    db = keyed.database_url
    alice = tokens("alice")
    workers.start(1)
    grace = ["--NexusFlow.misfire_grace_s=600"]
    first = ServiceProcess(keyed, *grace)
    try:
        with first.client(alice) as api:
            made = api.post(
                "workflows",
                json={
                    "graph": flow(node("A", expression="params.get('x', 0) + 1"), name="nightly")
                },
            )
            assert made.status_code == 201, made.text
            wid = made.json()["workflow_id"]
            bad = api.post(
                f"workflows/{wid}/schedules", json={"cron": "0 * * * *", "misfire": "never"}
            )
            assert bad.status_code == 400 and bad.json()["pointer"] == "/misfire"
            bad = api.post(
                f"workflows/{wid}/schedules",
                json={"cron": "0 * * * *", "misfire": "catch_up", "catch_up_limit": 500},
            )
            assert bad.status_code == 400 and bad.json()["pointer"] == "/catch_up_limit"
            # hourly, at a minute half an hour away from now: no firing near the test's time
            minute = (datetime.now(UTC).minute + 30) % 60
            hourly = f"{minute} * * * *"
            skip = api.post(f"workflows/{wid}/schedules", json={"cron": hourly}).json()
            assert skip["misfire"] == "skip" and skip["skipped_firings"] == 0
            queue = api.post(f"workflows/{wid}/queues", json={"stream": "orders"})
            assert queue.status_code == 201, queue.text
            every_minute = api.post(
                f"workflows/{wid}/schedules", json={"cron": "* * * * *", "inputs": {"x": 41}}
            ).json()
        # the CLI, through the service with alice's token, makes the catch-up schedule
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUSFLOW_")}
        env.update(
            NEXUSFLOW_SERVICE_URL=first.url,
            NEXUSFLOW_SERVICE_TOKEN=alice,
            NEXUSFLOW_DATA_DIR=str(tmp_path / "cli"),
        )
        cli = [sys.executable, "-m", "nexusflow_kernel.cli", "schedules"]
        out = subprocess.run(
            [
                *cli,
                "add",
                wid,
                "--cron",
                hourly,
                "--misfire",
                "catch_up",
                "--catch-up-limit",
                "3",
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        catch_up = json.loads(out.stdout)
        assert catch_up["misfire"] == "catch_up" and catch_up["catch_up_limit"] == 3
        listed = subprocess.run(
            [*cli, "list", wid], env=env, capture_output=True, text=True, timeout=60
        )
        assert "misfire catch_up (at most 3)" in listed.stdout, listed.stderr
    finally:
        first.stop()

    # Everything was down for five hours: five hourly firings passed.
    now = datetime.now(UTC)
    missed = _slots_back(hourly, 5, now)
    for sid in (skip["schedule_id"], catch_up["schedule_id"]):
        _set_due(db, sid, missed[0])
    # and the minutely schedule's current firing is due (found within the grace)
    _set_due(db, every_minute["schedule_id"], _slots_back("* * * * *", 1, now)[0])

    services = [ServiceProcess(keyed, *grace), ServiceProcess(keyed, *grace)]
    try:
        _wait(
            "the catch-up schedule's three firings",
            lambda: (
                len(_firings(db, catch_up["schedule_id"])) == 3
                and _firings(db, every_minute["schedule_id"])
                and _schedule(db, skip["schedule_id"])["next_fire_at"] > now
            ),
        )
        fired = _firings(db, catch_up["schedule_id"])
        assert [f[0] for f in fired] == missed[2:]  # the most recent three, oldest first
        assert all(f[2] for f in fired)
        for f in fired:
            run = wait_run(engine, str(f[2]))
            assert run["status"] == "succeeded" and run["trigger"] == "schedule"
        state = _schedule(db, catch_up["schedule_id"])
        assert state["skipped_firings"] == 2 and state["next_fire_at"] > now
        skipped = _schedule(db, skip["schedule_id"])
        assert skipped["skipped_firings"] == 5 and _firings(db, skip["schedule_id"]) == []
        assert skipped["next_fire_at"] == _slots_back(hourly, 1, now + timedelta(hours=1))[0]
        # Exactly once across the two services, while both keep polling (5 s at 0.2 s).
        time.sleep(5)
        once = _firings(db, every_minute["schedule_id"])
        assert len(once) in (1, 2)  # a new minute may have begun meanwhile: its own firing
        assert len({f[0] for f in once}) == len(once)
        run = wait_run(engine, str(once[0][2]))
        assert run["status"] == "succeeded" and run["inputs"] == {"x": 41}
        assert run["outputs"]["A"] == 42 if "outputs" in run else True
        runs = [r for r in engine.list_runs(limit=50) if r["trigger"] == "schedule"]
        assert len(runs) == 3 + len(once)  # one run per firing, none twice
        assert len(_firings(db, catch_up["schedule_id"])) == 3

        # A queue trigger, consumed by both services: each message starts exactly one run.
        r = redis.Redis.from_url(keyed.redis_url)
        for i in range(6):
            r.xadd("orders", {"payload": json.dumps({"x": i})})
        queued = _wait(
            "six queue runs",
            lambda: (lambda rs: rs if len(rs) >= 6 else None)(
                [x for x in engine.list_runs(limit=50) if x["trigger"] == "queue"]
            ),
        )
        time.sleep(3)  # both keep consuming: no message starts a second run
        queued = [x for x in engine.list_runs(limit=50) if x["trigger"] == "queue"]
        done = [wait_run(engine, x["run_id"]) for x in queued]
        assert sorted(d["inputs"]["x"] for d in done) == list(range(6))
        for d in done:
            assert d["status"] == "succeeded", d
    finally:
        for s in services:
            s.stop()


@pytest.mark.parametrize("policy", ["skip", "catch_up"])
def test_the_schedules_cli_on_the_database(keyed, engine, tmp_path, policy) -> None:
    """Operators with the database URL manage schedules with no service running."""
    from nftest import settings_env

    wid = engine.start_run(flow(node("A", "noop")), actor="ops")
    wid = engine.get_run(wid)["workflow_id"]
    env = settings_env(keyed)
    env.pop("NEXUSFLOW_SERVICE_URL", None)
    cli = [sys.executable, "-m", "nexusflow_kernel.cli", "schedules"]
    out = subprocess.run(
        [
            *cli,
            "add",
            str(wid),
            "--cron",
            "0 6 * * 1-5",
            "--timezone",
            "Europe/Paris",
            "--misfire",
            policy,
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["misfire"] == policy and made["timezone"] == "Europe/Paris"
    bad = subprocess.run(
        [*cli, "add", str(wid), "--cron", "not cron"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "not a valid cron expression" in bad.stderr
    gone = subprocess.run(
        [*cli, "delete", made["schedule_id"]], env=env, capture_output=True, text=True, timeout=60
    )
    assert gone.returncode == 0, gone.stderr
    listed = subprocess.run(
        [*cli, "list", str(wid), "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert json.loads(listed.stdout) == {"schedules": []}


def test_the_schedules_cli_takes_an_environment(keyed, engine) -> None:
    """`schedules add --env prod`: the schedule runs in prod (the version promoted there), the
    listing shows it; an unknown environment is named, with nothing stored."""
    from nftest import settings_env

    wid = engine.get_run(engine.start_run(flow(node("A", "noop")), actor="ops"))["workflow_id"]
    engine.environments.create("prod")
    env = settings_env(keyed)
    env.pop("NEXUSFLOW_SERVICE_URL", None)
    cli = [sys.executable, "-m", "nexusflow_kernel.cli", "schedules"]

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)

    out = call("add", str(wid), "--cron", "0 6 * * *", "--env", "prod")
    assert out.returncode == 0, out.stderr
    assert " in environment prod: next firing " in out.stdout
    bad = call("add", str(wid), "--cron", "0 6 * * *", "--env", "nowhere")
    assert bad.returncode == 2 and "unknown environment 'nowhere'" in bad.stderr, bad.stderr
    assert "prod" in bad.stderr  # the known ones are named
    both = call("add", str(wid), "--cron", "0 6 * * *", "--env", "prod", "--version", "1")
    assert both.returncode == 2 and "give --env or --version, not both" in both.stderr
    dev = call("add", str(wid), "--cron", "0 7 * * *")
    assert dev.returncode == 0, dev.stderr
    rows = json.loads(call("list", str(wid), "--json").stdout)["schedules"]
    assert sorted((r["cron"], r["env"]) for r in rows) == [("0 6 * * *", "prod"),
                                                          ("0 7 * * *", None)]
    text = call("list", str(wid)).stdout
    assert "\tenv prod" in text and "\tenv dev" in text, text


def test_the_schedules_cli_takes_an_environment_through_the_service(service, tokens, engine,
                                                                     tmp_path) -> None:
    """Through the service, `schedules add --env` gets the REST checks: the deployer role on
    the environment, an unknown environment named; the listing shows the environment."""
    from nexusflow_kernel.remote import RemoteEngine
    from nexusflow_kernel.settings import Settings

    alice = tokens("alice")
    remote = RemoteEngine(Settings(service_url=service.url, service_token=alice,
                                   data_dir=tmp_path / "none"))
    wid = remote._call("POST", "workflows", body={"graph": flow(node("A", "noop"))})[
        "workflow_id"]  # alice's own workflow
    engine.environments.create("prodsvc")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUSFLOW_", "JUPYTERHUB_"))}
    env.update(NEXUSFLOW_SERVICE_URL=service.url, NEXUSFLOW_SERVICE_TOKEN=alice,
               NEXUSFLOW_DATA_DIR=str(tmp_path / "cli-data"))

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "schedules", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    refused = call("add", str(wid), "--cron", "0 6 * * *", "--env", "prodsvc")
    assert refused.returncode != 0 and "deployer role" in refused.stderr, refused.stderr
    unknown = call("add", str(wid), "--cron", "0 6 * * *", "--env", "nowhere")
    assert unknown.returncode != 0 and "unknown environment 'nowhere'" in unknown.stderr
    engine.environments.grant("prodsvc", "alice", "deployer")
    made = call("add", str(wid), "--cron", "0 6 * * *", "--env", "prodsvc", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["env"] == "prodsvc"
    listed = call("list", str(wid))
    assert listed.returncode == 0 and "\tenv prodsvc" in listed.stdout, listed

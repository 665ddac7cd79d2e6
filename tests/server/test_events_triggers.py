"""Event websockets, cron schedules fired once across servers, queue triggers, local workers."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime

import psycopg
import pytest
import redis
from nexusflow_server.triggers import Scheduler
from nftest import flow, node, wait_run

FINAL = {"succeeded", "failed", "canceled"}


async def _read_until_final(ws, timeout: float = 30) -> list[dict]:
    events: list[dict] = []
    while True:
        msg = await asyncio.wait_for(ws.read_message(), timeout)
        assert msg is not None, "socket closed early"
        events.append(json.loads(msg))
        if events[-1].get("node") is None and events[-1]["state"] in FINAL:
            return events


async def test_run_events_websocket_history_then_live(api, jp_ws_fetch, engine,
                                                      workers) -> None:
    graph = flow(node("A", expression="1"), node("B", expression="inputs['A'] + 1"),
                 edges=[("A", "B")])
    _, wf = await api("POST", "workflows", {"graph": graph})
    all_ws = await jp_ws_fetch("nexusflow", "api", "events")
    _, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"]})
    run_id = started["run_id"]
    ws = await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events")
    workers.start(1)
    live = await _read_until_final(ws)
    ws.close()
    assert all(e["run"] == run_id for e in live)
    assert [e["state"] for e in live if e.get("node") == "B"][-1] == "succeeded"
    assert live[-1]["state"] == "succeeded"

    late = await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events")  # late joiner
    history = await _read_until_final(late)
    late.close()
    assert [(e["node"], e["state"]) for e in history] == [(e["node"], e["state"])  # noqa
                                                          for e in live]
    resumed = await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events",
                                params={"after": live[1]["id"]})
    first = json.loads(await asyncio.wait_for(resumed.read_message(), 10))
    resumed.close()
    assert first["id"] == live[2]["id"]

    seen = await _read_until_final(all_ws)
    all_ws.close()
    assert {e["run"] for e in seen} == {run_id}


async def test_all_events_at_run_level_carry_only_the_runs_own_events(api, jp_ws_fetch,
                                                                        workers) -> None:
    """What a canvas listens to for runs of its flow started elsewhere (REST, a notebook...)."""
    graph = flow(node("A", expression="1"), node("B", expression="inputs['A'] + 1"),
                 edges=[("A", "B")])
    _, wf = await api("POST", "workflows", {"graph": graph})
    runs_ws = await jp_ws_fetch("nexusflow", "api", "events", params={"level": "run"})
    _, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"]})
    workers.start(1)
    seen = await _read_until_final(runs_ws)
    runs_ws.close()
    assert {e["run"] for e in seen} == {started["run_id"]}
    assert [e["node"] for e in seen] == [None] * len(seen)
    assert [e["state"] for e in seen] == ["running", "succeeded"]
    # the grid of runs reads many runs: their states without the outputs
    code, full = await api("GET", f"runs/{started['run_id']}")
    assert code == 200 and full["nodes"]["B"]["output"] == 2
    code, light = await api("GET", f"runs/{started['run_id']}", params={"outputs": "false"})
    assert code == 200 and light["nodes"]["B"]["state"] == "succeeded"
    assert light["nodes"]["B"].get("output") is None
    code, bad = await api("GET", f"runs/{started['run_id']}", params={"outputs": "no"})
    assert code == 400 and bad["pointer"] == "?outputs"
    with pytest.raises(Exception) as refused:
        await jp_ws_fetch("nexusflow", "api", "events", params={"level": "nodes"})
    assert "400" in str(refused.value)


def _backdate(database_url: str, schedule_id: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE nexusflow_schedules SET next_fire_at = now() - interval '1 second'"
                     " WHERE schedule_id = %s", (schedule_id,))


async def test_schedule_fires_exactly_once_across_servers(api, nf_app, engine,
                                                          database_url) -> None:
    _, wf = await api("POST", "workflows", {"graph": flow(node("A", expression="1"))})
    code, sched = await api("POST", f"workflows/{wf['workflow_id']}/schedules",
                            {"cron": "*/5 * * * *", "inputs": {"x": 1}})
    assert code == 201, sched
    assert datetime.fromisoformat(sched["next_fire_at"]) > datetime.now(UTC)
    assert (await api("POST", f"workflows/{wf['workflow_id']}/schedules",
                      {"cron": "every minute"}))[0] == 400
    _backdate(database_url, sched["schedule_id"])
    servers = [Scheduler(engine.pool, engine, f"server-{i}") for i in range(4)]
    started: list[str] = []
    barrier = threading.Barrier(len(servers))

    def tick(s: Scheduler) -> None:
        barrier.wait()
        started.extend(s.fire_due())

    threads = [threading.Thread(target=tick, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1
    run = engine.get_run(started[0])
    assert run["trigger"] == "schedule" and run["inputs"] == {"x": 1}
    firings = nf_app.store().firings(sched["schedule_id"])
    assert len(firings) == 1 and firings[0]["run_id"] == started[0]
    after = nf_app.store().schedules(schedule_id=sched["schedule_id"])[0]
    assert datetime.fromisoformat(after["next_fire_at"]) > datetime.now(UTC)
    assert servers[0].fire_due() == []

    # the loop inside the running server fires it too
    await nf_app._start_jupyter_server_extension(nf_app.serverapp)
    await asyncio.wait_for(nf_app.ready.wait(), 30)
    _backdate(database_url, sched["schedule_id"])
    for _ in range(100):
        if len(nf_app.store().firings(sched["schedule_id"])) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(nf_app.store().firings(sched["schedule_id"])) == 2
    assert (await api("DELETE", f"schedules/{sched['schedule_id']}"))[0] == 204


async def test_queue_trigger_acks_after_commit_and_takes_over_dead_consumers(
        api, nf_app, engine, settings) -> None:
    _, wf = await api("POST", "workflows", {"graph": flow(node("A", expression="1"))})
    code, trig = await api("POST", f"workflows/{wf['workflow_id']}/queues",
                           {"stream": "orders", "group": "nf"})
    assert code == 201, trig
    r = redis.Redis.from_url(settings.redis_url)
    r.xadd("orders", {"payload": json.dumps({"order": 1})})
    # a consumer that read a message and died without acknowledging it
    r.xadd("orders", {"order": "2"})
    r.xreadgroup("nf", "dead-consumer", {"orders": ">"}, count=2)
    assert r.xpending("orders", "nf")["pending"] == 2

    await nf_app._start_jupyter_server_extension(nf_app.serverapp)
    await asyncio.wait_for(nf_app.ready.wait(), 30)
    for _ in range(100):
        runs = engine.list_runs(workflow_id=wf["workflow_id"])
        if len(runs) == 2 and r.xpending("orders", "nf")["pending"] == 0:
            break
        await asyncio.sleep(0.1)
    runs = [engine.get_run(x["run_id"]) for x in engine.list_runs(workflow_id=wf["workflow_id"])]
    assert sorted(json.dumps(x["inputs"], sort_keys=True) for x in runs) == [
        '{"order": "2"}', '{"order": 1}']
    assert {x["trigger"] for x in runs} == {"queue"}
    assert r.xpending("orders", "nf")["pending"] == 0
    r.xadd("orders", {"order": "3"})
    for _ in range(100):
        if len(engine.list_runs(workflow_id=wf["workflow_id"])) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(engine.list_runs(workflow_id=wf["workflow_id"])) == 3
    await asyncio.sleep(0.5)
    assert len(engine.list_runs(workflow_id=wf["workflow_id"])) == 3  # never twice


async def test_secret_values_never_leave_the_worker(api, engine, workers, settings,
                                                    database_url) -> None:
    value = "sk_live_Z9x8c7v6b5n4m3"
    assert (await api("PUT", "secrets/API_TOKEN", {"value": value}))[0] == 204
    assert (await api("PUT", "secrets/bad name", {"value": "x"}))[0] == 400
    code, listing = await api("GET", "secrets")
    assert listing == {"secrets": [{k: v for k, v in listing["secrets"][0].items()}]}
    assert listing["secrets"][0]["name"] == "API_TOKEN" and value not in json.dumps(listing)
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):  # answers 500 with the secret it was sent
        def do_GET(self) -> None:  # noqa: N802
            text = f"denied token {self.headers.get('Authorization')}".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x"
    graph = flow(node("A", "http", method="GET", url=url,
                      headers={"Authorization": {"$secret": "API_TOKEN"}}),
                 node("B", "http", method="GET", url=url + "?t={{ params.x }}",
                      headers={"X-Token": {"$secret": "API_TOKEN"}}),
                 params={"x": {"default": "y"}})
    code, wf = await api("POST", "workflows", {"graph": graph})
    assert code == 201, wf
    _, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"]})
    workers.start(1)
    final = wait_run(engine, started["run_id"], timeout=60)
    server.shutdown()
    assert final["nodes"]["A"]["state"] == "failed", final
    assert "***" in json.dumps(final["nodes"]["A"]["error"]), final  # sent, then masked
    answers = [json.dumps(final)]
    for path in (f"runs/{started['run_id']}", f"runs/{started['run_id']}/nodes/A/logs",
                 f"runs/{started['run_id']}/nodes/B/logs", f"workflows/{wf['workflow_id']}",
                 "runs", "secrets", "audit"):
        answers.append(json.dumps((await api("GET", path))[1]))
    assert all(value not in a for a in answers), [a for a in answers if value in a][:1]
    r = redis.Redis.from_url(settings.redis_url)
    for key in r.scan_iter():
        kind = r.type(key).decode()
        dump = {"string": lambda k: r.get(k), "hash": lambda k: r.hgetall(k),
                "list": lambda k: r.lrange(k, 0, -1), "set": lambda k: r.smembers(k),
                "zset": lambda k: r.zrange(k, 0, -1),
                "stream": lambda k: r.xrange(k)}.get(kind, lambda k: b"")(key)
        assert value.encode() not in repr(dump).encode(), key
    with psycopg.connect(database_url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")]
        for table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            assert not any(value in row[0] for row in rows), table

"""Issue #17 item 2 over REST: promotion with roles and a preview; the triggers of an
environment (a webhook, a schedule, a queue) run the version promoted there while the latest
saved version (the draft being edited) differs.
"""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
import redis
from nexusflow_server.webhooks import sign
from nftest import flow, node
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from tests.server.conftest import hub_users_config


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return hub_users_config(nf_config)


def _doc(label: str) -> dict:
    return flow(node("A", expression=f"'{label}:' + str(params.get('n', 0))"), name="shipped",
                params={"n": {"default": 0}})


async def _run_of(api, predicate, timeout: float = 60.0) -> dict:
    """Wait for a finished run that ``predicate`` accepts; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        code, body = await api("GET", "runs", user="root", params={"limit": "50"})
        for item in body["runs"]:
            if predicate(item) and item["status"] in ("succeeded", "failed"):
                code, run = await api("GET", f"runs/{item['run_id']}", user="root")
                return run
        await asyncio.sleep(0.25)
    raise AssertionError("no such run finished in time")


async def test_promotion_roles_preview_and_triggers(api, jp_fetch, nf_app, workers,
                                                     database_url, redis_url) -> None:
    from nexusflow_server.triggers import QueueConsumer, Scheduler

    code, _ = await api("POST", "envs", {"name": "prod"}, user="root")
    assert code == 201
    code, wf = await api("POST", "workflows", {"graph": _doc("v1")}, user="root")
    wid = wf["workflow_id"]
    code, v2 = await api("PUT", f"workflows/{wid}", {"graph": _doc("v2")}, user="root")
    assert v2["version"] == 2
    for user, role in (("dana", "owner"), ("rita", "runner")):
        await api("PUT", f"workflows/{wid}/roles/{user}", {"role": role}, user="root")
    await api("PUT", "envs/prod/roles/dana", {"role": "deployer"}, user="root")
    await api("PUT", "envs/prod/roles/rita", {"role": "runner"}, user="root")

    # only a deployer of prod promotes; a preview first
    code, err = await api("POST", f"workflows/{wid}/promote", {"version": 1, "env": "prod"},
                          user="rita")
    assert code == 403 and "deployer" in err["message"], err
    code, preview = await api("POST", f"workflows/{wid}/promote",
                              {"version": 1, "env": "prod", "dry_run": True}, user="dana")
    assert code == 200 and preview["dry_run"] and preview["from_version"] is None
    code, listed = await api("GET", f"workflows/{wid}/promotions", user="rita")
    assert code == 200 and listed["current"] == {}
    code, done = await api("POST", f"workflows/{wid}/promote",
                           {"version": 1, "env": "prod", "note": "go"}, user="dana")
    assert code == 200 and done["promotion"]["promoted_by"] == "dana", done
    code, err = await api("POST", f"workflows/{wid}/promote", {"version": 1, "env": "nowhere"},
                          user="root")
    assert code == 404 and "unknown environment" in err["message"]
    code, err = await api("POST", f"workflows/{wid}/promote", {"version": 9, "env": "prod"},
                          user="root")
    assert code == 404
    code, err = await api("POST", f"workflows/{wid}/promote", {"version": 1, "env": "Prod"},
                          user="root")
    assert code == 400 and err["pointer"] == "/env"
    # the draft moves on: version 3, never run by prod's triggers
    code, v3 = await api("PUT", f"workflows/{wid}", {"graph": _doc("draft")}, user="root")
    assert v3["version"] == 3

    # triggers of prod: a trigger of an environment names no version; deployers create them
    code, err = await api("POST", f"workflows/{wid}/webhooks", {"env": "prod", "version": 2},
                          user="root")
    assert code == 400 and err["pointer"] == "/version"
    code, err = await api("POST", f"workflows/{wid}/webhooks", {"env": "prod"}, user="rita")
    assert code == 403
    code, hook = await api("POST", f"workflows/{wid}/webhooks", {"env": "prod"}, user="root")
    assert code == 201 and hook["env"] == "prod", hook
    code, sched = await api("POST", f"workflows/{wid}/schedules",
                            {"cron": "0 0 1 1 *", "env": "prod", "inputs": {"n": 2}},
                            user="root")
    assert code == 201 and sched["env"] == "prod"
    code, queue = await api("POST", f"workflows/{wid}/queues",
                            {"stream": "promo-orders", "env": "prod"}, user="root")
    assert code == 201 and queue["env"] == "prod"
    workers.start(1)

    body = json.dumps({"n": 1}).encode()
    headers = {"webhook-id": "msg_promo_1", "webhook-timestamp": str(int(time.time())),
               "Content-Type": "application/json", "Authorization": ""}
    headers["webhook-signature"] = sign(hook["secret"], "msg_promo_1",
                                        int(headers["webhook-timestamp"]), body)
    try:
        resp = await jp_fetch("nexusflow", "hooks", hook["hook_id"], method="POST", body=body,
                              headers=headers)
        hooked = json.loads(resp.body)
    except HTTPClientError as exc:
        raise AssertionError(exc.response.body if exc.response else exc) from None
    run = await _run_of(api, lambda r: r["run_id"] == hooked["run_id"])
    assert run["env"] == "prod" and run["version"] == 1, run
    assert run["nodes"]["A"]["output"] == "v1:1"

    # the schedule: made due now, fired as the trigger loop fires it
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE nexusflow_schedules SET next_fire_at = now() - interval '1 second'"
                     " WHERE schedule_id = %s", (sched["schedule_id"],))
    engine = nf_app.engine()
    fired = await asyncio.to_thread(Scheduler(engine.pool, engine, "server-t").fire_due)
    assert len(fired) == 1
    run = await _run_of(api, lambda r: r["run_id"] == fired[0])
    assert run["env"] == "prod" and run["version"] == 1
    assert run["nodes"]["A"]["output"] == "v1:2"

    # promote version 2: the queue trigger's next message runs it
    code, _ = await api("POST", f"workflows/{wid}/promote", {"version": 2, "env": "prod"},
                        user="dana")
    assert code == 200
    redis.Redis.from_url(redis_url).xadd("promo-orders", {"payload": json.dumps({"n": 3})})
    consumer = QueueConsumer(nf_app.store(), engine, "server-t", 0.5)
    queued: list[str] = []
    for _ in range(40):
        queued += await asyncio.to_thread(consumer.poll)
        if queued:
            break
        await asyncio.sleep(0.25)
    run = await _run_of(api, lambda r: r["run_id"] in queued)
    assert run["env"] == "prod" and run["version"] == 2
    assert run["nodes"]["A"]["output"] == "v2:3"
    # a manual start in prod without a version runs the promoted one too
    code, started = await api("POST", "runs", {"workflow_id": wid, "env": "prod"}, user="rita")
    assert code == 201
    run = await _run_of(api, lambda r: r["run_id"] == started["run_id"])
    assert run["version"] == 2 and run["nodes"]["A"]["output"] == "v2:0"
    # history: who and when
    code, listed = await api("GET", f"workflows/{wid}/promotions", user="rita",
                             params={"env": "prod"})
    assert listed["current"] == {"prod": 2}
    assert [(h["version"], h["previous_version"], h["promoted_by"])
            for h in listed["history"]] == [(2, 1, "dana"), (1, None, "dana")]

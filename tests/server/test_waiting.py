"""The canvas's data for a node nobody can take: the server says it in the run's events and the
run JSON, within seconds, with no CLI or notebook watching."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from nftest import flow, node

WAITING = ("waiting: no live worker serves queue 'sandbox' "
           "(start `nexusflow worker --queues sandbox`)")


@pytest.fixture
def nf_config(nf_config):
    return {**nf_config, "waiting_poll_s": 0.2}


async def test_a_node_no_worker_serves_is_announced_to_canvases(api, jp_ws_fetch, engine,
                                                               workers, nf_app) -> None:
    from nexusflow_kernel.workers import live_workers

    await nf_app._start_jupyter_server_extension(nf_app.serverapp)  # its background loops
    await asyncio.wait_for(nf_app.ready.wait(), 30)
    workers.start(1)  # the default queue only
    end = time.monotonic() + 60
    while not live_workers(engine.settings, redis=engine.redis):
        assert time.monotonic() < end, "the worker did not start"
        await asyncio.sleep(0.1)
    graph = flow(node("A", expression="1"),
                 node("B", "code", language="python", source="output = 2"),
                 edges=[("A", "B")])
    _, wf = await api("POST", "workflows", {"graph": graph})
    _, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"]})
    run_id = started["run_id"]
    ws = await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events")
    began = time.monotonic()
    while True:  # A runs, B is queued on 'sandbox': the server says so
        event = json.loads(await asyncio.wait_for(ws.read_message(), 20))
        if event.get("waiting"):
            break
    ws.close()
    assert time.monotonic() - began < 15
    waits = {"kind": "worker", "queue": "sandbox", "message": WAITING}
    assert {k: event[k] for k in ("run", "node", "state", "waiting")} == {
        "run": run_id, "node": "B", "state": "queued", "waiting": waits}
    code, run = await api("GET", f"runs/{run_id}")
    assert code == 200 and run["nodes"]["B"]["waiting"] == waits
    assert "waiting" not in run["nodes"]["A"]
    await api("POST", f"runs/{run_id}/cancel")

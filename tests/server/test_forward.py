"""A Jupyter server whose extension forwards to the Nexus-Flow service (``service_url``).

The server opens no backend: the canvas's REST calls and event websockets go to the service
with the caller's token (here, outside a Hub, the configured service token), runs of a file send
the flow as this server reads it, and the live-document routes stay here.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nftest import flow, node


@pytest.fixture
def alice_token(tokens) -> str:
    return tokens("alice")


@pytest.fixture
def nf_config(service, alice_token) -> dict:
    return {"service_url": service.url, "service_token": alice_token, "local_workers": False}


async def test_the_canvas_api_is_forwarded_to_the_service(api, jp_ws_fetch, jp_root_dir,
                                                          nf_app, service, alice_token,
                                                          workers) -> None:
    assert nf_app.remote and nf_app._engine is None
    (jp_root_dir / "flows").mkdir()
    path = "flows/chain.nxflow"
    (jp_root_dir / path).write_text(json.dumps(flow(
        node("A", expression="3"), node("B", expression="inputs['A'] * 2"),
        edges=[("A", "B")], name="chain")))

    status, types = await api("GET", "node-types")
    assert status == 200 and any(t["type"] == "transform" for t in types["node_types"])
    status, live = await api("GET", "documents/live", params={"path": path})
    assert status == 200 and live["live"] is False  # served here: the file is here
    status, started = await api("POST", "runs", {"path": path, "inputs": {}})
    assert status == 201, started
    run_id = started["run_id"]
    socket = await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events")
    workers.start(1)
    states = []
    while True:
        msg = json.loads(await asyncio.wait_for(socket.read_message(), 30))
        states.append((msg.get("node"), msg["state"]))
        if msg.get("node") is None and msg["state"] in ("succeeded", "failed", "canceled"):
            break
    socket.close()
    assert (None, "succeeded") in states and ("B", "succeeded") in states

    status, run = await api("GET", f"runs/{run_id}")
    assert status == 200 and run["nodes"]["B"]["output"] == 6
    assert run["created_by"] == "alice" and run["source"] == path
    status, listed = await api("GET", "runs", params={"path": path})
    assert status == 200 and [r["run_id"] for r in listed["runs"]] == [run_id]
    # the file's workflow is alice's file at this server's real path
    with service.client(alice_token) as direct:
        real = str((jp_root_dir / path).resolve())
        assert [r["run_id"] for r in direct.get("runs", params={"file": real}).json()[
            "runs"]] == [run_id]
    # errors come back as the service gave them
    status, missing = await api("GET", "runs/00000000-0000-0000-0000-000000000000")
    assert status == 404 and missing["error"] == "NotFoundError"
    status, bad = await api("POST", "runs", {"path": "../escape.nxflow"})
    assert status == 400 and bad["pointer"] == "/path"
    status, _ = await api("DELETE", f"workflows/{run['workflow_id']}")
    assert status == 204
    # a websocket the service refuses is refused here with the same status
    with pytest.raises(Exception) as refused:
        await jp_ws_fetch("nexusflow", "api", "runs", run_id, "events")
    assert "404" in str(refused.value)


async def test_subflows_of_a_forwarded_run_come_with_the_flow(api, jp_root_dir, service,
                                                              alice_token, workers) -> None:
    """The service has no files: the forwarding server reads the sub-flows a flow calls (and
    theirs) and sends them along; they are filed for the file's owner, as the caller."""
    (jp_root_dir / "lib").mkdir()
    (jp_root_dir / "lib" / "inner.nxflow").write_text(json.dumps(flow(
        node("i", expression="params['x'] * 10"), name="inner")))
    (jp_root_dir / "lib" / "outer.nxflow").write_text(json.dumps(flow(
        {"id": "in", "type": "subflow",
         "config": {"flow": "lib/inner.nxflow", "inputs": {"x": "{{ params['x'] + 1 }}"}}},
        name="outer")))
    (jp_root_dir / "top.nxflow").write_text(json.dumps(flow(
        {"id": "S", "type": "subflow", "config": {"flow": "lib/outer.nxflow",
                                                  "inputs": {"x": 4}}}, name="top")))
    workers.start(1)
    status, started = await api("POST", "runs", {"path": "top.nxflow"})
    assert status == 201, started
    with service.client(alice_token) as direct:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            run = direct.get(f"runs/{started['run_id']}").json()
            if run["status"] in ("succeeded", "failed", "canceled"):
                break
            assert asyncio.get_running_loop().time() < deadline, run
            await asyncio.sleep(0.2)
        assert run["status"] == "succeeded", run
        assert run["nodes"]["S"]["output"] == {"in": {"i": 50}}
        child = direct.get(f"runs/{run['nodes']['S']['child_run']}").json()
        assert child["created_by"] == "alice" and child["source"] == "lib/outer.nxflow"
    # A missing sub-flow is named, with its node and field, by the service.
    (jp_root_dir / "top.nxflow").write_text(json.dumps(flow(
        {"id": "S", "type": "subflow", "config": {"flow": "lib/gone.nxflow"}}, name="top")))
    status, err = await api("POST", "runs", {"path": "top.nxflow"})
    assert status == 422 and err["pointer"] == "/nodes/0/config/flow", err
    assert "lib/gone.nxflow does not exist" in err["message"]

"""The debug loop through a server that forwards to the Nexus-Flow service: the flow file is
read here (a test's, a retry's), the debug notebook is written here with the node's context
from the service, everything else is the service's."""

from __future__ import annotations

import json

import nbformat
import pytest
from nftest import flow, node


@pytest.fixture
def alice_token(tokens) -> str:
    return tokens("alice")


@pytest.fixture
def nf_config(service, alice_token) -> dict:
    return {"service_url": service.url, "service_token": alice_token, "local_workers": False}


async def test_debug_loop_through_the_service(api, jp_root_dir, nf_app, engine, workers):
    import asyncio

    assert nf_app.remote
    workers.start(1)
    path = "f.nxflow"
    doc = flow(node("A", expression="4"), node("B", expression="inputs['A'] // 0"),
               edges=[("A", "B")], name="fwd")
    (jp_root_dir / path).write_text(json.dumps(doc))
    status, started = await api("POST", "runs", {"path": path})
    assert status == 201, started
    run_id = started["run_id"]
    for _ in range(300):
        status, run = await api("GET", f"runs/{run_id}")
        if run["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert run["status"] == "failed"
    status, ctx = await api("GET", f"runs/{run_id}/nodes/B/context")
    assert status == 200 and ctx["inputs"] == {"A": 4}
    status, made = await api("POST", f"runs/{run_id}/nodes/B/notebook", {"path": path})
    assert status == 201 and made["path"] == "f-B-debug.ipynb", made
    nb = nbformat.read(jp_root_dir / made["path"], as_version=4)
    assert "run.debug('B')" in nb.cells[1].source
    status, test = await api("POST", "tests", {"path": path, "node_id": "B",
                                               "inputs": {"A": 9}, "node": {
                                                   "id": "B", "type": "transform",
                                                   "config": {"expression": "inputs['A'] // 3"}}})
    assert status == 201 and test["output"] == 3, test
    doc["nodes"][1]["config"]["expression"] = "inputs['A'] // 2"
    (jp_root_dir / path).write_text(json.dumps(doc))
    status, done = await api("POST", f"runs/{run_id}/retry", {"update": True, "path": path})
    assert status == 202 and done["rerun"] == ["B"], done
    for _ in range(300):
        status, run = await api("GET", f"runs/{run_id}")
        if run["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert run["status"] == "succeeded" and run["nodes"]["B"]["output"] == 2

"""REST API: workflows and their versions, runs from stored versions and from files, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nftest
from nftest import flow, node, wait_run

REPO = Path(__file__).resolve().parents[2]


def diamond(n: int = 1) -> dict:
    """The diamond with a fixed A (a new ``n`` is a new version)."""
    return nftest.diamond(a=node("A", expression=f"{n} * 2"))


def test_extension_is_enabled_by_its_config_file() -> None:
    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(REPO / "server_ext" / "jupyter-config"))
    out = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", "list"],
                         env=env, capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "nexusflow_server" in text and "enabled" in text.split("nexusflow_server", 1)[1][:40]


async def test_workflow_versions_diff_rollback_delete(api) -> None:
    code, created = await api("POST", "workflows", {"graph": diamond(1), "name": "d"})
    assert code == 201, created
    wid = created["workflow_id"]
    assert created["version"] == 1 and created["name"] == "d"
    code, same = await api("PUT", f"workflows/{wid}", {"graph": diamond(1)})
    assert code == 200 and same["version"] == 1  # same graph: no new version
    code, v2 = await api("PUT", f"workflows/{wid}", {"graph": json.dumps(diamond(5))})
    assert code == 200 and v2["version"] == 2
    code, got = await api("GET", f"workflows/{wid}", params={"version": 1})
    assert code == 200 and got["graph"]["nodes"][0]["config"]["expression"] == "1 * 2"
    code, versions = await api("GET", f"workflows/{wid}/versions")
    assert [v["version"] for v in versions["versions"]] == [2, 1]
    code, diff = await api("GET", f"workflows/{wid}/diff", params={"from": 1, "to": 2})
    assert code == 200 and diff["nodes"]["changed"] == ["A"] and "5 * 2" in diff["text"]
    code, rolled = await api("POST", f"workflows/{wid}/rollback", {"version": 1})
    assert code == 200 and rolled["version"] == 3 and rolled["hash"] == created["hash"]
    code, listing = await api("GET", "workflows")
    assert [w["workflow_id"] for w in listing["workflows"]] == [wid]
    code, _ = await api("DELETE", f"workflows/{wid}")
    assert code == 204
    code, err = await api("GET", f"workflows/{wid}")
    assert code == 404 and err["error"] == "NotFoundError"


async def test_bad_input_is_4xx_naming_the_field_and_stores_nothing(api, nf_app) -> None:
    cyclic = flow(node("A", expression="1"), node("B", expression="2"),
                  edges=[("A", "B"), ("B", "A")])
    cases = [
        ("POST", "workflows", b"{not json", 400, None),
        ("POST", "workflows", json.dumps({"graph": 5}).encode(), 400, "/graph"),
        ("POST", "workflows", json.dumps({"name": "x"}).encode(), 400, "/graph"),
        ("POST", "workflows", json.dumps([1, 2]).encode(), 400, ""),
        ("POST", "workflows", json.dumps({"graph": cyclic}).encode(), 422, "/edges/"),
        ("POST", "workflows", json.dumps({"graph": {**diamond(), "nodes": [
            {"id": "A", "type": "os:system", "config": {}}], "edges": []}}).encode(), 422,
         "/nodes/0/type"),
        ("POST", "workflows", b"[" * 5000 + b"]" * 5000, 413, None),
        ("POST", "runs", json.dumps({"path": "x.nxflow", "workflow_id": "y"}).encode(), 400,
         "/path"),
        ("POST", "runs", json.dumps({"workflow_id": "not-a-uuid"}).encode(), 404, None),
        ("POST", "runs", json.dumps({"path": "../../etc/x.nxflow"}).encode(), 400, "/path"),
        ("POST", "runs", json.dumps({"path": "/etc/passwd"}).encode(), 400, "/path"),
        ("POST", "runs", json.dumps({"path": "a\u0000.nxflow"}).encode(), 400, "/path"),
        ("POST", "runs", json.dumps({"path": "missing.nxflow"}).encode(), 404, None),
        ("POST", "runs", json.dumps({"path": "x.nxflow", "inputs": []}).encode(), 400,
         "/inputs"),
        ("POST", "runs", json.dumps({"graph": flow(node("A", "noop"), params={"size": {
            "type": "string", "enum": ["small", "large"]}}), "inputs": {"size": "huge"}}).encode(),
         400, "/params/size"),  # a value outside the param's enum
        ("GET", "runs/00000000-0000-0000-0000-000000000000", None, 404, None),
        ("GET", "runs/nope", None, 404, None),
        ("GET", "runs", None, 400, "?limit"),
    ]
    for method, path, raw, status, pointer in cases:
        params = {"limit": "x"} if path == "runs" and method == "GET" else None
        code, body = await api(method, path, raw=raw, params=params)
        assert code == status, (path, raw[:80] if raw else raw, code, body)
        assert isinstance(body, dict) and body.get("error") and body.get("message"), body
        if pointer is not None:
            assert body.get("pointer", "").startswith(pointer), (pointer, body)
    code, body = await api("POST", "workflows", raw=b"graph=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415
    nf_app.max_request_bytes = 1000
    code, body = await api("POST", "workflows", {"graph": diamond(), "name": "x" * 2000})
    assert code == 413
    assert (await api("GET", "workflows"))[1] == {"workflows": []}
    assert (await api("GET", "runs"))[1] == {"runs": []}


async def test_runs_from_a_stored_version(api, engine, workers) -> None:
    workers.start(2)
    _, wf = await api("POST", "workflows", {"graph": diamond(3)})
    code, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"],
                                               "inputs": {"k": 1}})
    assert code == 201, started
    run_id = started["run_id"]
    final = wait_run(engine, run_id)
    assert final["status"] == "succeeded"
    code, run = await api("GET", f"runs/{run_id}")
    assert code == 200 and run == engine.get_run(run_id)
    assert run["nodes"]["C"]["output"] is False  # 6 > 10: C's true branch skipped
    assert run["nodes"]["D"]["output"] == 6 + 1
    code, logs = await api("GET", f"runs/{run_id}/nodes/D/logs")
    assert code == 200 and logs["attempts"][0]["attempt"] == 1
    code, out = await api("GET", f"runs/{run_id}/nodes/D/output")
    assert out["output"] == 7 and out["state"] == "succeeded"
    assert (await api("GET", f"runs/{run_id}/nodes/Z/logs"))[0] == 404
    code, listing = await api("GET", "runs", params={"workflow_id": wf["workflow_id"]})
    assert [r["run_id"] for r in listing["runs"]] == [run_id] and "nodes" not in listing["runs"][0]
    code, replay = await api("POST", f"runs/{run_id}/replay")
    assert code == 201 and replay["run_id"] != run_id
    assert wait_run(engine, replay["run_id"])["status"] == "succeeded"
    code, retry = await api("POST", f"runs/{run_id}/retry", {"from_node": "C"})
    assert code == 202 and retry["run_id"] == run_id, retry
    assert (await api("POST", f"runs/{run_id}/retry", {"from_node": "nope"}))[0] == 400
    assert wait_run(engine, run_id)["status"] == "succeeded"
    code, _ = await api("POST", f"runs/{run_id}/cancel")
    assert code in (202, 409)


async def test_run_from_a_file_path_and_filter_by_source(api, jp_root_dir, engine,
                                                         workers) -> None:
    workers.start(1)
    folder = jp_root_dir / "flows"
    folder.mkdir()
    (folder / "d.nxflow").write_text(json.dumps(diamond(2)))
    code, started = await api("POST", "runs", {"path": "flows/d.nxflow"})
    assert code == 201, started
    assert wait_run(engine, started["run_id"])["nodes"]["D"]["output"] == 2 * 2 + 1
    code, listing = await api("GET", "runs", params={"source": "flows/d.nxflow"})
    assert [r["run_id"] for r in listing["runs"]] == [started["run_id"]]
    assert listing["runs"][0]["source"] == "flows/d.nxflow"
    (folder / "bad.nxflow").write_text('{"schema": 1, "nodes": [')
    code, err = await api("POST", "runs", {"path": "flows/bad.nxflow"})
    assert code == 422 and err["error"] == "FlowSyntaxError"


async def test_node_type_catalog(api) -> None:
    code, body = await api("GET", "node-types")
    assert code == 200
    types = {t["type"]: t for t in body["node_types"]}
    assert {"transform", "condition", "http"} <= set(types)
    assert types["transform"]["config_schema"]["type"] == "object"

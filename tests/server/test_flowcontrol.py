"""REST for flow control: decisions, resume callbacks, pools, sub-flows filed by path."""

from __future__ import annotations

import json
import time

import pytest
from nftest import flow, node, wait_run
from tornado.httpclient import HTTPClientError


@pytest.fixture
def nf_config(nf_config):
    # As on a shared server: roles decide; only root administers.
    return {**nf_config, "default_role": "none", "admin_users": ["root"]}


def approval_doc(approvers=None) -> dict:
    ask = node("ask", "approval", message="Ship {{ params['what'] }}?")
    if approvers:
        ask["config"]["approvers"] = approvers
    return flow(ask, node("ship", expression="'shipped'"), node("stop", expression="'no'"),
                edges=[("ask", "ship", "approved"), ("ask", "stop", "rejected")],
                name="release")


def wait_waiting(engine, run_id: str, node_id: str, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        info = engine.get_run(run_id)["nodes"][node_id]
        if info["state"] == "waiting":
            return info
        time.sleep(0.1)
    raise AssertionError(f"{node_id} never waited: {engine.get_run(run_id)}")


async def start_stored(api, user: str, doc: dict, inputs: dict | None = None) -> str:
    code, wf = await api("POST", "workflows", {"graph": doc}, user=user)
    assert code == 201, wf
    code, started = await api("POST", "runs", {"workflow_id": wf["workflow_id"],
                                               "inputs": inputs or {}}, user=user)
    assert code == 201, started
    return started["run_id"]


async def test_decisions_over_rest(api, engine, workers) -> None:
    workers.start(1)
    run_id = await start_stored(api, "alice", approval_doc(), {"what": "v2"})
    wait_waiting(engine, run_id, "ask")
    code, run = await api("GET", f"runs/{run_id}", user="alice")
    assert run["nodes"]["ask"]["waiting"]["message"] == "Ship v2?"
    path = f"runs/{run_id}/nodes/ask/decision"
    assert (await api("POST", path, {"comment": "x"}, user="alice"))[0] == 400  # no 'approved'
    assert (await api("POST", path, {"approved": "yes"}, user="alice"))[0] == 400
    # carol has no role on alice's workflow: she cannot see it, let alone decide.
    assert (await api("POST", path, {"approved": True}, user="carol"))[0] == 404
    code, _ = await api("PUT", f"workflows/{engine.get_run(run_id)['workflow_id']}/roles/carol",
                        {"role": "viewer"}, user="alice")
    assert code == 200
    code, err = await api("POST", path, {"approved": True}, user="carol")
    assert code == 403 and "does not allow 'run'" in err["message"]
    code, done = await api("POST", path, {"approved": True, "comment": "go"}, user="alice")
    assert code == 200, done
    assert done["decision"]["decided_by"] == "alice" and done["decision"]["comment"] == "go"
    code, err = await api("POST", path, {"approved": False}, user="alice")
    assert code == 409 and "already decided: approved by alice" in err["message"]
    code, err = await api("POST", f"runs/{run_id}/nodes/ship/decision", {"approved": True},
                          user="alice")
    assert code in (404, 409) and code == 409
    assert (await api("POST", f"runs/{run_id}/nodes/nope/decision", {"approved": True},
                      user="alice"))[0] == 404
    run = wait_run(engine, run_id, timeout=30)
    assert run["nodes"]["ship"]["output"] == "shipped"
    assert run["nodes"]["stop"]["state"] == "skipped"
    code, audit = await api("GET", "audit", user="root", params={"action": "run.decision"})
    assert code == 200 and audit["entries"][0]["actor"] == "alice"


async def test_named_approvers_decide_whatever_their_role(api, engine, workers) -> None:
    workers.start(1)
    run_id = await start_stored(api, "alice", approval_doc(["dave", "group:ops"]),
                                {"what": "v3"})
    wait_waiting(engine, run_id, "ask")
    wid = engine.get_run(run_id)["workflow_id"]
    for user in ("dave", "erin"):
        await api("PUT", f"workflows/{wid}/roles/{user}", {"role": "viewer"}, user="alice")
    path = f"runs/{run_id}/nodes/ask/decision"
    code, err = await api("POST", path, {"approved": True}, user="erin")
    assert code == 403 and "approvers are dave, group:ops" in err["message"]
    code, err = await api("POST", path, {"approved": True}, user="alice")  # owner, not named
    assert code == 403
    code, done = await api("POST", path, {"approved": False}, user="dave")
    assert code == 200 and done["decision"]["approved"] is False
    assert wait_run(engine, run_id)["nodes"]["stop"]["output"] == "no"


async def test_resume_url(api, jp_fetch, engine, settings, workers, nf_app) -> None:
    from nexusflow_worker.jobs import Runtime

    workers.start(1)
    run_id = await start_stored(api, "alice", flow(
        {"id": "W", "type": "wait", "config": {"max_body_bytes": 200}},
        node("after", expression="inputs['W']['ok']"), edges=[("W", "after")]))
    wait_waiting(engine, run_id, "W")
    token = Runtime(settings).resume_token(run_id, "W")

    async def post(tok: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
        try:
            resp = await jp_fetch("nexusflow", "hooks", "resume", tok, method="POST", body=body,
                                  headers={"Content-Type": ctype})
            return resp.code, json.loads(resp.body)
        except HTTPClientError as err:
            try:
                return err.code, json.loads(err.response.body) if err.response else {}
            except ValueError:  # Jupyter's own HTML 404 page: no route matched
                return err.code, {}

    assert (await post("x" * 43, b"{}"))[0] == 404  # well formed, unknown
    assert (await post("a/b", b"{}"))[0] == 404
    assert (await post(token, b"ok=1", "application/x-www-form-urlencoded"))[0] == 415
    assert (await post(token, b'{"pad": "' + b"x" * 300 + b'"}'))[0] == 413
    assert (await post(token, b"{not json"))[0] == 400
    assert (await post(token, b""))[0] == 400
    assert engine.get_run(run_id)["nodes"]["W"]["state"] == "waiting"  # nothing half-done
    code, done = await post(token, b'{"ok": true}', "application/json; charset=utf-8")
    assert code == 200 and done == {"run_id": run_id, "node_id": "W", "status": "resumed"}
    assert (await post(token, b'{"ok": false}'))[0] == 404  # single use
    assert wait_run(engine, run_id)["nodes"]["after"]["output"] is True
    # Rate limited like the webhooks: a token that keeps being tried is told to wait.
    codes = [(await post("y" * 43, b"{}"))[0] for _ in range(35)]
    assert codes[0] == 404 and codes[-1] == 429


async def test_pools_over_rest(api, engine, workers) -> None:
    code, err = await api("PUT", "pools/api", {"size": 2}, user="alice")
    assert code == 403
    code, pool = await api("PUT", "pools/api", {"size": 2, "description": "partner"},
                           user="root")
    assert code == 200 and pool["size"] == 2 and pool["running"] == 0
    assert (await api("PUT", "pools/bad%20name", {"size": 1}, user="root"))[0] == 400
    assert (await api("PUT", "pools/api", {"size": -1}, user="root"))[0] == 400
    assert (await api("PUT", "pools/api", {}, user="root"))[0] == 400
    code, listing = await api("GET", "pools", user="alice")
    assert code == 200 and [p["name"] for p in listing["pools"]] == ["api"]
    doc = flow({**node("p", "sleep", seconds=0.2), "pool": "api"},
               {**node("q", "sleep", seconds=0.2), "pool": "missing"})
    code, wf = await api("POST", "workflows", {"graph": doc}, user="alice")
    code, err = await api("POST", "runs", {"workflow_id": wf["workflow_id"]}, user="alice")
    assert code == 422 and err["pointer"] == "/nodes/1/pool" and "'missing'" in err["message"]
    code, _ = await api("DELETE", "pools/api", user="root")
    assert code == 204
    assert (await api("GET", "pools/api", user="alice"))[0] == 404


async def test_subflows_by_path_follow_the_callers_role(api, nf_app, jp_root_dir, engine,
                                                        workers) -> None:
    workers.start(2)
    (jp_root_dir / "lib").mkdir()
    (jp_root_dir / "lib" / "child.nxflow").write_text(json.dumps(flow(
        node("c", expression="params['x'] + 1"), name="child")))
    (jp_root_dir / "parent.nxflow").write_text(json.dumps(flow(
        {"id": "S", "type": "subflow", "config": {"flow": "lib/child.nxflow",
                                                  "inputs": {"x": 41}}}, name="parent")))
    nf_app.file_owner = "alice"
    code, started = await api("POST", "runs", {"path": "parent.nxflow"}, user="alice")
    assert code == 201, started
    run = wait_run(engine, started["run_id"], timeout=60)
    assert run["status"] == "succeeded" and run["nodes"]["S"]["output"] == {"c": 42}
    child = engine.get_run(run["nodes"]["S"]["child_run"])
    assert child["created_by"] == "alice" and child["source"] == "lib/child.nxflow"
    code, kids = await api("GET", f"runs/{started['run_id']}/children", user="alice")
    assert code == 200 and kids["children"][0]["run_id"] == child["run_id"]
    # The child file is filed under alice's key, and she owns its workflow.
    child_wid = child["workflow_id"]
    assert (await api("GET", f"workflows/{child_wid}", user="alice"))[0] == 200
    # bob may run the parent, but the child changed and he is no editor of it: refused,
    # naming the sub-flow; nothing is stored.
    parent_wid = run["workflow_id"]
    await api("PUT", f"workflows/{parent_wid}/roles/bob", {"role": "runner"}, user="alice")
    await api("PUT", f"workflows/{child_wid}/roles/bob", {"role": "runner"}, user="alice")
    (jp_root_dir / "lib" / "child.nxflow").write_text(json.dumps(flow(
        node("c", expression="params['x'] + 2"), name="child")))
    before = len(engine.list_runs())
    code, err = await api("POST", "runs", {"path": "parent.nxflow"}, user="bob")
    assert code == 403 and "lib/child.nxflow differs from version 1" in err["message"]
    assert len(engine.list_runs()) == before
    # A missing sub-flow is a 422 naming the node and field.
    (jp_root_dir / "parent.nxflow").write_text(json.dumps(flow(
        {"id": "S", "type": "subflow", "config": {"flow": "lib/none.nxflow"}}, name="parent")))
    code, err = await api("POST", "runs", {"path": "parent.nxflow"}, user="alice")
    assert code == 422 and err["pointer"] == "/nodes/0/config/flow"
    assert "lib/none.nxflow does not exist in the server's root folder" in err["message"]

"""Issue #17 item 1 over REST and through the service: environments, their variables and
role grants; running in a restricted environment needs a role on it; a notebook's
``flow.run(env=...)`` through ``RemoteEngine``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nftest import AuthDigestEcho, flow, node
from traitlets.config import Config

from tests.server.conftest import hub_users_config


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return hub_users_config(nf_config)


async def _finished(api, run_id: str, user: str) -> dict:
    for _ in range(240):
        code, run = await api("GET", f"runs/{run_id}", user=user)
        assert code == 200, run
        if run["status"] in ("succeeded", "failed", "canceled"):
            return run
        await asyncio.sleep(0.25)
    raise AssertionError(f"run {run_id} did not finish: {run}")


async def test_environments_roles_and_runs(api, workers) -> None:
    ops = {"X-Test-Groups": "ops"}
    code, err = await api("POST", "envs", {"name": "prod"}, user="alice")
    assert code == 403 and "administrators" in err["message"]
    code, env = await api("POST", "envs", {"name": "prod", "description": "live"}, user="root")
    assert code == 201 and env["restricted"] is True, env
    code, err = await api("POST", "envs", {"name": "prod"}, user="root")
    assert code == 400 and "exists already" in err["message"]
    code, err = await api("POST", "envs", {"name": "Prod!"}, user="root")
    assert code == 400 and err["pointer"] == "/name"
    code, _ = await api("PUT", "envs/prod/roles/group:ops", {"role": "deployer"}, user="root")
    assert code == 200
    # variables: a deployer (here through a group) sets them, a runner does not
    code, _ = await api("PUT", "envs/prod/vars/GREETING", {"value": "hi prod"}, user="bob",
                        headers=ops)
    assert code == 204
    code, _ = await api("PUT", "envs/dev/vars/GREETING", {"value": "hi dev"}, user="root")
    assert code == 204
    code, err = await api("PUT", "envs/prod/vars/GREETING", {"value": "x"}, user="alice")
    assert code == 403 and "deployer" in err["message"], err
    code, err = await api("PUT", "envs/prod/vars/1bad", {"value": "x"}, user="root")
    assert code == 400 and err["pointer"] == "/name"
    code, err = await api("PUT", "envs/nowhere/vars/A", {"value": "x"}, user="root")
    assert code == 404 and "unknown environment 'nowhere'" in err["message"]
    # an environment's own secret: its deployers', not its runners'
    code, _ = await api("PUT", "secrets/token", {"value": "prod-token-1"}, user="bob",
                        headers=ops, params={"env": "prod"})
    assert code == 204
    code, err = await api("PUT", "secrets/token", {"value": "x"}, user="alice",
                          params={"env": "prod"})
    assert code == 403
    code, listed = await api("GET", "secrets", user="root", params={"env": "prod"})
    assert [(s["name"], s["env"]) for s in listed["secrets"]] == [("token", "prod")]

    graph = flow(node("greet", "transform", expression="env['GREETING'] + '!'"),
                 name="greeter")
    code, wf = await api("POST", "workflows", {"graph": graph}, user="root")
    assert code == 201
    wid = wf["workflow_id"]
    code, _ = await api("PUT", f"workflows/{wid}/roles/alice", {"role": "runner"}, user="root")
    assert code == 200
    workers.start(1)
    # dev is open to every runner of the flow; prod needs a role on prod
    code, started = await api("POST", "runs", {"workflow_id": wid}, user="alice")
    assert code == 201
    dev_run = await _finished(api, started["run_id"], "alice")
    assert dev_run["env"] == "dev" and dev_run["nodes"]["greet"]["output"] == "hi dev!"
    code, err = await api("POST", "runs", {"workflow_id": wid, "env": "prod"}, user="alice")
    assert code == 403 and "runner role" in err["message"], err
    code, err = await api("POST", "runs", {"workflow_id": wid, "env": "nowhere"},
                          user="alice")
    assert code == 404 and "unknown environment 'nowhere'" in err["message"]
    code, _ = await api("PUT", "envs/prod/roles/alice", {"role": "runner"}, user="alice")
    assert code == 403
    code, _ = await api("PUT", "envs/prod/roles/alice", {"role": "runner"}, user="root")
    assert code == 200
    code, err = await api("POST", "runs", {"workflow_id": wid, "env": "prod"}, user="alice")
    assert code == 400 and "no version of workflow" in err["message"]  # none promoted yet
    code, _ = await api("POST", f"workflows/{wid}/promote", {"version": 1, "env": "prod"},
                        user="bob", headers=ops)
    assert code == 404  # a deployer of prod who may not read the flow
    code, _ = await api("PUT", f"workflows/{wid}/roles/bob", {"role": "viewer"}, user="root")
    code, _ = await api("POST", f"workflows/{wid}/promote", {"version": 1, "env": "prod"},
                        user="bob", headers=ops)
    assert code == 200
    code, started = await api("POST", "runs", {"workflow_id": wid, "env": "prod"},
                              user="alice")
    assert code == 201, started
    prod_run = await _finished(api, started["run_id"], "alice")
    assert prod_run["env"] == "prod" and prod_run["nodes"]["greet"]["output"] == "hi prod!"
    code, runs = await api("GET", "runs", user="alice")
    assert {r["run_id"]: r["env"] for r in runs["runs"]}[prod_run["run_id"]] == "prod"
    # a missing variable is named before the run starts
    code, _ = await api("POST", "envs", {"name": "stage", "restricted": False}, user="root")
    assert code == 201
    code, err = await api("POST", "runs", {"workflow_id": wid, "version": 1, "env": "stage"},
                          user="alice")
    assert code == 400 and "node 'greet' reads variable env['GREETING']" in err["message"]
    # without the role, no replay or retry in prod either
    code, _ = await api("DELETE", "envs/prod/roles/alice", user="root")
    assert code == 204
    for action in ("replay", "retry"):
        code, err = await api("POST", f"runs/{prod_run['run_id']}/{action}", {}, user="alice")
        assert code == 403 and "prod" in err["message"], (action, err)
    code, listed = await api("GET", "envs", user="alice")
    names = [e["name"] for e in listed["environments"]]
    assert names[0] == "dev" and {"prod", "stage"} <= set(names)
    code, err = await api("DELETE", "envs/dev", user="root")
    assert code == 400 and "cannot be deleted" in err["message"]
    code, _ = await api("DELETE", "envs/stage", user="root")
    assert code == 204


def test_a_notebook_runs_in_an_environment_through_the_service(service, tokens, keyed,
                                                               workers, tmp_path: Path) -> None:
    from nexusflow_kernel import Flow
    from nexusflow_kernel.remote import RemoteEngine
    from nexusflow_kernel.settings import Settings

    admin = Settings(service_url=service.url, service_token=tokens("root", admin=True),
                     data_dir=tmp_path / "none")
    envs = RemoteEngine(admin).environments
    envs.create("prodnb")
    envs.set_var("prodnb", "LIMIT", 7)
    alice = Settings(service_url=service.url, service_token=tokens("alice"),
                     data_dir=tmp_path / "none")
    workers.start(1)
    f = Flow("env-notebook")
    f.transform("A", "env['LIMIT'] * 6")
    with pytest.raises(Exception, match="runner role"):
        f.run(settings=alice, env="prodnb", progress=False, timeout=60)
    envs.grant("prodnb", "alice", "runner")
    run = f.run(settings=alice, env="prodnb", progress=False, timeout=60)
    assert run.status == "succeeded" and run.outputs["A"] == 42
    assert RemoteEngine(alice).get_run(run.id)["env"] == "prodnb"


async def test_node_tests_run_in_an_environment(api, workers) -> None:
    """POST /tests with "env": the node gets that environment's variables and secrets (a
    group-scoped one only for a user of the group, as in their run); a restricted environment
    needs a role on it, an unknown one is named; without "env", dev."""
    import hashlib
    import threading
    from http.server import ThreadingHTTPServer

    ops = {"X-Test-Groups": "ops"}
    assert (await api("POST", "envs", {"name": "prodt"}, user="root"))[0] == 201
    for env, value in (("dev", "eu-dev"), ("prodt", "eu-prod")):
        code, _ = await api("PUT", f"envs/{env}/vars/REGION", {"value": value}, user="root")
        assert code == 204
    code, _ = await api("PUT", "secrets/opskey", {"value": "Bearer ops-4444", "groups": ["ops"]},
                        user="root", params={"env": "prodt"})
    assert code == 204
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthDigestEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    region = {"id": "R", "type": "transform", "config": {"expression": "env['REGION']"}}
    call = {"id": "C", "type": "http", "config": {
        "url": f"http://127.0.0.1:{server.server_port}/",
        "headers": {"Authorization": {"$secret": "opskey"}}}}
    workers.start(1)
    try:
        code, test = await api("POST", "tests", {"node_id": "R", "node": region}, user="alice")
        assert code == 201 and test["output"] == "eu-dev" and test["env"] == "dev", test
        body = {"node_id": "R", "node": region, "env": "prodt"}
        code, err = await api("POST", "tests", body, user="alice")
        assert code == 403 and "runner role" in err["message"], err
        code, err = await api("POST", "tests", {**body, "env": "nowhere"}, user="alice")
        assert code == 404 and "unknown environment 'nowhere'" in err["message"], err
        for user in ("alice", "bob"):
            code, _ = await api("PUT", f"envs/prodt/roles/{user}", {"role": "runner"},
                                user="root")
            assert code == 200
        code, test = await api("POST", "tests", body, user="alice")
        assert code == 201 and test["output"] == "eu-prod" and test["env"] == "prodt", test
        # the group-scoped secret: bob of ops reads it, alice (no group) does not
        body = {"node_id": "C", "node": call, "env": "prodt"}
        code, test = await api("POST", "tests", body, user="bob", headers=ops)
        sha = hashlib.sha256(b"Bearer ops-4444").hexdigest()[:12]
        assert code == 201 and test["status"] == "succeeded", test
        assert test["output"]["json"] == {"sha": sha}
        code, test = await api("POST", "tests", body, user="alice")
        assert code == 201 and test["status"] == "failed", test
        assert "scoped to group(s) ops; the test's user 'alice' is not in" in test["error"]
    finally:
        server.shutdown()

"""The Nexus-Flow service without a Hub (``--auth token``): tokens, roles, and its clients.

The service runs in a thread of the test (the same ``NexusFlowService`` that ``nexusflow
server`` runs); workers are real processes. Its clients: the kernel's ``RemoteEngine`` (what
``Flow.run`` and ``Run`` use with ``NEXUSFLOW_SERVICE_URL``), the ``nexusflow`` CLI in a
process whose environment has no backend at all, and a Jupyter server whose extension forwards
to the service (``NexusFlow.service_url``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nftest import flow, node


def test_the_service_answers_only_valid_tokens(service, tokens) -> None:
    alice = tokens("alice")
    expired = tokens("alice", expires_in=timedelta(seconds=-1))
    with service.client(None) as anon:
        missing = anon.get("workflows")
        assert missing.status_code == 401, missing.text
        assert "token is required" in missing.json()["message"]
        for header in ("token nfs_forged", "Bearer " + alice[:-2] + "xx", "token " + expired,
                       "Basic " + alice):
            refused = anon.get("workflows", headers={"Authorization": header})
            assert refused.status_code == 401, (header, refused.text)
        assert anon.post("runs", json={"workflow_id": "x"}).status_code == 401
    with service.client(alice) as client:
        assert client.get("workflows").json() == {"workflows": []}
        assert client.get("workers").json()["workers"] == 0
        # The service has no files: a path is refused, saying what to send instead.
        path_run = client.post("runs", json={"path": "flows/a.nxflow"})
        assert path_run.status_code == 400 and "'graph'" in path_run.json()["message"]
        assert client.get("documents/live", params={"path": "a.nxflow"}).status_code == 404


def test_roles_and_group_grants_at_the_service(service, tokens) -> None:
    alice = service.client(tokens("alice", groups=["staff"]))
    bob = service.client(tokens("bob", groups=["staff"]))
    admin = service.client(tokens("root", admin=True))
    with alice, bob, admin:
        made = alice.post("workflows", json={"graph": flow(node("A", "noop"), name="mine")})
        assert made.status_code == 201, made.text
        wid = made.json()["workflow_id"]
        assert bob.get(f"workflows/{wid}").status_code == 404  # unshared: hidden
        assert bob.post("runs", json={"workflow_id": wid}).status_code == 404
        assert alice.put(f"workflows/{wid}/roles/group:staff",
                         json={"role": "viewer"}).status_code == 200
        assert bob.get(f"workflows/{wid}").status_code == 200
        refused = bob.post("runs", json={"workflow_id": wid})
        assert refused.status_code == 403, refused.text  # a viewer may not run it
        assert bob.put(f"workflows/{wid}", json={"graph": flow(node("B", "noop"))}
                       ).status_code == 403
        assert bob.get("audit").status_code == 403
        entries = admin.get("audit", params={"actor": "alice"}).json()["entries"]
        assert {e["action"] for e in entries} >= {"workflow.create", "role.grant"}


def test_a_flow_sent_whole_is_filed_per_user_and_file(service, tokens) -> None:
    alice = service.client(tokens("alice"))
    bob = service.client(tokens("bob"))
    graph = flow(node("A", "noop", value=1), name="report")
    with alice, bob:
        first = alice.post("runs", json={"graph": graph, "source": "flows/report.nxflow",
                                         "file": "/home/jovyan/flows/report.nxflow"})
        assert first.status_code == 201, first.text
        again = alice.post("runs", json={"graph": json.dumps(graph),
                                         "file": "/home/jovyan/flows/report.nxflow"})
        head = [alice.get(f"runs/{r.json()['run_id']}").json() for r in (first, again)]
        assert head[0]["workflow_id"] == head[1]["workflow_id"]
        # bob sends the same path: his own file, his own workflow (the key holds the user)
        his = bob.post("runs", json={"graph": graph, "file": "/home/jovyan/flows/report.nxflow"})
        assert his.status_code == 201, his.text
        assert bob.get(f"runs/{his.json()['run_id']}").json()["workflow_id"] != \
            head[0]["workflow_id"]
        # ... and cannot claim alice's by naming her as the file's owner without her token
        claimed = bob.post("runs", json={"graph": graph, "file": "/home/jovyan/flows/x.nxflow"},
                           headers={"X-NexusFlow-Server-Token": "nfs_forged"})
        assert claimed.status_code == 401
        listed = alice.get("runs", params={"file": "/home/jovyan/flows/report.nxflow"}).json()
        assert {r["run_id"] for r in listed["runs"]} == {first.json()["run_id"],
                                                         again.json()["run_id"]}
        bad = alice.post("runs", json={"graph": graph, "file": "flows/relative.nxflow"})
        assert bad.status_code == 400 and bad.json()["pointer"] == "/file"
        broken = alice.post("runs", json={"graph": flow(node("A", "nope"))})
        assert broken.status_code == 422 and broken.json()["pointer"].startswith("/nodes/0")


def test_notebooks_and_the_cli_reach_runs_through_the_service(service, tokens, keyed, workers,
                                                              tmp_path: Path) -> None:
    from nexusflow_kernel import Flow, Run, RunFailed
    from nexusflow_kernel.remote import RemoteEngine
    from nexusflow_kernel.settings import Settings

    alice = tokens("alice")
    remote = Settings(service_url=service.url, service_token=alice, data_dir=tmp_path / "none")
    workers.start(1)
    f = Flow("remote-demo", params={"n": {"type": "integer", "default": 2}})
    a = f.transform("A", "params['n'] * 10")
    a >> f.transform("B", "inputs['A'] + 1")
    run = f.run(inputs={"n": 4}, settings=remote, timeout=60, progress=False)
    assert isinstance(run.engine, RemoteEngine)
    assert run.status == "succeeded" and run.outputs["B"] == 41
    assert run.attempts("B")[0]["status"] == "succeeded"
    assert [e["state"] for _, e in run.events() if e.get("node") == "B"][-1] == "succeeded"
    assert Run.attach(run.id, settings=remote).outputs.to_dict() == {"A": 40, "B": 41}
    bad = Flow("fails")
    bad.transform("X", "1 / 0")
    with pytest.raises(RunFailed, match="X"):
        bad.run(settings=remote, timeout=60, progress=False)
    with pytest.raises(Exception, match="holds no database"):
        f.run(settings=remote, workers=2)
    with pytest.raises(Exception, match="refused the token"):
        f.run(settings=replace(remote, service_token="nfs_forged"), progress=False)

    # The CLI in a process that knows only the service's URL and a token.
    path = tmp_path / "cli.nxflow"
    path.write_text(json.dumps(flow(node("C", expression="21 * 2"), name="cli")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUSFLOW_",
                                                                     "JUPYTERHUB_"))}
    env.update(NEXUSFLOW_SERVICE_URL=service.url, NEXUSFLOW_SERVICE_TOKEN=alice,
               NEXUSFLOW_DATA_DIR=str(tmp_path / "cli-data"))
    out = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "run", str(path),
                          "--json", "--timeout", "60"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["nodes"]["C"]["output"] == 42 and result["created_by"] == "alice"
    listed = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "runs", "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result["run_id"] in listed.stdout, listed.stderr
    def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60, **kw)

    made = cli("secrets", "set", "CLI_SECRET", "--group", "staff", input="s3cret-value\n")
    assert made.returncode != 0 and "own groups" in made.stderr  # alice is in no group
    assert cli("secrets", "set", "CLI_SECRET", input="s3cret-value\n").returncode == 0
    shown = cli("secrets", "list", "--json")
    assert "CLI_SECRET" in shown.stdout and "s3cret-value" not in shown.stdout
    assert cli("secrets", "delete", "CLI_SECRET").returncode == 0
    gone = cli("secrets", "delete", "CLI_SECRET")
    assert gone.returncode == 2 and "no secret" in gone.stderr
    # nothing of the backends was started or written by those clients
    assert not (tmp_path / "cli-data").exists() and not (tmp_path / "none").exists()

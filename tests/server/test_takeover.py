"""Issue #13, finding 2: nobody takes over another user's workflow by reusing a file path.

A run started from a path is filed under the workflow of *that file*: the key names whose file
it is (the server's owner, as on a JupyterHub every user has their own server and root) and
its absolute path. An existing workflow is bound only when the caller's role allows it (runner
for an unchanged flow, editor for a new version); otherwise 403. A deleted workflow's key is
released and its history stays with it: the next run of the path files a new workflow.

The server here plays both users' servers in turn: ``nf_app.file_owner`` is what
``JUPYTERHUB_USER`` gives a single-user server on a Hub; every Hub user's root is the same
folder (``/home/jovyan`` on Kubernetes), which is why the relative path alone is no key.
"""

from __future__ import annotations

import json

import pytest
from nftest import flow, node, wait_run

PATH = "flows/report.nxflow"


@pytest.fixture
def nf_config(nf_config):
    # As on a Hub: a workflow is private to its owner until shared.
    return {**nf_config, "default_role": "none", "admin_users": ["root"]}


def report(tag: str) -> dict:
    return flow(node("A", expression=f"'{tag}'"), name="report")


def write(root, tag: str) -> None:
    folder = root / "flows"
    folder.mkdir(exist_ok=True)
    (folder / "report.nxflow").write_text(json.dumps(report(tag)))


async def run_path(api, user: str, path: str = PATH) -> tuple[int, dict]:
    return await api("POST", "runs", {"path": path}, user=user)


async def workflow_of(api, user: str, run_id: str) -> str:
    code, run = await api("GET", f"runs/{run_id}", user=user)
    assert code == 200, run
    return run["workflow_id"]


async def test_same_relative_path_in_another_users_root_is_another_workflow(
        api, nf_app, jp_root_dir, engine, workers) -> None:
    workers.start(1)
    # alice's server: her flows/report.nxflow, a webhook on its workflow.
    nf_app.file_owner = "alice"
    write(jp_root_dir, "alice")
    code, first = await run_path(api, "alice")
    assert code == 201, first
    wid = await workflow_of(api, "alice", first["run_id"])
    code, hook = await api("POST", f"workflows/{wid}/webhooks", {}, user="alice")
    assert code == 201, hook

    # bob's server: his own file at the same relative path (the same root folder name).
    nf_app.file_owner = "bob"
    write(jp_root_dir, "bob")
    code, bobs = await run_path(api, "bob")
    assert code == 201, bobs
    bob_wid = await workflow_of(api, "bob", bobs["run_id"])
    assert bob_wid != wid  # was: version 2 of alice's workflow
    assert wait_run(engine, bobs["run_id"])["nodes"]["A"]["output"] == "bob"

    # alice's workflow is untouched: one version, her graph; her next path run runs hers.
    code, versions = await api("GET", f"workflows/{wid}/versions", user="alice")
    assert [v["version"] for v in versions["versions"]] == [1], versions
    assert (await api("GET", f"workflows/{wid}", user="bob"))[0] == 404
    nf_app.file_owner = "alice"
    write(jp_root_dir, "alice")
    code, again = await run_path(api, "alice")
    assert code == 201 and await workflow_of(api, "alice", again["run_id"]) == wid
    assert wait_run(engine, again["run_id"])["nodes"]["A"]["output"] == "alice"
    latest = engine.get_workflow(wid)
    assert latest["version"] == 1 and latest["graph"] == report("alice")

    # Each canvas lists the runs of its own file (the labextension asks ?path=).
    code, mine = await api("GET", "runs", params={"path": PATH}, user="alice")
    assert code == 200
    assert {r["run_id"] for r in mine["runs"]} == {first["run_id"], again["run_id"]}


async def test_a_shared_server_binds_a_file_only_within_the_callers_role(
        api, nf_app, jp_root_dir) -> None:
    nf_app.file_owner = "alice"
    write(jp_root_dir, "alice")
    code, first = await run_path(api, "alice")
    assert code == 201, first
    wid = await workflow_of(api, "alice", first["run_id"])

    # bob reaches alice's server (a Hub share) and changes her file: no role, no run.
    write(jp_root_dir, "bob")
    code, err = await run_path(api, "bob")
    assert code == 403, err
    assert "alice" in err["message"] or wid in err["message"], err
    assert "role" in err["message"], err
    # unchanged, still refused: he may not even run it.
    write(jp_root_dir, "alice")
    assert (await run_path(api, "bob"))[0] == 403

    # As runner he may run her unchanged flow, not save his change as a new version.
    assert (await api("PUT", f"workflows/{wid}/roles/bob", {"role": "runner"},
                      user="alice"))[0] == 200
    code, ran = await run_path(api, "bob")
    assert code == 201, ran
    assert await workflow_of(api, "bob", ran["run_id"]) == wid
    write(jp_root_dir, "bob")
    code, err = await run_path(api, "bob")
    assert code == 403 and "editor" in err["message"], err
    code, versions = await api("GET", f"workflows/{wid}/versions", user="alice")
    assert [v["version"] for v in versions["versions"]] == [1]

    # As editor he may.
    assert (await api("PUT", f"workflows/{wid}/roles/bob", {"role": "editor"},
                      user="alice"))[0] == 200
    code, edited = await run_path(api, "bob")
    assert code == 201, edited
    code, versions = await api("GET", f"workflows/{wid}/versions", user="alice")
    assert [v["version"] for v in versions["versions"]] == [2, 1]


async def test_a_deleted_workflows_history_never_goes_to_the_next_runner(
        api, nf_app, jp_root_dir, engine) -> None:
    nf_app.file_owner = "alice"
    write(jp_root_dir, "alice")
    code, first = await run_path(api, "alice")
    assert code == 201, first
    old = await workflow_of(api, "alice", first["run_id"])
    assert (await api("DELETE", f"workflows/{old}", user="alice"))[0] == 204

    # bob, on alice's (shared) server, runs the path: a new workflow, not the old one back.
    write(jp_root_dir, "bob")
    code, bobs = await run_path(api, "bob")
    assert code == 201, bobs
    new = await workflow_of(api, "bob", bobs["run_id"])
    assert new != old
    code, versions = await api("GET", f"workflows/{new}/versions", user="bob")
    assert [v["version"] for v in versions["versions"]] == [1], versions
    assert (await api("GET", f"workflows/{old}", user="bob"))[0] == 404
    assert (await api("GET", f"workflows/{old}/versions", user="bob"))[0] == 404
    assert (await api("GET", f"runs/{first['run_id']}", user="bob"))[0] == 404
    code, listed = await api("GET", "runs", params={"workflow_id": old}, user="bob")
    assert listed == {"runs": []}, listed
    code, listed = await api("GET", "runs", params={"path": PATH}, user="bob")
    assert [r["run_id"] for r in listed["runs"]] == [bobs["run_id"]]
    # Nothing can start the deleted workflow again, by id or by a trigger.
    from nexusflow_kernel.errors import NotFoundError

    with pytest.raises(NotFoundError):
        engine.start_run(workflow_id=old)
    with pytest.raises(NotFoundError):
        engine.start_run(workflow_id=old, version=1)
    with pytest.raises(NotFoundError):
        engine.replay_run(first["run_id"])
    # alice's old runs and versions stay with the deleted record (admins can still audit).
    with engine.pool.connection() as conn:
        rows = conn.execute("SELECT workflow_id FROM executions WHERE id=%s",
                            (first["run_id"],)).fetchall()
    assert [str(r["workflow_id"]) for r in rows] == [old]


async def test_the_kernel_files_ad_hoc_flows_per_local_user(engine, monkeypatch) -> None:
    """Notebook and CLI runs (no server) are filed under the local user too."""
    graph = flow(node("A", expression="1"), name="nightly")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    a = engine.get_run(engine.start_run(graph))["workflow_id"]
    assert engine.get_run(engine.start_run(graph))["workflow_id"] == a
    monkeypatch.setenv("JUPYTERHUB_USER", "bob")
    b = engine.get_run(engine.start_run(flow(node("A", expression="2"),
                                             name="nightly")))["workflow_id"]
    assert b != a
    assert [v["version"] for v in engine.list_versions(a)] == [1]

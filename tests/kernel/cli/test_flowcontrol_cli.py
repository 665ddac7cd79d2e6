"""``nexusflow approve|reject`` and ``nexusflow pools`` on real backends."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from nftest import flow, node, settings_env, wait_run

ROOT = Path(__file__).resolve().parents[3]


def cli(settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_approve_from_the_command_line(engine, workers, settings) -> None:
    workers.start(1)
    doc = flow(node("ask", "approval", message="Deploy?"), node("go", "noop", value=1),
               edges=[("ask", "go", "approved")])
    run_id = engine.start_run(doc)
    deadline = time.monotonic() + 30
    while engine.get_run(run_id)["nodes"]["ask"]["state"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shown = cli(settings, "show", run_id)
    assert shown.returncode == 0
    assert "ask: waits for a decision (anyone with the runner role): Deploy?" in shown.stdout
    done = cli(settings, "approve", run_id, "ask", "-m", "looks good", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["comment"] == "looks good"
    assert wait_run(engine, run_id)["nodes"]["go"]["output"] == 1
    again = cli(settings, "reject", run_id, "ask")
    assert again.returncode == 2 and "already decided: approved by" in again.stderr


def test_pools_from_the_command_line(engine, settings) -> None:
    made = cli(settings, "pools", "set", "api", "3", "-d", "partner API")
    assert made.returncode == 0, made.stderr
    assert "pool api: size 3, 0 running, 0 waiting" in made.stdout
    listed = json.loads(cli(settings, "pools", "list", "--json").stdout)
    # the database is shared by the session: other tests' pools may be listed beside ours
    assert [(p["size"], p["description"]) for p in listed if p["name"] == "api"] == [
        (3, "partner API")]
    bad = cli(settings, "pools", "set", "no good", "1")
    assert bad.returncode == 2 and "pool name 'no good' is not allowed" in bad.stderr
    assert cli(settings, "pools", "delete", "api").returncode == 0
    missing = cli(settings, "pools", "delete", "api")
    assert missing.returncode == 2 and "no pool 'api'" in missing.stderr


def test_validate_checks_the_subflow_files_without_a_database(tmp_path) -> None:
    from nftest import flow

    def write(name: str, *nodes: dict) -> None:
        (tmp_path / name).write_text(json.dumps(flow(*nodes, name=name.split(".")[0])))

    def sub(id: str, ref: str) -> dict:
        return {"id": id, "type": "subflow", "config": {"flow": ref}}

    def validate(name: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "NEXUSFLOW_DATA_DIR": str(tmp_path / "data")}
        return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "validate", name],
                              env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)

    write("leaf.nxflow", node("x", expression="1"))
    write("mid.nxflow", sub("m", "leaf.nxflow"))
    write("top.nxflow", sub("t", "mid.nxflow"))
    ok = validate("top.nxflow")
    assert ok.returncode == 0, ok.stderr
    assert "2 sub-flow file(s) checked" in ok.stdout
    write("a.nxflow", sub("to_b", "b.nxflow"))
    write("b.nxflow", sub("to_a", "a.nxflow"))
    loop = validate("a.nxflow")
    assert loop.returncode == 2
    assert ("a.nxflow at /nodes/0/config/flow: node 'to_b' (subflow): in b.nxflow: node "
            "'to_a' (subflow): a.nxflow calls itself (a.nxflow -> b.nxflow -> a.nxflow)"
            ) in loop.stderr
    write("gone.nxflow", sub("g", "missing.nxflow"))
    missing = validate("gone.nxflow")
    assert missing.returncode == 2 and "/nodes/0/config/flow" in missing.stderr
    assert "missing.nxflow does not exist in the working directory" in missing.stderr

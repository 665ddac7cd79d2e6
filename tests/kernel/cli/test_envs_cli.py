"""``nexusflow envs`` and ``nexusflow run --env`` on the real backends (issue #17 item 1)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from nftest import flow, node, settings_env

ROOT = Path(__file__).resolve().parents[3]


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_envs_and_runs_in_them(settings, workers, tmp_path) -> None:
    env = f"prod_{uuid.uuid4().hex[:6]}"
    assert cli(settings, "envs", "create", env, "--description", "live").returncode == 0
    assert cli(settings, "envs", "set-var", env, "RATE", "3").returncode == 0
    assert cli(settings, "envs", "set-var", env, "LABEL", "live data").returncode == 0
    assert cli(settings, "envs", "grant", env, "group:ops", "deployer").returncode == 0
    listed = cli(settings, "envs", "list", "--json")
    row = {e["name"]: e for e in json.loads(listed.stdout)["environments"]}[env]
    assert row["vars"] == {"RATE": 3, "LABEL": "live data"}
    assert row["roles"] == [{"principal": "group:ops", "role": "deployer"}]
    path = tmp_path / "rate.nxflow"
    path.write_text(json.dumps(flow(node("R", expression="env['LABEL'] + ':' + "
                                             "str(env['RATE'] * 10)"))))
    workers.start(1)
    done = cli(settings, "run", str(path), "--env", env, "--json", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["env"] == env and result["nodes"]["R"]["output"] == "live data:30"
    shown = cli(settings, "show", result["run_id"])
    assert f"(environment {env})" in shown.stdout
    missing = cli(settings, "run", str(path), "--env", "dev", "--json", "--timeout", "60")
    assert missing.returncode != 0
    assert "node 'R' reads variable env['LABEL']" in missing.stderr
    unknown = cli(settings, "run", str(path), "--env", "nowhere")
    assert unknown.returncode != 0 and "unknown environment 'nowhere'" in unknown.stderr
    secret = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "secrets", "set",
                             "token", "--env", "nowhere"], input="x\n",
                            env=settings_env(settings), capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert secret.returncode != 0 and "unknown environment 'nowhere'" in secret.stderr
    assert cli(settings, "envs", "delete", env).returncode == 0


def test_promote_from_the_command_line(settings, engine) -> None:
    env = f"live_{uuid.uuid4().hex[:6]}"
    engine.environments.create(env)
    wid = engine.save_workflow(flow(node("A", expression="1"), name="cli-promo"))["workflow_id"]
    engine.save_workflow(flow(node("A", expression="2"), name="cli-promo"), workflow_id=wid)
    preview = cli(settings, "promote", wid, "--version", "2", "--env", env, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert "v- -> v2 (dry run: nothing promoted)" in preview.stdout
    done = cli(settings, "promote", wid, "--version", "1", "--env", env, "--note", "first")
    assert done.returncode == 0 and f"{env}: v- -> v1" in done.stdout
    moved = cli(settings, "promote", wid, "--version", "2", "--env", env)
    assert "nodes changed: A" in moved.stdout and '"expression": "2"' in moved.stdout
    listed = cli(settings, "promotions", wid, "--json")
    result = json.loads(listed.stdout)
    assert result["current"] == {env: 2}
    assert [h["version"] for h in result["history"]] == [2, 1]
    bad = cli(settings, "promote", wid, "--version", "1", "--env", "nowhere")
    assert bad.returncode != 0 and "unknown environment 'nowhere'" in bad.stderr

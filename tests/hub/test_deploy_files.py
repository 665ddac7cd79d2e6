"""The deployment files a team copies (issue #14, item 5) say what the tested Hub configuration
says: ``deploy/zero-to-jupyterhub/values.yaml`` (Helm values) registers the same service, runs
the same command with the credentials on the service only, and gives users' servers the same
environment (no credential) and token scopes as ``deploy/jupyterhub/jupyterhub_config.py``;
``deploy/systemd/nexusflow-worker.service`` runs the same worker command as an unprivileged
user in the docker group, and ``systemd-analyze verify`` accepts it."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BACKENDS = {"NEXUSFLOW_DATABASE_URL", "NEXUSFLOW_REDIS_URL", "NEXUSFLOW_SECRET_KEY"}
CREDENTIAL = re.compile(r"DATABASE_URL|REDIS_URL|SECRET_KEY|postgres(ql)?://|redis://", re.I)


def hub_config(monkeypatch: pytest.MonkeyPatch) -> Config:
    """Load deploy/jupyterhub/jupyterhub_config.py as JupyterHub does (``get_config``)."""
    for name in list(os.environ):
        if name.startswith(("NEXUSFLOW_", "JUPYTERHUB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEXUSFLOW_DATABASE_URL", "postgresql://nf:pw@db/nf")
    monkeypatch.setenv("NEXUSFLOW_REDIS_URL", "redis://nf:pw@redis:6379/0")
    monkeypatch.setenv("NEXUSFLOW_SECRET_KEY", "k" * 44)
    config = Config()
    path = DEPLOY / "jupyterhub" / "jupyterhub_config.py"
    exec(compile(path.read_text(), str(path), "exec"), {"get_config": lambda: config})
    return config


@pytest.fixture
def values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "zero-to-jupyterhub" / "values.yaml").read_text())


def test_helm_values_match_the_hub_configuration(values, monkeypatch) -> None:
    c = hub_config(monkeypatch)
    service = next(s for s in c.JupyterHub.services if s["name"] == "nexusflow")
    # the same service, port and command
    helm_service = values["hub"]["services"]["nexusflow"]
    assert helm_service["url"].rsplit(":", 1)[1] == service["url"].rsplit(":", 1)[1] == "10101"
    assert helm_service["display"] is service["display"] is False
    assert helm_service["oauth_no_confirm"] is service["oauth_no_confirm"] is True
    container = next(x for x in values["hub"]["extraContainers"] if x["name"] == "nexusflow")
    assert container["command"][1:] == service["command"][1:] == ["-m", "nexusflow_server.service"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_SERVICE_NAME"]["value"] == service["name"]
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == "/services/nexusflow/"
    assert env["NEXUSFLOW_SERVICE_PORT"]["value"] == "10101"
    # the credentials reach the service's container, from a Secret, never as literals
    assert BACKENDS <= set(env) and BACKENDS <= set(service["environment"])
    for name in BACKENDS | {"JUPYTERHUB_API_TOKEN", "NEXUSFLOW_METRICS_TOKEN"}:
        assert "secretKeyRef" in env[name]["valueFrom"] and "value" not in env[name], name
    for name, value in service["environment"].items():
        if name not in BACKENDS and name in env:
            assert env[name].get("value") == value, name  # the same policies
    assert env["NEXUSFLOW_ALLOW_PRIVATE_HTTP"]["value"] == "0"
    port = values["hub"]["service"]["extraPorts"][0]
    assert port["port"] == 10101 and port["targetPort"] == container["ports"][0]["name"]

    # users' servers: the same environment, the service's URL and no credential
    singleuser = values["singleuser"]
    spawner_env = c.Spawner.environment.get_value({})  # the config's .update(...)
    assert singleuser["extraEnv"].keys() == spawner_env.keys()
    assert singleuser["extraEnv"]["NEXUSFLOW_LOCAL_WORKERS"] == "0"
    assert singleuser["extraEnv"]["NEXUSFLOW_SERVICE_URL"].endswith("/services/nexusflow/")
    assert singleuser["extraEnv"]["NEXUSFLOW_SERVICE_URL"].startswith(helm_service["url"])
    assert not CREDENTIAL.search(yaml.safe_dump(singleuser))

    # identity: the same roles, custom scopes and token scopes (the extraConfig snippet run)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    for name, role in values["hub"]["loadRoles"].items():
        assert role["scopes"] == roles[name]["scopes"], name
        assert role.get("groups", []) == roles[name].get("groups", []), name
    snippet = Config()
    exec(compile(values["hub"]["extraConfig"]["nexusflow"], "extraConfig", "exec"), {"c": snippet})
    assert snippet.JupyterHub.custom_scopes == c.JupyterHub.custom_scopes
    assert snippet.Spawner.server_token_scopes == c.Spawner.server_token_scopes
    assert snippet.Spawner.oauth_client_allowed_scopes == c.Spawner.oauth_client_allowed_scopes


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / "systemd" / "nexusflow-worker.service")
    return parser


def test_the_systemd_unit_runs_the_hub_worker_command_unprivileged(monkeypatch) -> None:
    c = hub_config(monkeypatch)
    hub_worker = next(s for s in c.JupyterHub.services if s["name"] == "nexusflow-worker")
    unit = _unit()["Service"]
    assert unit["User"] not in ("root", "0") and unit["Group"] not in ("root", "0")
    assert unit["SupplementaryGroups"].split() == ["docker"]
    assert unit["NoNewPrivileges"] == "yes" and unit["KillMode"] == "mixed"
    argv = shlex.split(unit["ExecStart"])
    assert Path(argv[0]).name == "nexusflow" and argv[1] == "worker"
    # the Hub runs `python -m nexusflow_worker --processes N`: the same command, its options
    assert hub_worker["command"][1:3] == ["-m", "nexusflow_worker"]
    assert "--processes" in argv and "--processes" in hub_worker["command"]
    # the same environment names as the Hub's worker service, from a file only it reads
    env_file = unit["EnvironmentFile"]
    assert env_file.startswith("/etc/nexusflow/")
    example = (DEPLOY / "systemd" / "worker.env.example").read_text()
    names = {
        line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    assert BACKENDS | {"NEXUSFLOW_ALLOW_PRIVATE_HTTP"} == names
    assert set(hub_worker["environment"]) == names
    assert "NEXUSFLOW_WORKER_METRICS_PORT" in example
    # the worker command line is one the CLI accepts
    out = subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--metrics-port" in out.stdout, out.stderr


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on the unit (its ExecStart pointed at this environment's
    nexusflow, which verify requires to exist): no error, no unknown or ignored setting."""
    text = (DEPLOY / "systemd" / "nexusflow-worker.service").read_text()
    exe = Path(sys.executable).with_name("nexusflow")
    assert exe.exists()
    copy = tmp_path / "nexusflow-worker.service"
    copy.write_text(text.replace("/opt/nexusflow/bin/nexusflow", str(exe)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert not re.search(r"Unknown|ignoring|Failed", out.stderr), out.stderr

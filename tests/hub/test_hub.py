"""A real JupyterHub with two users sharing Nexus-Flow: roles, groups, scoped secrets, audit.

JupyterHub (PyPI) with configurable-http-proxy (npm, installed into tests/hub/node_modules from
tests/hub/package-lock.json), the dummy authenticator and the simple local-process spawner,
started with deploy/jupyterhub/jupyterhub_config.py, the configuration docs/jupyterhub.md describes.
Everything goes through the Hub's public URL and the Hub's auth: each user logs in with the
login form and asks the Hub for an API token, which their single-user server checks with the
Hub. A shared worker runs the flows of both users.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jupyterhub  # noqa: F401  (pinned in the test extra: a missing Hub fails, never skips)
import pytest
from nftest import WorkerPool, flow, node, settings_env

from nexusflow_kernel.procs import free_port

HERE = Path(__file__).parent
CONFIG = HERE.parents[1] / "deploy" / "jupyterhub" / "jupyterhub_config.py"
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
API = "nexusflow/api"

pytestmark = pytest.mark.timeout(300)


def _ensure_proxy() -> Path:
    """Install configurable-http-proxy from the lock file (once; npm's cache makes it quick)."""
    if not CHP.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install configurable-http-proxy for the Hub test")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
                       check=True, timeout=240, stdout=subprocess.DEVNULL)
    return CHP


def _wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


def _empty_tables(database_url: str) -> None:
    import psycopg

    from nexusflow_kernel.runstate.db import get_pool

    get_pool(database_url)  # migrated
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'nexusflow_migrations'")]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


class Hub:
    """A running JupyterHub: its public URL and a logged-in client per user."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self.password = password

    def login(self, user: str) -> httpx.Client:
        """Log in with the Hub's form, get a Hub API token, and return a client using it."""
        with httpx.Client(base_url=self.url, timeout=30) as browser:
            page = browser.get("/hub/login")
            assert page.status_code == 200, page.text[:300]
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
            form = {"username": user, "password": self.password}
            if xsrf:
                form["_xsrf"] = xsrf.group(1)
            done = browser.post("/hub/login", data=form)
            assert done.status_code == 302, (done.status_code, done.text[:300])
            headers = {"X-XSRFToken": browser.cookies.get("_xsrf", "")}
            made = browser.post(f"/hub/api/users/{user}/tokens", headers=headers,
                                json={"note": "nexusflow hub test", "expires_in": 3600})
            assert made.status_code == 201, made.text
            token = made.json()["token"]
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"token {token}"})

    def start_server(self, client: httpx.Client, user: str) -> None:
        started = client.post(f"/hub/api/users/{user}/server")
        assert started.status_code in (201, 202, 400), started.text  # 400: already running

    def wait_server(self, client: httpx.Client, user: str) -> None:
        def ready() -> bool:
            model = client.get(f"/hub/api/users/{user}").json()
            server = (model.get("servers") or {}).get("", {})
            return bool(server.get("ready")) and client.get(
                f"/user/{user}/{API}/openapi.json").status_code == 200

        _wait(f"{user}'s server", ready, 120, 0.5)


@pytest.fixture
def hub(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """Start JupyterHub with deploy/jupyterhub/jupyterhub_config.py; stop it and its servers after."""
    proxy = _ensure_proxy()
    _empty_tables(settings.database_url)
    state = Path(tempfile.mkdtemp(prefix="nf-hub-"))
    os.chmod(state, 0o755)
    password = secrets.token_urlsafe(12)
    port = free_port()
    # servers and workers must share one secrets key (the test's worker reads the environment)
    monkeypatch.setenv("NEXUSFLOW_SECRET_KEY", settings.secret_key or secrets.token_urlsafe(24))
    env = settings_env(settings)
    env.update({
        "NEXUSFLOW_HUB_DEMO": "1",
        "NEXUSFLOW_HUB_DEMO_PASSWORD": password,
        "NEXUSFLOW_HUB_STATE": str(state),
        "NEXUSFLOW_HUB_WORKERS": "0",  # the test runs the shared worker itself
        "NEXUSFLOW_HUB_PORT": str(port),
        "NEXUSFLOW_HUB_API_PORT": str(free_port()),
        "NEXUSFLOW_HUB_PROXY_API_PORT": str(free_port()),
        "PATH": os.pathsep.join([str(proxy.parent), str(Path(sys.executable).parent),
                                 env.get("PATH", "")]),
    })
    env.pop("JUPYTERHUB_API_TOKEN", None)
    log = open(state / "hub.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=state, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError("jupyterhub exited:\n" + _tail(state / "hub.log"))
            return httpx.get(url + "/hub/api/", timeout=2).status_code == 200

        _wait("the Hub", up, 60)
        hub = Hub(url, password)
        hub.env = env  # type: ignore[attr-defined]
        yield hub
    except BaseException:
        print(_tail(state / "hub.log"))
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the Hub stops the proxy and the servers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the Hub's session (proxy, single-user servers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _wait_run(client: httpx.Client, user: str, run_id: str, timeout: float = 60) -> dict:
    def final() -> dict | None:
        run = client.get(f"/user/{user}/{API}/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed", "canceled") else None

    return _wait(f"run {run_id}", final, timeout)


def test_two_hub_users_share_flows_roles_and_scoped_secrets(hub: Hub, settings) -> None:
    workers = WorkerPool(settings)
    alice, bob = hub.login("alice"), hub.login("bob")
    try:
        hub.start_server(alice, "alice")
        hub.start_server(bob, "bob")
        worker = workers.start(1)
        hub.wait_server(alice, "alice")
        hub.wait_server(bob, "bob")
        a, b = "/user/alice/" + API, "/user/bob/" + API

        # Each user reaches only their own server through the Hub.
        assert bob.get(f"/user/alice/{API}/workflows").status_code in (403, 404)

        # alice creates and runs a flow; bob cannot see it.
        report = flow(node("A", "noop", value=1), node("B", "noop", value=2),
                      edges=[("A", "B")], name="report")
        made = alice.post(f"{a}/workflows", json={"graph": report})
        assert made.status_code == 201, made.text
        wid = made.json()["workflow_id"]
        assert made.json()["created_by"] == "alice"
        started = alice.post(f"{a}/runs", json={"workflow_id": wid})
        assert started.status_code == 201, started.text
        run = _wait_run(alice, "alice", started.json()["run_id"])
        assert run["status"] == "succeeded", run
        assert run["created_by"] == "alice"
        assert wid not in [w["workflow_id"] for w in bob.get(f"{b}/workflows").json()[
            "workflows"]]
        assert bob.get(f"{b}/workflows/{wid}").status_code == 404
        assert bob.post(f"{b}/runs", json={"workflow_id": wid}).status_code == 404
        assert started.json()["run_id"] not in [r["run_id"] for r in bob.get(
            f"{b}/runs").json()["runs"]]

        # alice shares it with bob as runner: bob runs it, but cannot edit or share it.
        shared = alice.put(f"{a}/workflows/{wid}/roles/bob", json={"role": "runner"})
        assert shared.status_code == 200, shared.text
        assert wid in [w["workflow_id"] for w in bob.get(f"{b}/workflows").json()["workflows"]]
        bob_run = bob.post(f"{b}/runs", json={"workflow_id": wid})
        assert bob_run.status_code == 201, bob_run.text
        run = _wait_run(bob, "bob", bob_run.json()["run_id"])
        assert run["status"] == "succeeded", run
        assert run["created_by"] == "bob"
        edit = bob.put(f"{b}/workflows/{wid}", json={"graph": {**report, "name": "mine"}})
        assert edit.status_code == 403, edit.text
        assert bob.put(f"{b}/workflows/{wid}/roles/bob",
                       json={"role": "owner"}).status_code == 403
        # ... and alice sees bob's run of her flow.
        assert bob_run.json()["run_id"] in [r["run_id"] for r in alice.get(
            f"{a}/runs", params={"workflow_id": wid}).json()["runs"]]

        # A grant to a Hub group reaches its members: staff (alice, bob) may view.
        other = alice.post(f"{a}/workflows", json={"graph": flow(node("X", "noop"),
                                                                 name="staff-view")})
        oid = other.json()["workflow_id"]
        assert bob.get(f"{b}/workflows/{oid}").status_code == 404
        assert alice.put(f"{a}/workflows/{oid}/roles/group:staff",
                         json={"role": "viewer"}).status_code == 200
        assert bob.get(f"{b}/workflows/{oid}").status_code == 200
        assert bob.post(f"{b}/runs", json={"workflow_id": oid}).status_code == 403

        # A secret scoped to finance (alice is in it, bob is not).
        value = "fin-" + secrets.token_hex(8)
        put = alice.put(f"{a}/secrets/FIN_TOKEN", json={"value": value, "groups": ["finance"]})
        assert put.status_code == 204, put.text
        assert bob.put(f"{b}/secrets/FIN_TOKEN",
                       json={"value": "x", "groups": []}).status_code == 403
        assert bob.put(f"{b}/secrets/MINE", json={"value": "x", "groups": ["finance"]}
                       ).status_code == 403
        # bob lists only the secrets his runs may use: not finance's (issue #13, finding 7).
        assert "FIN_TOKEN" not in [s["name"] for s in bob.get(f"{b}/secrets").json()["secrets"]]
        listed = {s["name"]: s for s in alice.get(f"{a}/secrets").json()["secrets"]}
        assert listed["FIN_TOKEN"]["groups"] == ["finance"]
        payroll = alice.post(f"{a}/workflows", json={"graph": flow(
            node("pay", "noop", value={"$secret": "FIN_TOKEN"}), name="payroll")})
        pid = payroll.json()["workflow_id"]
        assert alice.put(f"{a}/workflows/{pid}/roles/bob",
                         json={"role": "runner"}).status_code == 200
        bobs = bob.post(f"{b}/runs", json={"workflow_id": pid}).json()["run_id"]
        refused = _wait_run(bob, "bob", bobs)
        assert refused["status"] == "failed", refused
        error = refused["nodes"]["pay"]["error"]
        assert "FIN_TOKEN" in error and "finance" in error and "'bob'" in error, error
        assert value not in json.dumps(refused)
        alices = alice.post(f"{a}/runs", json={"workflow_id": pid}).json()["run_id"]
        assert _wait_run(alice, "alice", alices)["status"] == "succeeded"

        # The audit log: admins only (alice holds custom:nexusflow:admin through her group).
        assert bob.get(f"{b}/audit").status_code == 403
        entries = alice.get(f"{a}/audit", params={"limit": 200}).json()["entries"]
        seen = {(e["actor"], e["action"], e["resource"]) for e in entries}
        assert ("alice", "workflow.create", f"workflow:{wid}") in seen
        assert ("alice", "role.grant", f"workflow:{wid}") in seen
        assert ("bob", "run.start", f"run:{bob_run.json()['run_id']}") in seen
        assert ("alice", "secret.set", "secret:FIN_TOKEN") in seen
        bob_only = alice.get(f"{a}/audit", params={"actor": "bob"}).json()["entries"]
        assert bob_only and {e["actor"] for e in bob_only} == {"bob"}

        from click.testing import CliRunner

        from nexusflow_kernel.cli.audit import audit

        out = CliRunner().invoke(audit, ["--json", "--action", "role.*"],
                                 env=settings_env(settings))
        assert out.exit_code == 0, out.output
        lines = [json.loads(line) for line in out.output.splitlines()]
        assert {(x["actor"], x["detail"]["principal"]) for x in lines} >= {
            ("alice", "bob"), ("alice", "group:staff")}
        assert worker.poll() is None
    finally:
        alice.close()
        bob.close()
        workers.stop()

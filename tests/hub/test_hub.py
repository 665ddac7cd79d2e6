"""A real JupyterHub with the Nexus-Flow service: roles, groups, scoped secrets, and attacks.

JupyterHub (PyPI) with configurable-http-proxy (npm, installed into tests/hub/node_modules from
tests/hub/package-lock.json), started from deploy/jupyterhub/jupyterhub_config.py itself (its
demo block: dummy logins, local processes). The Hub runs the Nexus-Flow service and one worker
process as managed services; they alone hold the backends' credentials (tests/hub/conftest.py
gives them a PostgreSQL and a Redis that need credentials). alice's and bob's servers run as
unprivileged uids, hold the service's URL and nothing else, and forward the canvas's API to
the service with each caller's token. Everything goes through the Hub's public URL (or, where
a user's own processes would, the service's internal URL) and the Hub's auth.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from conftest import API, Hub, wait_for
from nftest import flow, node

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def users(hub: Hub) -> Iterator[dict[str, httpx.Client]]:
    """alice and bob, logged in, their servers running."""
    clients = {name: hub.login(name) for name in ("alice", "bob")}
    try:
        for name, client in clients.items():
            hub.start_server(client, name)
        yield clients
    finally:
        for client in clients.values():
            client.close()


def _wait_run(client: httpx.Client, user: str, run_id: str, timeout: float = 90) -> dict:
    def final() -> dict | None:
        run = client.get(f"/user/{user}/{API}/runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(f"run {run_id}", final, timeout)


class Kernel:
    """A kernel of a user's server, driven over the Hub's proxy like a notebook would."""

    def __init__(self, hub: Hub, client: httpx.Client, user: str) -> None:
        import websocket

        made = client.post(f"/user/{user}/api/kernels", json={"name": "python3"})
        assert made.status_code == 201, made.text
        self.client, self.user, self.id = client, user, made.json()["id"]
        url = hub.url.replace("http", "ws", 1) + f"/user/{user}/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: token {client.token}"], timeout=300)

    def run(self, code: str, timeout: float = 300) -> str:
        """Execute ``code``; return what it printed, or fail with the kernel's error."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False}}))
        out, error, done = [], None, False
        end = time.monotonic() + timeout
        while not done:
            if time.monotonic() > end:
                raise AssertionError(f"the kernel did not answer within {timeout}s")
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif kind == "error":
                error = "\n".join(msg["content"]["traceback"])
            elif kind == "execute_reply":
                done = True
        if error is not None:
            raise AssertionError(f"the kernel code failed:\n{error}")
        return "".join(out)

    def close(self) -> None:
        self.ws.close()
        self.client.delete(f"/user/{self.user}/api/kernels/{self.id}")


def test_two_hub_users_share_flows_roles_and_scoped_secrets(hub: Hub, users) -> None:
    """The Hub issue's role tests, now through the users' servers to the service."""
    alice, bob = users["alice"], users["bob"]
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
                             env=hub.operator_env())
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert {(x["actor"], x["detail"]["principal"]) for x in lines} >= {
        ("alice", "bob"), ("alice", "group:staff")}


# ------------------------------------------------------------------------------ attacks

SCAN = r'''
import base64, json, os, stat
mask = base64.b64decode(MASK)
needles = [bytes(b ^ mask[i % len(mask)] for i, b in enumerate(base64.b64decode(x)))
           for x in MASKED]
longest = max(len(n) for n in needles)
found, read, denied = [], 0, 0

def scan(where, data):
    for i, needle in enumerate(needles):
        if needle in data:
            found.append([where, i])

scan("os.environ", "\0".join(f"{k}={v}" for k, v in os.environ.items()).encode())
server_env = open(f"/proc/{os.getppid()}/environ", "rb").read()
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as fh:
                scan(f"/proc/{pid}/{part}", fh.read())
            read += 1
        except OSError:
            denied += 1
files = 0
stack = ["/"]
while stack:
    folder = stack.pop()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        continue
    for entry in entries:
        try:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.path == "/dev":
                    stack.append("/dev/shm")
                elif entry.path not in ("/proc", "/sys"):
                    stack.append(entry.path)
                continue
            info = entry.stat()
            if not stat.S_ISREG(info.st_mode) or info.st_mtime < SINCE:
                continue
            with open(entry.path, "rb") as fh:
                tail = b""
                while chunk := fh.read(1 << 20):
                    scan(entry.path, tail + chunk)
                    tail = chunk[-longest:]
            files += 1
        except OSError:
            continue
attempts = {}
import psycopg
for user in ("nexusflow", "postgres", os.environ.get("USER") or "alice"):
    try:
        psycopg.connect(host="127.0.0.1", port=PG_PORT, user=user, dbname="nexusflow",
                        connect_timeout=5).close()
        attempts[f"postgres as {user}"] = "CONNECTED"
    except Exception as exc:
        attempts[f"postgres as {user}"] = str(exc).strip().splitlines()[-1]
import redis
for user, password in ((None, None), ("default", ""), ("nexusflow", "guess")):
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, username=user, password=password,
                         socket_timeout=5)
    try:
        client.ping()
        client.keys("*")
        attempts[f"redis as {user}"] = "CONNECTED"
    except Exception as exc:
        attempts[f"redis as {user}"] = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
print(json.dumps({"found": found, "proc_files_read": read, "proc_files_denied": denied,
                  "files_scanned": files, "uid": os.getuid(),
                  "env": sorted(k for k in os.environ if k.startswith("NEXUSFLOW_")),
                  "server_env": sorted(k.split(b"=")[0].decode() for k in
                                       server_env.split(b"\0") if k.startswith(b"NEXUSFLOW_")),
                  "attempts": attempts}))
'''


def test_users_hold_no_credentials_and_cannot_reach_the_backends(hub: Hub, users) -> None:
    """From alice's server and a kernel in it: no database URL, no Redis URL, no secrets key
    in any process environment or file it can read, and the backends refuse it."""
    alice = users["alice"]
    needles = [n.encode() for n in hub.backends.needles()]
    mask = secrets.token_bytes(32)
    masked = [base64.b64encode(bytes(b ^ mask[i % len(mask)] for i, b in enumerate(n))
                               ).decode() for n in needles]  # the cell holds none in clear
    code = (f"MASK = {base64.b64encode(mask).decode()!r}\nMASKED = {masked!r}\n"
            f"SINCE = {hub.backends.created - 5.0!r}\nPG_PORT = {hub.backends.pg_port}\n"
            f"REDIS_PORT = {hub.backends.redis_port}\n" + SCAN)
    kernel = Kernel(hub, alice, "alice")
    try:
        report = json.loads(kernel.run(code, timeout=600).strip().splitlines()[-1])
    finally:
        kernel.close()
    print("scan report:", json.dumps(report))
    assert report["uid"] != 0 and report["uid"] != os.getuid()
    assert report["found"] == [], report["found"]
    assert report["files_scanned"] > 0 and report["proc_files_read"] > 0
    assert report["proc_files_denied"] > 0  # the Hub's, the service's, the workers'
    assert report["env"] == report["server_env"] == ["NEXUSFLOW_LOCAL_WORKERS",
                                                     "NEXUSFLOW_SERVICE_URL"], report
    for attempt, answer in report["attempts"].items():
        assert answer != "CONNECTED", (attempt, report["attempts"])
        if attempt.startswith("postgres"):  # reached the server, refused by authentication
            assert "password" in answer, (attempt, answer)
        else:
            assert "NOAUTH" in answer or "WRONGPASS" in answer or "Authentication" in answer, \
                (attempt, answer)
    # With the service's credentials (which the test holds, as the operator) they do work.
    import psycopg
    import redis

    psycopg.connect(hub.backends.database_url, connect_timeout=5).close()
    redis.Redis.from_url(hub.backends.redis_url).ping()


def test_the_service_refuses_forged_and_expired_tokens_and_other_users(hub: Hub,
                                                                       users) -> None:
    alice, bob = users["alice"], users["bob"]
    short = hub.token("alice", expires_in=1)
    made = alice.post(f"/user/alice/{API}/workflows",
                      json={"graph": flow(node("A", "noop"), name="private")})
    wid = made.json()["workflow_id"]
    time.sleep(2.5)  # the short-lived token expires (and was never used, so never cached)
    for token in (short, "forged" + secrets.token_hex(16), alice.token[:-4] + "0000"):
        with hub.service(token) as svc:
            answer = svc.get("workflows")
            assert answer.status_code == 401, (answer.status_code, answer.text)
    with httpx.Client(base_url=hub.service_url + API + "/", timeout=30) as anonymous:
        assert anonymous.get("workflows").status_code == 401
        assert anonymous.post("runs", json={"workflow_id": wid}).status_code == 401
    # bob's own token at the service: alice's private flow does not exist for him (404,
    # hidden), and what he may see he may not change (403).
    with hub.service(bob.token) as svc:
        assert svc.get(f"workflows/{wid}").status_code == 404
        assert svc.post("runs", json={"workflow_id": wid}).status_code == 404
        assert alice.put(f"/user/alice/{API}/workflows/{wid}/roles/bob",
                         json={"role": "viewer"}).status_code == 200
        assert svc.get(f"workflows/{wid}").status_code == 200
        for method, path, body in (("POST", "runs", {"workflow_id": wid}),
                                   ("PUT", f"workflows/{wid}", {"graph": flow(node("B"))}),
                                   ("PUT", f"workflows/{wid}/roles/bob", {"role": "owner"}),
                                   ("DELETE", f"workflows/{wid}", None),
                                   ("POST", f"workflows/{wid}/webhooks", {})):
            answer = svc.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
        # bob cannot pass his run of a file off as alice's file (her server's token is hers)
        claimed = svc.post("runs", json={"graph": flow(node("A", "noop")),
                                         "file": "/home/alice/flows/x.nxflow"},
                           headers={"X-NexusFlow-Server-Token": bob.token})
        assert claimed.status_code == 201
        head = svc.get(f"runs/{claimed.json()['run_id']}").json()
        assert head["created_by"] == "bob"
        key = hub.workflow_key(head["workflow_id"])
        assert key.startswith("file:bob:"), key


def test_a_runner_never_reads_secret_values(hub: Hub, users) -> None:
    """bob runs alice's flow that uses a secret: no route shows him its value."""
    alice, bob = users["alice"], users["bob"]
    a, b = "/user/alice/" + API, "/user/bob/" + API
    value = "open-" + secrets.token_hex(12)
    assert alice.put(f"{a}/secrets/OPEN_TOKEN", json={"value": value}).status_code == 204
    made = alice.post(f"{a}/workflows", json={"graph": flow(
        node("use", "noop", value={"token": {"$secret": "OPEN_TOKEN"}}),
        node("echo", "transform", expression="inputs['use']"),
        edges=[("use", "echo")], name="uses-a-secret")})
    wid = made.json()["workflow_id"]
    assert alice.put(f"{a}/workflows/{wid}/roles/bob", json={"role": "runner"}
                     ).status_code == 200
    run_id = bob.post(f"{b}/runs", json={"workflow_id": wid}).json()["run_id"]
    run = _wait_run(bob, "bob", run_id)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["use"]["output"] == {"token": "***"}
    from nexusflow_server.routes import ROUTES, WEBSOCKETS, methods

    ids = {"workflow_id": wid, "run_id": run_id, "node_id": "use", "name": "OPEN_TOKEN",
           "principal": "bob", "hook_id": "wh_x", "schedule_id": "sc_x", "trigger_id": "qt_x"}
    seen = 0
    for template, handler in ROUTES:
        if "get" not in methods(handler) or handler in WEBSOCKETS or "hooks" in template:
            continue
        # a route added later with a placeholder of its own still gets asked (as "0")
        path = template.format_map(defaultdict(lambda: "0", ids)).replace("/nexusflow/api/", "")
        for base, client in ((b, bob), (hub.service_url + API, None)):
            if client is None:
                with hub.service(bob.token) as svc:
                    answer = svc.get(path, params={"path": "x.nxflow", "node": "use"})
            else:
                answer = client.get(f"{base}/{path}",
                                    params={"path": "x.nxflow", "node": "use"})
            seen += 1
            assert value not in answer.text, (template, answer.text[:300])
    assert seen > 20
    # the websocket history holds none either
    import websocket

    ws = websocket.create_connection(
        hub.url.replace("http", "ws", 1) + f"{b}/runs/{run_id}/events",
        header=[f"Authorization: token {bob.token}"], timeout=30)
    try:
        frames = []
        while True:
            frames.append(ws.recv())
            event = json.loads(frames[-1])
            if event.get("node") is None and event["state"] == "succeeded":
                break
    finally:
        ws.close()
    assert frames and not any(value in f for f in frames)


def test_notebooks_in_a_users_kernel_run_through_the_service(hub: Hub, users) -> None:
    """Flow.run and Run in alice's kernel: the service's client, with her server's token."""
    kernel = Kernel(hub, users["alice"], "alice")
    try:
        out = kernel.run(
            "import json\n"
            "from nexusflow_kernel import Flow, Run\n"
            "f = Flow('from-a-kernel')\n"
            "a = f.transform('A', '20 + 1')\n"
            "a >> f.transform('B', \"inputs['A'] * 2\")\n"
            "run = f.run(timeout=120, progress=False)\n"
            "print(json.dumps({'engine': type(run.engine).__name__, 'status': run.status,\n"
            "                  'B': run.outputs['B'], 'id': run.id,\n"
            "                  'again': Run.attach(run.id).outputs['A']}))\n")
    finally:
        kernel.close()
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"engine": "RemoteEngine", "status": "succeeded", "B": 42,
                      "id": report["id"], "again": 21}
    run = users["alice"].get(f"/user/alice/{API}/runs/{report['id']}").json()
    assert run["created_by"] == "alice" and run["trigger"] == "notebook"


def test_a_schedule_fires_with_no_jupyterlab_running(hub: Hub, users) -> None:
    alice = users["alice"]
    made = alice.post(f"/user/alice/{API}/workflows",
                      json={"graph": flow(node("tick", "noop", value=1), name="nightly")})
    wid = made.json()["workflow_id"]
    schedule = alice.post(f"/user/alice/{API}/workflows/{wid}/schedules",
                          json={"cron": "0 3 * * *"}).json()
    hub.stop_server(alice, "alice")
    try:
        hub.backdate_schedule(schedule["schedule_id"])
        with hub.service(alice.token) as svc:
            def fired() -> list:
                runs = svc.get("runs", params={"workflow_id": wid}).json()["runs"]
                return [r for r in runs if r["status"] == "succeeded"]

            runs = wait_for("the schedule's run", fired, 60, 0.5)
        assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
        assert runs[0]["created_by"] == f"schedule:{schedule['schedule_id']}"
    finally:
        hub.start_server(alice, "alice")

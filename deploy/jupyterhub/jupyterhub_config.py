# JupyterHub configuration for Nexus-Flow teams: one service holds the keys.
#
# docs/jupyterhub.md describes it; tests/hub starts the Hub from this very file. Start it with
#
#   NEXUSFLOW_DATABASE_URL   PostgreSQL (with a password) of the Nexus-Flow record
#   NEXUSFLOW_REDIS_URL      Redis (with a password or an ACL user) of the transport
#   NEXUSFLOW_SECRET_KEY     the key secrets and connections are encrypted with
#                            (`nexusflow secrets keygen`; "new,old" during a rotation)
#   jupyterhub -f jupyterhub_config.py
#
# Those three go to two processes only: the Nexus-Flow service (REST API, websockets, webhooks,
# schedules and queue triggers) and the workers. Users' servers get the service's URL and
# nothing else: their canvas, kernels and terminals reach Nexus-Flow through the service with
# the user's own Hub token, and the service decides with the user's Hub name, groups and scopes.
#
# More settings (all optional):
#   NEXUSFLOW_SERVICE_IP / _PORT  where the service listens (default 127.0.0.1:10101; on
#                            Kubernetes the hub pod's address); users' servers must reach it
#   NEXUSFLOW_HUB_SERVICE    "managed" (default: the Hub starts the service) or "external"
#                            (you run `nexusflow server` yourself, e.g. replicas behind a load
#                            balancer, with NEXUSFLOW_SERVICE_API_TOKEN as its Hub token)
#   NEXUSFLOW_HUB_WORKERS    worker processes the Hub runs as a managed service (default 2; 0
#                            when the workers run elsewhere: deploy/systemd)
#   NEXUSFLOW_METRICS_TOKEN  the token Prometheus sends to the service's metrics
#                            (/services/nexusflow/nexusflow/metrics, "Authorization: Bearer ...";
#                            Nexus-Flow administrators' own Hub tokens may read them too)
#   NEXUSFLOW_WORKER_METRICS_PORT  the Hub-run workers' Prometheus port (default: off)
#   NEXUSFLOW_RETENTION_DAYS the service deletes runs finished longer ago than this, daily
#
# The block at the end, enabled by NEXUSFLOW_HUB_DEMO=1, is for trying it on one machine and
# for the test: dummy password logins, local processes, loopback ports. A real deployment
# replaces it with its authenticator and spawner (zero-to-jupyterhub: deploy/zero-to-jupyterhub).
# ruff: noqa: F821  (get_config is defined by JupyterHub when it loads this file)

import os
import sys

from nexusflow_server.hub import CUSTOM_SCOPES

c = get_config()

SERVICE = "nexusflow"
SERVICE_IP = os.environ.get("NEXUSFLOW_SERVICE_IP", "127.0.0.1")
SERVICE_PORT = int(os.environ.get("NEXUSFLOW_SERVICE_PORT", "10101"))
SERVICE_URL = f"http://{SERVICE_IP}:{SERVICE_PORT}"
ACCESS = f"access:services!service={SERVICE}"

# -- 1. The backends' credentials: the service and the workers, nobody else -----------------
BACKENDS = {
    name: os.environ[name]
    for name in ("NEXUSFLOW_DATABASE_URL", "NEXUSFLOW_REDIS_URL", "NEXUSFLOW_SECRET_KEY",
                 "NEXUSFLOW_DATA_DIR")
    if os.environ.get(name)
}
# Policies the workers enforce come from the workers' own environment (docs/security.md).
POLICY = {
    "NEXUSFLOW_ALLOW_PRIVATE_HTTP": "0",   # http nodes may not reach the Hub's own network
}
OPERATIONS = {
    name: os.environ[name]
    for name in ("NEXUSFLOW_METRICS_TOKEN", "NEXUSFLOW_RETENTION_DAYS", "NEXUSFLOW_LOG_LEVEL")
    if os.environ.get(name)
}

service = {
    "name": SERVICE,
    "url": SERVICE_URL,              # the proxy routes /services/nexusflow/ here (webhooks)
    "display": False,
    "oauth_no_confirm": True,
}
if os.environ.get("NEXUSFLOW_HUB_SERVICE", "managed") == "managed":
    service.update({
        "command": [sys.executable, "-m", "nexusflow_server.service"],
        "environment": {**BACKENDS, **POLICY, **OPERATIONS, "NEXUSFLOW_LOCAL_WORKERS": "0"},
    })
else:  # `nexusflow server` runs elsewhere with this token as JUPYTERHUB_API_TOKEN
    service["api_token"] = os.environ["NEXUSFLOW_SERVICE_API_TOKEN"]
c.JupyterHub.services = [service]

_workers = int(os.environ.get("NEXUSFLOW_HUB_WORKERS", "2"))
if _workers > 0:
    c.JupyterHub.services.append({
        "name": "nexusflow-worker",
        "command": [sys.executable, "-m", "nexusflow_worker", "--processes", str(_workers)],
        "environment": {**BACKENDS, **POLICY, **{
            name: os.environ[name] for name in ("NEXUSFLOW_WORKER_METRICS_PORT",
                                                "NEXUSFLOW_WORKER_METRICS_IP")
            if os.environ.get(name)}},
    })

# -- 2. Users' servers: the service's URL, no credential --------------------------------------
# The Nexus-Flow extension forwards the canvas's calls to the service with the caller's token;
# kernels and terminals use the server's JUPYTERHUB_API_TOKEN (Flow.run, Run, the CLI).
c.Spawner.environment.update({
    "NEXUSFLOW_SERVICE_URL": f"{SERVICE_URL}/services/{SERVICE}/",
    "NEXUSFLOW_LOCAL_WORKERS": "0",
})

# -- 3. Identity: who may use the service, groups and custom scopes ---------------------------
# custom:nexusflow:viewer|runner|editor|owner give that role on every workflow;
# custom:nexusflow:admin makes an administrator (every workflow, the audit log, any secret).
c.JupyterHub.custom_scopes = CUSTOM_SCOPES
c.JupyterHub.load_groups = {"nexusflow-admins": {"users": []}}
c.JupyterHub.load_roles = [
    # Every user may call the service (it then decides what they may do there).
    {"name": "user", "description": "Standard user privileges, and the Nexus-Flow service",
     "scopes": ["self", ACCESS]},
    {"name": "nexusflow-admin", "description": "Nexus-Flow administrators",
     "scopes": ["custom:nexusflow:admin"], "groups": ["nexusflow-admins"]},
]
# Tokens a user's server holds carry the service's access scope and the user's own Nexus-Flow
# scopes (the Hub keeps only those the user holds): the server's token, for kernels and
# terminals; the browser session's OAuth token, which the extension forwards.
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", ACCESS,
                                 *CUSTOM_SCOPES]
c.Spawner.oauth_client_allowed_scopes = [ACCESS, *CUSTOM_SCOPES]

# -- Demo and test: one machine, dummy logins, loopback only ----------------------------------
if os.environ.get("NEXUSFLOW_HUB_DEMO") == "1":
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    state = os.environ.get("NEXUSFLOW_HUB_STATE", os.getcwd())
    users = ["alice", "bob"]
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = int(os.environ.get("NEXUSFLOW_HUB_PORT", "8000"))
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = int(os.environ.get("NEXUSFLOW_HUB_API_PORT", "8081"))
    c.ConfigurableHTTPProxy.api_url = (
        f"http://127.0.0.1:{os.environ.get('NEXUSFLOW_HUB_PROXY_API_PORT', '8001')}")
    hub_dir = os.path.join(state, "hub")      # the Hub's own state: for the Hub's user only
    os.makedirs(hub_dir, mode=0o700, exist_ok=True)
    c.JupyterHub.db_url = "sqlite:///" + os.path.join(hub_dir, "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = os.path.join(hub_dir, "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = os.path.join(hub_dir, "jupyterhub-proxy.pid")
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = os.environ["NEXUSFLOW_HUB_DEMO_PASSWORD"]
    c.Authenticator.allowed_users = set(users)
    c.JupyterHub.load_groups = {
        "nexusflow-admins": {"users": ["alice"]},
        "finance": {"users": ["alice"]},
        "staff": {"users": ["alice", "bob"]},
    }
    homes = os.path.join(state, "home")
    os.makedirs(homes, mode=0o755, exist_ok=True)
    os.chmod(homes, 0o755)
    uid_base = int(os.environ.get("NEXUSFLOW_HUB_DEMO_UID_BASE", "62000"))

    class DemoSpawner(SimpleLocalProcessSpawner):
        """Each user's server as a local process; when the Hub runs as root, as an unprivileged
        uid of the user's own (no system account needed), so that a user cannot read the
        Hub's, the service's or the other user's processes and files."""

        def make_preexec_fn(self, name):
            home = self.home_dir
            uid = uid_base + users.index(name) if os.geteuid() == 0 else None

            def preexec():
                os.makedirs(home, 0o700, exist_ok=True)
                if uid is not None:
                    os.chown(home, uid, uid)
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                os.chdir(home)

            return preexec

    c.JupyterHub.spawner_class = DemoSpawner
    # The users' Python: with the Hub as root it must be one the users' uids can run
    # (the Hub's own may live in root's home).
    c.Spawner.cmd = [os.environ.get("NEXUSFLOW_HUB_DEMO_PYTHON", sys.executable),
                     "-m", "jupyterhub.singleuser"]
    c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(homes, "{username}")
    c.Spawner.start_timeout = 90
    c.Spawner.http_timeout = 90

# JupyterHub configuration for Nexus-Flow teams: one PostgreSQL, one Redis, one worker pool.
#
# This is the configuration docs/jupyterhub.md describes, and the one tests/hub starts.
# Start it with `jupyterhub -f jupyterhub_config.py` and these environment variables:
#
#   NEXUSFLOW_DATABASE_URL   PostgreSQL shared by every single-user server and every worker
#   NEXUSFLOW_REDIS_URL      Redis shared the same way
#   NEXUSFLOW_SECRET_KEY     the key secrets are encrypted with (`nexusflow secrets keygen`)
#   NEXUSFLOW_HUB_WORKERS    worker processes the Hub runs as a managed service
#                            (default 2; 0 when workers run elsewhere, e.g. on other machines)
#
# The block at the end, enabled by NEXUSFLOW_HUB_DEMO=1, is for trying it on one machine and for
# the test: a dummy password login, every user as the current OS user, loopback ports.
# A real deployment replaces it with its authenticator and spawner.
# ruff: noqa: F821  (get_config is defined by JupyterHub when it loads this file)

import os
import sys

from nexusflow_server.hub import CUSTOM_SCOPES

c = get_config()

# -- 1. Shared backends ---------------------------------------------------------------------
# Every single-user server talks to the same PostgreSQL and Redis, so everyone sees the same
# workflows and runs, filtered by their roles. The servers start no workers of their own.
NEXUSFLOW_ENV = {
    name: os.environ[name]
    for name in ("NEXUSFLOW_DATABASE_URL", "NEXUSFLOW_REDIS_URL", "NEXUSFLOW_SECRET_KEY")
    if os.environ.get(name)
}
# Policies that the workers enforce are read by the workers from their own environment:
# they are set on the servers (which check flows) and on every worker (which runs them).
NEXUSFLOW_POLICY = {
    "NEXUSFLOW_ALLOW_PRIVATE_HTTP": "0",   # http nodes may not reach the Hub's own network
}
c.Spawner.environment.update(NEXUSFLOW_ENV)
c.Spawner.environment.update(NEXUSFLOW_POLICY)
c.Spawner.environment.update({
    "NEXUSFLOW_LOCAL_WORKERS": "0",        # NexusFlow.local_workers = False
    "NEXUSFLOW_DEFAULT_ROLE": "none",      # a workflow is private until it is shared
})

# -- 2. Identity: groups and custom scopes ----------------------------------------------------
# custom:nexusflow:viewer|runner|editor|owner give that role on every workflow;
# custom:nexusflow:admin makes an administrator (every workflow, the audit log).
c.JupyterHub.custom_scopes = CUSTOM_SCOPES
# Browser sessions carry the scopes to the single-user servers (API tokens carry their own).
c.Spawner.oauth_client_allowed_scopes = list(CUSTOM_SCOPES)
c.JupyterHub.load_groups = {"nexusflow-admins": {"users": []}}
c.JupyterHub.load_roles = [
    {
        "name": "nexusflow-admin",
        "description": "Nexus-Flow administrators",
        "scopes": ["custom:nexusflow:admin"],
        "groups": ["nexusflow-admins"],
    },
]

# -- 3. The shared worker pool ----------------------------------------------------------------
# A Hub-managed service running `nexusflow worker`; more workers on other machines need the
# same three NEXUSFLOW_* variables and the same policy (see docs/jupyterhub.md, "Scaling
# workers").
_workers = int(os.environ.get("NEXUSFLOW_HUB_WORKERS", "2"))
if _workers > 0:
    c.JupyterHub.services = [
        {
            "name": "nexusflow-worker",
            "command": [sys.executable, "-m", "nexusflow_worker", "--processes", str(_workers)],
            "environment": {**NEXUSFLOW_ENV, **NEXUSFLOW_POLICY},
        },
    ]

# -- Demo and test: one machine, dummy logins, loopback only ----------------------------------
if os.environ.get("NEXUSFLOW_HUB_DEMO") == "1":
    state = os.environ.get("NEXUSFLOW_HUB_STATE", os.getcwd())
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = int(os.environ.get("NEXUSFLOW_HUB_PORT", "8000"))
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = int(os.environ.get("NEXUSFLOW_HUB_API_PORT", "8081"))
    c.ConfigurableHTTPProxy.api_url = (
        f"http://127.0.0.1:{os.environ.get('NEXUSFLOW_HUB_PROXY_API_PORT', '8001')}")
    c.JupyterHub.db_url = "sqlite:///" + os.path.join(state, "jupyterhub.sqlite")
    c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
    c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "jupyterhub-proxy.pid")
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = os.environ["NEXUSFLOW_HUB_DEMO_PASSWORD"]
    c.Authenticator.allowed_users = {"alice", "bob"}
    c.JupyterHub.load_groups = {
        "nexusflow-admins": {"users": ["alice"]},
        "finance": {"users": ["alice"]},
        "staff": {"users": ["alice", "bob"]},
    }
    c.JupyterHub.spawner_class = "simple"  # every user runs as the current OS user
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.args = ["--allow-root"] if os.geteuid() == 0 else []
    c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(state, "home", "{username}")
    c.Spawner.start_timeout = 90
    c.Spawner.http_timeout = 90

"""Fixtures for the server extension: a real Jupyter server (pytest-jupyter) on the test backends.

Users for the authorization tests come from the ``Authorization: token user:<name>`` header
(or, cookie-style and so subject to XSRF, a ``nf-test-user`` cookie); ``TestAuthorizer`` denies
by user name: ``nobody`` may do nothing, ``reader`` may only read, ``noexec`` may not execute.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jupyter_server.auth import Authorizer, IdentityProvider, User
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jp_serverapp, jp_fetch, ...)
from tornado.httpclient import HTTPClientError
from traitlets.config import Config


class HeaderIdentity(IdentityProvider):
    """Jupyter's token login, plus test users named in the token or a cookie."""

    def get_user(self, handler: Any) -> Any:
        auth = handler.request.headers.get("Authorization", "")
        if auth.startswith("token user:"):
            handler._token_authenticated = True
            return User(username=auth.split(":", 1)[1])
        cookie = handler.get_cookie("nf-test-user")
        if cookie:
            return User(username=cookie)
        return super().get_user(handler)


class GroupIdentity(IdentityProvider):
    """Hub-like test users from ``Authorization: token user:<name>``, with Hub groups from an
    ``X-Test-Groups`` header (none without it), shaped as the Hub's user model."""

    def get_user(self, handler: Any) -> Any:
        auth = handler.request.headers.get("Authorization", "")
        if not auth.startswith("token user:"):
            return super().get_user(handler)
        handler._token_authenticated = True
        user = User(username=auth.split(":", 1)[1])
        groups = handler.request.headers.get("X-Test-Groups") or ""
        user.hub_user = {"name": user.username, "groups": [g for g in groups.split(",") if g],
                         "scopes": []}
        return user


def hub_users_config(nf_config: dict) -> Config:
    """The server of the tests of Hub users, groups and roles: ``GroupIdentity`` users, no
    role by default, ``root`` the administrator (a module's ``jp_server_config`` returns it)."""
    return Config({
        "ServerApp": {
            "jpserver_extensions": {"nexusflow_server": True, "jupyter_server_ydoc": False,
                                    "jupyter_server_terminals": False},
            "identity_provider_class": GroupIdentity,
        },
        "NexusFlow": {**nf_config, "default_role": "none", "admin_users": ["root"]},
    })


class TestAuthorizer(Authorizer):
    """Deny by user name (see the module docstring)."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        name = user.username
        if name == "nobody":
            return False
        if name == "reader":
            return action == "read"
        if name == "noexec":
            return action != "execute"
        return True


@pytest.fixture(autouse=True)
def empty_database(database_url) -> None:
    """Empty every table of the session's database, so each test starts from nothing."""
    import psycopg

    from nexusflow_kernel.runstate.db import get_pool

    get_pool(database_url)  # migrated
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'nexusflow_migrations'")]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@pytest.fixture
def nf_config(settings) -> dict[str, Any]:
    """Return the ``NexusFlow`` traitlets of the test server (tests may change them)."""
    return {
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        "data_dir": str(settings.data_dir),
        "local_workers": False,
        "trigger_poll_s": 0.2,
        "queue_claim_idle_s": 0.5,
    }


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return Config({
        "ServerApp": {
            "jpserver_extensions": {"nexusflow_server": True, "jupyter_server_ydoc": False,
                                    "jupyter_server_terminals": False},
            "identity_provider_class": HeaderIdentity,
            "authorizer_class": TestAuthorizer,
        },
        "NexusFlow": nf_config,
    })


@pytest.fixture
def nf_app(jp_serverapp) -> Any:
    """Return the running ``NexusFlow`` extension app."""
    return jp_serverapp.web_app.settings["nexusflow"]


@pytest.fixture
def api(jp_fetch):
    """Call the REST API: ``await api("GET", "runs", user="alice")`` -> ``(status, json)``."""

    async def call(method: str, path: str, body: Any = None, *, user: str | None = None,
                   raw: bytes | None = None, headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if user is not None:
            hdrs["Authorization"] = f"token user:{user}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        try:
            resp = await jp_fetch(*(["nexusflow", "api"] + path.split("/")), method=method,
                                  body=data, headers=hdrs, params=params,
                                  allow_nonstandard_methods=True)
            code, text = resp.code, resp.body
        except HTTPClientError as err:
            code, text = err.code, err.response.body if err.response else b""
        try:
            return code, json.loads(text) if text else None
        except ValueError:
            return code, text

    return call


# ---------------------------------------------------------------- the Nexus-Flow service

@pytest.fixture
def keyed(settings):
    """Return ``settings`` with a secrets key of their own (the service and workers share it)."""
    from dataclasses import replace

    from nexusflow_kernel.secrets import generate_key

    return replace(settings, secret_key=generate_key())


@pytest.fixture
def service(keyed):
    """A Nexus-Flow service (``--auth token``) in a thread, on the test backends."""
    from nftest import RunningService

    running = RunningService(keyed)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def tokens(keyed):
    """Make service tokens: ``tokens("alice", groups=["staff"])``."""
    from nexusflow_server.service.tokens import ApiTokens

    from nexusflow_kernel.runstate.db import get_pool

    store = ApiTokens(get_pool(keyed.database_url))

    def make(user: str, **kwargs: Any) -> str:
        return store.create(user, **kwargs)["token"]

    make.store = store  # type: ignore[attr-defined]
    return make

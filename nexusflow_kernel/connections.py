"""Connections: database and HTTP credentials kept encrypted in PostgreSQL, resolved in the worker.

A flow names a connection (``db_query``'s ``connection: warehouse``, the ``http`` node's
``connection: crm``); the worker resolves it right before the node runs, in the run's
environment (the environment's own connection of that name, else the one of every
environment), and a group-scoped connection only for a run whose user is in one of its groups
(the rule of group-scoped secrets). The whole configuration (URL with its password, HTTP
headers) is encrypted with the secrets' AES-256-GCM (``secrets.Cipher``, one key, bound to
``connection:<env>:<name>``); lists show only the URL without its password. The values a
resolved connection holds (password, URL, header values) are masked in everything the run
records (``values_for_run``).

Kinds:

- ``postgres``: ``url`` (``postgresql://user:password@host:port/db``; the password may be
  given apart), for ``db_query``. ``trusted`` lets a privileged role in (see ``db_query``).
- ``http``: ``url`` (the base URL a node's relative ``url`` is joined to; an absolute one must
  start with it) and ``headers`` (``Authorization`` and the like), for the ``http`` node.

Single-user setups may keep ``NEXUSFLOW_CONNECTION_<NAME>`` environment variables on the
workers: ``db_query`` falls back to them when no stored connection has the name.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import NexusFlowError, NodeExecutionError, NotFoundError
from .secrets import (
    Authorize,
    SecretKeyError,
    SecretScopeError,
    SecretStore,
    check_env,
    check_group,
    check_name,
    connection_associated,
    delete_owned,
    write_owned,
)
from .settings import Settings, mask_url

if TYPE_CHECKING:  # pragma: no cover
    from .runstate.db import Pool

KINDS = ("postgres", "http")

PREFIX = "connection:"
"""How a run's masker names a connection among its secrets (no secret name has a colon)."""

MAX_HEADERS = 50


@dataclass(frozen=True)
class Connection:
    """A resolved connection (in a worker, for one node): never recorded, never returned."""

    name: str
    env: str
    kind: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    trusted: bool = False

    @property
    def values(self) -> list[str]:
        """Every value a run's record must never hold: password, URL, header values."""
        out = [self.url] + list(self.headers.values())
        password = urlsplit(self.url).password
        if password:
            out += [password, unquote(password)]
        return [v for v in out if v]


def _fault(message: str, pointer: str) -> NexusFlowError:
    exc = NexusFlowError(message)
    exc.pointer = pointer  # type: ignore[attr-defined]
    return exc


def check_config(
    kind: str, url: str, password: str | None = None, headers: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, str]]:
    """Return ``(url with the password in it, headers)`` or raise naming the faulty field."""
    if kind not in KINDS:
        raise _fault(
            f"connection kind {kind!r} is unknown (use one of {', '.join(KINDS)})", "/kind"
        )
    if not isinstance(url, str) or not url or len(url) > 4096:
        raise _fault("'url' must be a URL of at most 4096 characters", "/url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise _fault(f"'url' is not a valid URL: {exc}", "/url") from None
    schemes = ("postgresql", "postgres") if kind == "postgres" else ("http", "https")
    if parts.scheme.lower() not in schemes or not parts.hostname:
        raise _fault(
            f"a {kind} connection's url must be {schemes[0]}://host/..., not {mask_url(url)!r}",
            "/url",
        )
    if password is not None:
        if not isinstance(password, str) or len(password) > 4096:
            raise _fault("'password' must be a string of at most 4096 characters", "/password")
        if kind != "postgres":
            raise _fault(
                "'password' is for postgres connections (http ones use headers)", "/password"
            )
        user = quote(unquote(parts.username or ""), safe="")
        if not user:
            raise _fault(
                "a password needs a user name in the url (postgresql://user@host/db)", "/url"
            )
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        if ":" in parts.hostname:
            host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        url = urlunsplit(
            (
                parts.scheme,
                f"{user}:{quote(password, safe='')}@{host}",
                parts.path,
                parts.query,
                parts.fragment,
            )
        )
    out: dict[str, str] = {}
    if headers:
        if kind != "http":
            raise _fault("'headers' are for http connections", "/headers")
        if not isinstance(headers, Mapping) or len(headers) > MAX_HEADERS:
            raise _fault(
                f"'headers' must be an object of at most {MAX_HEADERS} headers", "/headers"
            )
        for key, value in headers.items():
            if (
                not isinstance(key, str)
                or not key
                or not isinstance(value, str)
                or any(c in key + value for c in "\r\n\x00")
                or len(value) > 8192
            ):
                raise _fault("each header is a name and a one-line string value", f"/headers/{key}")
            out[key] = value
    return url, out


class ConnectionStore:
    """Encrypted connections in PostgreSQL: metadata for everyone, values for the worker."""

    def __init__(
        self,
        source: Settings | Pool,
        *,
        settings: Settings | None = None,
        secrets: SecretStore | None = None,
    ):
        self.secrets = secrets or SecretStore(source, settings=settings)
        self._pool = self.secrets._pool

    # ------------------------------------------------------------------ admin side
    def add(
        self,
        name: str,
        *,
        kind: str,
        url: str,
        password: str | None = None,
        headers: Mapping[str, Any] | None = None,
        env: str = "",
        groups: Iterable[str] | None = None,
        trusted: bool = False,
        actor: str | None = None,
        authorize: Authorize | None = None,
    ) -> dict[str, Any]:
        """Store (or replace) connection ``name`` of ``env``; return its metadata.

        ``actor`` is recorded as ``updated_by``, and as ``created_by`` when the connection is
        new. ``authorize`` (who may change it) is called with the connection as it stands
        (``{"name", "env", "created_by", "groups"}``, ``None``: there is none), locked, in the
        transaction that writes, as ``SecretStore.set`` does."""
        check_name(name)
        check_env(env)
        full, heads = check_config(kind, url, password, headers)
        scope = sorted({check_group(g) for g in groups or ()})
        blob = self.secrets.cipher.encrypt(
            json.dumps({"url": full, "headers": heads}), connection_associated(env, name)
        )
        display = mask_url(full)
        if heads:
            display += f" (headers: {', '.join(sorted(heads))})"
        write_owned(
            self._pool, "connection", name, env, authorize,
            update=(
                "UPDATE nexusflow_connections SET kind = %s, ciphertext = %s,"
                " display = %s, trusted = %s, scope_groups = %s,"
                " updated_at = now(), updated_by = %s WHERE env = %s AND name = %s",
                (kind, blob, display, trusted, scope, actor, env, name),
            ),
            insert=(
                "INSERT INTO nexusflow_connections (env, name, kind, ciphertext, display,"
                " trusted, scope_groups, created_by, updated_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (env, name) DO NOTHING",
                (env, name, kind, blob, display, trusted, scope, actor, actor),
            ),
        )
        return self.describe(name, env)

    def list(
        self, *, usable_by: Iterable[str] | None = None, env: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Return connections' metadata (never a password), sorted by name and environment;
        ``usable_by``/``env`` filter as ``SecretStore.list`` does."""
        from psycopg.rows import dict_row

        sql = (
            "SELECT name, env, kind, display, trusted, scope_groups AS groups, created_at,"
            " created_by, updated_at, updated_by FROM nexusflow_connections WHERE true"
        )
        args: builtins.list[Any] = []
        if usable_by is not None:
            sql += " AND (scope_groups = '{}' OR scope_groups && %s::text[])"
            args.append(sorted(set(usable_by)))
        if env is not None:
            sql += " AND env IN ('', %s)"
            args.append(env)
        with self._pool.connection() as conn:
            rows = (
                conn.cursor(row_factory=dict_row)
                .execute(sql + " ORDER BY name, env", args)
                .fetchall()
            )
            conn.commit()
        return [_plain(r) for r in rows]

    def describe(self, name: str, env: str = "") -> dict[str, Any]:
        """Return one connection's metadata; ``NotFoundError`` when there is none."""
        for row in self.list(env=env):
            if row["name"] == name and row["env"] == env:
                return row
        raise NotFoundError(
            f"no connection named {name!r}" + (f" in environment {env!r}" if env else "")
        )

    def remove(self, name: str, env: str = "", *, authorize: Authorize | None = None) -> None:
        """Delete connection ``name`` of ``env``; ``NotFoundError`` when there is none.
        ``authorize`` as for :meth:`add`, called with the locked connection before it goes."""
        delete_owned(self._pool, "connection", name, env, authorize)

    def test(self, name: str, env: str = "") -> dict[str, Any]:
        """Try the connection (PostgreSQL: connect and ``SELECT 1``; HTTP: a GET of its URL
        through the http node's address guard); return ``{ok, message, ms}``. The message
        never holds the password."""
        conn = self._load(name, env, exact=True)
        started = time.monotonic()
        try:
            message = _try(conn, self.secrets._settings)
            ok = True
        except Exception as exc:  # any failure is the answer, masked
            message, ok = " ".join(str(exc).split()), False
        from .masking import Masker

        return {
            "name": name,
            "env": env,
            "ok": ok,
            "message": Masker(conn.values).text(message)[:1000],
            "ms": round((time.monotonic() - started) * 1000, 1),
        }

    def groups_of(self, name: str, env: str = "") -> builtins.list[str] | None:
        """Return a connection's scope groups (``None``: no such connection)."""
        from psycopg.rows import tuple_row

        with self._pool.connection() as conn:
            row = (
                conn.cursor(row_factory=tuple_row)
                .execute(
                    "SELECT scope_groups FROM nexusflow_connections WHERE name = %s AND env = %s",
                    (name, env),
                )
                .fetchone()
            )
            conn.commit()
        return None if row is None else list(row[0] or [])

    # ------------------------------------------------------------------ worker side
    def _load(
        self,
        name: str,
        env: str,
        *,
        exact: bool = False,
        run_id: str | None = None,
        check_scope: bool = False,
        principal: str | None = None,
    ) -> Connection:
        from psycopg.rows import tuple_row

        sql = (
            "SELECT env, kind, ciphertext, trusted, scope_groups FROM nexusflow_connections"
            " WHERE name = %s AND "
            + ("env = %s" if exact else "env IN ('', %s)")
            + " ORDER BY env DESC LIMIT 1"
        )
        with self._pool.connection() as conn:
            row = conn.cursor(row_factory=tuple_row).execute(sql, (name, env)).fetchone()
            conn.commit()
        if row is None:
            raise NotFoundError(
                f"no connection named {name!r}"
                + (f" in environment {env!r} or for every environment" if env else "")
            )
        found_env, kind, blob, trusted, groups = row
        if check_scope and groups:
            self.secrets._check_scope(name, list(groups), run_id, what="connection",
                                      principal=principal)
        data = json.loads(self.secrets.cipher.decrypt(blob, connection_associated(found_env, name)))
        return Connection(
            name, found_env, kind, data["url"], dict(data.get("headers") or {}), bool(trusted)
        )

    def resolve(self, name: str, *, run_id: str | None, env: str | None = None,
                principal: str | None = None) -> Connection:
        """Return connection ``name`` as run ``run_id`` may use it (its environment's own, else
        the one of every environment); ``NotFoundError`` or ``SecretScopeError`` otherwise.
        With ``principal`` (a one-node test), the scope is checked against that user."""
        if env is None:
            env = self.secrets.run_env(run_id)
        return self._load(name, env, run_id=run_id, check_scope=True, principal=principal)

    def values_for_run(self, name: str, run_id: str) -> builtins.list[str] | None:
        """Return the values of connection ``name`` that run ``run_id`` may have used, for
        masking its record (``None``: it could not have used it)."""
        try:
            return self.resolve(name, run_id=run_id).values
        except (NotFoundError, SecretScopeError, SecretKeyError):
            return None


def _try(conn: Connection, settings: Settings) -> str:
    if conn.kind == "postgres":
        import psycopg

        with psycopg.connect(
            conn.url, connect_timeout=10, application_name="nexusflow connection test"
        ) as pg:
            row = pg.execute("SELECT current_user, current_database(), version()").fetchone()
        assert row is not None
        return f"connected as {row[0]} to {row[1]} ({str(row[2]).split(',')[0]})"
    import httpx

    from .nodes.http import check_destination, checked_transport

    allow_private = settings.allows_private_http()
    check_destination(conn.url, allow_private)
    with httpx.Client(
        timeout=10,
        transport=None if allow_private else checked_transport(),
        event_hooks={"request": [lambda r: check_destination(r.url, allow_private)]},
    ) as client:
        response = client.get(conn.url, headers=conn.headers)
    return f"GET {mask_url(conn.url)} -> HTTP {response.status_code}"


def run_values(secrets: SecretStore, connections: ConnectionStore | None = None) -> Any:
    """Return the resolver of a run's masker (``masking.RunSecrets``): a secret's value, or a
    connection's values for a name ``connection:<name>``."""
    conns = connections or ConnectionStore(secrets._pool, secrets=secrets)

    def resolve(name: str, run_id: str) -> str | builtins.list[str] | None:
        if name.startswith(PREFIX):
            return conns.values_for_run(name[len(PREFIX) :], run_id)
        return secrets.value_for_run(name, run_id)

    return resolve


def unavailable(message: str) -> NodeExecutionError:
    return NodeExecutionError(message, retryable=False)


def _plain(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    out["groups"] = list(out.get("groups") or [])
    return out


__all__ = ["KINDS", "PREFIX", "Connection", "ConnectionStore", "check_config", "run_values"]

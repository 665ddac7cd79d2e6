"""PostgreSQL access: one connection pool per process, migrations, and outage-tolerant writes."""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeAlias, TypeVar

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import BackendUnavailable
from ..settings import mask_url

logger = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATION_LOCK = 0x6E657875  # advisory lock id: one migrator at a time
Conn: TypeAlias = "psycopg.Connection[DictRow]"
"""A connection of the record: rows come back as dicts."""
Pool: TypeAlias = "ConnectionPool[psycopg.Connection[DictRow]]"

_pools: dict[str, Pool] = {}
_pools_lock = threading.Lock()


_last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
IDLE_CHECK_S = 1.0
"""A pooled connection idle longer than this is tested before use (a busy one is not: a
round trip per checkout would cost more than the node it serves)."""


def _stamp(conn: Conn) -> None:
    _last_used[conn] = time.monotonic()


def _check_if_idle(conn: Conn) -> None:
    if time.monotonic() - _last_used.get(conn, 0.0) > IDLE_CHECK_S:
        ConnectionPool.check_connection(conn)


def _configure(conn: Conn) -> None:
    conn.execute("SET application_name = 'nexusflow'")
    conn.commit()


def get_pool(url: str, *, max_size: int = 8) -> Pool:
    """Return this process's pool for ``url`` (opened once, migrations applied once)."""
    with _pools_lock:
        known = _pools.get(url)
        if known is not None:
            return known
        try:  # fail fast, with the server's own reason, when nothing answers
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise BackendUnavailable(
                f"PostgreSQL at {mask_url(url)} is not reachable: {reason}"
            ) from None
        pool = ConnectionPool(
            url,
            connection_class=psycopg.Connection[DictRow],
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": False, "prepare_threshold": 1},
            configure=_configure,
            reset=_stamp,
            check=_check_if_idle,
            open=False,
            name="nexusflow",
        )
        try:
            pool.open(wait=True, timeout=10)
        except PoolTimeout:
            pool.close()
            raise BackendUnavailable(
                f"PostgreSQL at {mask_url(url)} is not reachable (no connection in 10 s)"
            ) from None
        migrate(pool)
        _pools[url] = pool
        return pool


def close_pools() -> None:
    """Close every pool this process opened (for tests and clean shutdown)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


def migration_scripts() -> list[tuple[str, str]]:
    """Return ``(name, sql)`` of every migration shipped, in the order they apply."""
    folder = resources.files(__package__).joinpath("migrations")
    scripts = [(p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql")]
    return sorted(scripts)


def migrate(pool: Pool) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; return their names.

    Several processes may start on a fresh database at once (worker replicas, a server and its
    workers): everything, the creation of ``nexusflow_migrations`` included, happens under one
    PostgreSQL advisory lock, so whoever takes it first migrates and the others wait, then find
    nothing left to do. A database that is up to date costs one query and no lock.
    """
    scripts = migration_scripts()
    applied: list[str] = []
    with pool.connection() as conn:
        if _pending(conn, scripts) == []:
            return applied
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        conn.commit()
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS nexusflow_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            for name, sql in _pending(conn, scripts) or []:
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO nexusflow_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
                logger.info("applied migration %s", name)
        finally:
            conn.rollback()  # a failed migration left the transaction aborted
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
            conn.commit()
    return applied


def _pending(conn: Conn,
             scripts: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Return the scripts not yet applied (``None`` when the migrations table is missing)."""
    row = conn.execute("SELECT to_regclass('nexusflow_migrations') IS NOT NULL AS t").fetchone()
    if row is None or not row["t"]:
        conn.commit()
        return None
    done = {r["name"] for r in conn.execute("SELECT name FROM nexusflow_migrations")}
    conn.commit()
    return [(name, sql) for name, sql in scripts if name not in done]


def with_retry(
    fn: Callable[[], T], *, what: str, deadline_s: float = 60.0,
    stop: Callable[[], bool] | None = None,
) -> T:
    """Run ``fn`` until it gets through a PostgreSQL outage (bounded by ``deadline_s``).

    Only connection-level failures are retried; ``fn`` must be a whole transaction, so a
    retry never applies half of it twice.
    """
    end = time.monotonic() + deadline_s
    delay = 0.1
    while True:
        try:
            return fn()
        except (psycopg.OperationalError, psycopg.InterfaceError, BackendUnavailable) as exc:
            if time.monotonic() >= end or (stop is not None and stop()):
                raise BackendUnavailable(
                    f"PostgreSQL unavailable while trying to {what}: {exc}") from exc
            logger.warning("PostgreSQL unavailable (%s); retrying %s in %.1fs", exc, what, delay)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def run_tx(pool: Pool, body: Callable[[Conn], T]) -> T:
    """Run ``body(conn)`` in one transaction on a pooled connection."""
    with pool.connection() as conn:
        with conn.transaction():
            return body(conn)


def jsonb(value: Any) -> Any:
    """Wrap ``value`` for a jsonb parameter."""
    from psycopg.types.json import Jsonb

    return Jsonb(value)

"""Migrations on a fresh database: processes that start together apply each one exactly once.

Worker replicas, or a server and its workers, often start at the same moment on a database
that has never been migrated. Before the advisory lock covered everything, two of them created
``nexusflow_migrations`` at once and one crashed (``UniqueViolation`` on
``pg_type_typname_nsp_index``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from nexusflow_kernel.runstate.db import migrate, migration_scripts

# Each process waits for the same instant, connects, migrates and prints how many migrations
# it applied itself.
_MIGRATE = """
import sys, time
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from nexusflow_kernel.runstate.db import migrate
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
pool = ConnectionPool(sys.argv[1], min_size=1, max_size=1, open=True,
                      kwargs={"row_factory": dict_row})
print("applied", len(migrate(pool)))
"""


@pytest.fixture
def fresh_database(backend_urls):
    """Return a function that creates an empty database and returns its URL."""
    admin_url = backend_urls[0]
    made: list[str] = []

    def create() -> str:
        name = f"nf_migrate_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return urlunsplit(urlsplit(admin_url)._replace(path="/" + name))

    yield create
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in made:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _recorded(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM nexusflow_migrations ORDER BY name")]


def test_processes_that_start_together_migrate_a_fresh_database_once(fresh_database) -> None:
    url = fresh_database()
    n = 8
    start = time.time() + 3.0  # every interpreter is up and waiting by then
    procs = [subprocess.Popen([sys.executable, "-c", _MIGRATE, url, str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err[-2000:]
    names = [name for name, _sql in migration_scripts()]
    assert _recorded(url) == names
    applied = sorted(int(out.split()[-1]) for _code, out, _err in results)
    assert applied == [0] * (n - 1) + [len(names)]  # one did all the work, the others waited


def _migrate_at_once(url: str, n: int) -> tuple[list[int], list[BaseException]]:
    """Open ``n`` pools (a connection each), then migrate from all of them at one instant."""
    pools = [ConnectionPool(url, min_size=1, max_size=1, open=True,
                            kwargs={"row_factory": dict_row}) for _ in range(n)]
    barrier = threading.Barrier(n)
    counts: list[int] = []
    errors: list[BaseException] = []

    def go(pool: ConnectionPool) -> None:
        pool.wait()
        barrier.wait()
        try:
            counts.append(len(migrate(pool)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for pool in pools:
        pool.close()
    return counts, errors


def test_connections_released_at_the_same_instant_never_collide(fresh_database) -> None:
    """The tightest start: eight connections open first, then a barrier lets them all go."""
    names = [name for name, _sql in migration_scripts()]
    for _round in range(3):  # without the lock around the table's creation, every round crashed
        url = fresh_database()
        counts, errors = _migrate_at_once(url, 8)
        assert errors == []
        assert sorted(counts) == [0] * 7 + [len(names)]
        assert _recorded(url) == names


@pytest.mark.timeout(60)
def test_an_up_to_date_database_is_not_locked(fresh_database) -> None:
    """A migrated database costs one query: no advisory lock is taken (or left behind)."""
    url = fresh_database()
    with ConnectionPool(url, min_size=1, max_size=1, kwargs={"row_factory": dict_row}) as pool:
        migrate(pool)
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (0x6E657875,))  # hold the lock
            assert migrate(pool) == []  # does not wait for it
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            ).fetchone()[0] == 0

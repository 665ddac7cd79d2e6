"""Shared fixtures: real PostgreSQL and Redis (the CI machine has both on loopback).

``NEXUSFLOW_TEST_DATABASE_URL`` / ``NEXUSFLOW_TEST_REDIS_URL`` choose the servers (defaults: the
CI machine's ``postgresql://root@127.0.0.1:5432/test`` and ``redis://127.0.0.1:6379/0``). When
neither answers, the embedded services are started in a temporary data folder, so the suite
passes on a machine with no servers at all. Each test session gets its own fresh database and
its own Redis logical database, dropped at the end.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from nftest import WorkerPool, flow, node, settings_env, wait_run  # noqa: F401  (re-exported)

FIXTURES = Path(__file__).parent / "fixtures"
FLOWS = FIXTURES / "flows"


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def backend_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Return ``(admin database URL, redis base URL)`` of real servers, embedded if needed."""
    db = os.environ.get("NEXUSFLOW_TEST_DATABASE_URL", "postgresql://root@127.0.0.1:5432/test")
    rd = os.environ.get("NEXUSFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _reachable(db) and _reachable(rd):
        yield db, rd
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide PostgreSQL and Redis ({db}, {rd}); neither may be skipped")
    import tempfile

    from nexusflow_kernel.services import ensure_services, stop_services

    # Not under pytest's tmp folder: pytest resets its mode to 0700 at each session start,
    # which would lock the embedded PostgreSQL (run as a system user under root) out.
    data_dir = Path(tempfile.mkdtemp(prefix="nexusflow-embedded-"))
    urls = ensure_services(data_dir)
    try:
        yield urls.database_url, urls.redis_url
    finally:
        stop_services(data_dir)


@pytest.fixture(scope="session")
def database_url(backend_urls: tuple[str, str]) -> Iterator[str]:
    """Create a fresh PostgreSQL database for this test session; drop it afterwards."""
    import psycopg

    admin_url = backend_urls[0]
    name = f"nf_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    url = urlunsplit(parts._replace(path="/" + name))
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def redis_url(backend_urls: tuple[str, str]) -> str:
    """Return a Redis URL on a logical database kept for these tests (flushed per test)."""
    parts = urlsplit(backend_urls[1])
    db = int(os.environ.get("NEXUSFLOW_TEST_REDIS_DB", "13"))
    # Under pytest-xdist (``./dev test`` runs two processes) each process flushes its own
    # logical database: the base one plus the process's index (gw0, gw1, ...).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        db += int(worker[2:])
    if db > 15:
        raise pytest.UsageError(f"Redis logical database {db} does not exist (0-15): lower "
                                "NEXUSFLOW_TEST_REDIS_DB or the number of test processes")
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups from the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the browser tests in one pytest-xdist process, one after another.

    They start JupyterLab (``./dev lab`` too) and Chromium and time what a user sees; run side
    by side they would share the two cores with each other and measure the machine. The rest
    of the suite runs in the other process meanwhile (``--dist loadgroup``).
    """
    here = Path(__file__).parent
    groups = {here / "ui": "browser", here / "test_dev_lab.py": "browser",
              here / "hub": "hub"}  # the Hub tests share one Hub
    for item in items:
        path = Path(item.path)
        for place, group in groups.items():
            if place == path or place in path.parents:
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[str]:
    """Flush the test Redis database before and after the test."""
    import redis

    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield redis_url
    conn.flushdb()
    conn.close()


@pytest.fixture
def settings(database_url: str, clean_redis: str, tmp_path: Path):
    """Return engine ``Settings`` on the test database and a flushed Redis database."""
    from nexusflow_kernel.settings import Settings

    return replace(
        Settings.from_env(),
        database_url=database_url,
        redis_url=clean_redis,
        data_dir=tmp_path / "data",
        lease_s=10.0,
        heartbeat_s=1.0,
        reconcile_interval_s=0.5,
        requeue_grace_s=2.0,
        allow_private_http=True,  # the tests' HTTP servers listen on loopback
    )


@pytest.fixture
def workers(settings) -> Iterator[WorkerPool]:
    """Start worker processes on the test backends with ``workers.start(n)``."""
    pool = WorkerPool(settings)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def engine(settings):
    """An ``Engine`` on the test backends."""
    from nexusflow_kernel.engine import Engine

    return Engine(settings)

"""Backends and processes of one bench run: a fresh database, a private Redis db, workers.

Everything the bench creates it removes: the PostgreSQL database is dropped, the Redis logical
database is flushed, worker process groups are stopped (then killed), in ``finally`` blocks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
"""The folder that holds the ``bench`` package (the repository root)."""

DEFAULT_DB = "postgresql://root@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_REDIS_DB = 12


@dataclass(frozen=True)
class Backends:
    database_url: str
    """The fresh database of this bench run."""
    redis_url: str
    """The private logical Redis database of this bench run."""
    admin_url: str
    """The database the fresh one was created from (where it is dropped)."""

    def env(self, data_dir: Path | None = None) -> dict[str, str]:
        """Return the environment that points a child process at these backends."""
        env = dict(os.environ)
        env.update({"NEXUSFLOW_DATABASE_URL": self.database_url,
                    "NEXUSFLOW_REDIS_URL": self.redis_url,
                    "BENCH_REDIS_URL": self.redis_url,
                    "PYTHONPATH": os.pathsep.join(
                        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])])})
        if data_dir is not None:
            env["NEXUSFLOW_DATA_DIR"] = str(data_dir)
        return env


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


def create_database(admin_url: str) -> str:
    import psycopg

    name = f"nf_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_path(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s",
                     (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def backends(admin_url: str | None = None, redis_base: str | None = None,
             redis_db: int | None = None) -> Iterator[Backends]:
    """Create a fresh database and flush a private Redis db; undo both afterwards."""
    import redis

    admin_url = admin_url or os.environ.get("NEXUSFLOW_DATABASE_URL") or DEFAULT_DB
    base = redis_base or os.environ.get("NEXUSFLOW_REDIS_URL") or DEFAULT_REDIS
    db = redis_db if redis_db is not None else int(os.environ.get("BENCH_REDIS_DB",
                                                                  DEFAULT_REDIS_DB))
    redis_url = with_path(base, str(db))
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    url = create_database(admin_url)
    try:
        yield Backends(url, redis_url, admin_url)
    finally:
        try:
            from nexusflow_kernel.runstate.db import close_pools

            close_pools()
        except Exception:
            pass
        try:
            drop_database(admin_url, url)
        finally:
            client.flushdb()
            client.close()


def tree_rss(pids: list[int], recursive: bool = True) -> int:
    """Return the summed resident memory of processes (and their descendants), in bytes."""
    total = 0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *(root.children(recursive=True) if recursive else [])]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total


class RssSampler:
    """Samples the summed RSS of process trees in a thread; ``peak`` is the highest seen."""

    def __init__(self, pids_fn, interval: float = 0.02, recursive: bool = True) -> None:
        self.pids_fn = pids_fn
        self.recursive = recursive
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peak = tree_rss(self.pids_fn(), self.recursive)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss(self.pids_fn(), self.recursive))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.peak = max(self.peak, tree_rss(self.pids_fn(), self.recursive))


class ProcessGroup:
    """Child processes started in their own sessions; stopped with SIGTERM, then SIGKILL."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], env: dict[str, str], log: Path | None = None,
              prefix: list[str] | None = None) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen([*(prefix or []), *cmd], env=env, cwd=str(ROOT),
                                stdout=out, stderr=out if log else subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"process {p.args} exited with {p.returncode}")

    def stop(self, timeout: float = 15.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs.clear()


def nexus_worker_cmd(n: int) -> list[str]:
    from nexusflow_kernel.workers import worker_argv

    return worker_argv(n, grace_s=5)


def raw_worker_cmd(queue: str) -> list[str]:
    return [sys.executable, "-m", "bench.rqworker", queue]


def wait_workers(redis_url: str, queue: str, n: int, timeout: float = 60.0,
                 group: ProcessGroup | None = None) -> None:
    """Wait until ``n`` RQ workers serve ``queue`` (registered in Redis)."""
    import redis
    from rq import Queue, Worker

    conn = redis.Redis.from_url(redis_url)
    q = Queue(queue, connection=conn)
    end = time.monotonic() + timeout
    while Worker.count(connection=conn, queue=q) < n:
        if group is not None:
            group.check_alive()
        if time.monotonic() > end:
            raise TimeoutError(f"{n} workers on {queue!r} did not start within {timeout}s")
        time.sleep(0.05)
    conn.close()

"""Start private PostgreSQL and Redis servers in a data folder when no URL is configured.

The data folder holds::

    services.json      where the servers listen: pids, URLs, ports (rewritten atomically)
    services.lock      ``flock``-ed while servers start or stop, so concurrent callers agree
    credentials.json   passwords generated once (mode 0600)
    postgres/          the PostgreSQL cluster; its unix socket lives in it too
    redis/             redis.conf, the append-only file, the pid file
    logs/              postgres.log, redis.log

Both servers detach (their own session, parented to init), so they outlive the process that
started them: ``nexusflow run`` may start them, then JupyterLab, workers and notebook kernels,
each a separate process, find them through ``services.json``.

PostgreSQL listens on a unix socket in its own 0700 folder, so only its owner (and root) can
reach it and ``trust`` authentication is safe there. When that socket path would pass the
kernel's limit (about 107 bytes), it listens on 127.0.0.1 with a free port and a password.
Redis always listens on 127.0.0.1 with a password: redis-py and RQ URLs then keep the
``/<db>`` path meaning "logical database".

PostgreSQL refuses to run as root. When the caller is root (CI, containers), the PostgreSQL
commands run as the dedicated system user :data:`POSTGRES_OS_USER`, created on first use; it
owns the cluster folder, and the folders above the data folder and the PostgreSQL binaries get
the "search" bit for others (``o+x``, never read) so that user can reach them. Whatever takes
that bit away again cuts the running PostgreSQL off its files (pytest does so to its temporary
root at every session start), so a root-run data folder belongs where nothing tightens it.
Redis runs as the caller. A normal user runs both as themself and nothing outside the data
folder changes.
"""

from __future__ import annotations

import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ..settings import Settings, mask_url
from ._common import (
    POSTGRES_DATABASE,
    POSTGRES_OS_USER,
    SERVICES,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ServiceURLs,
    _answers,
    _credentials,
    _locked,
    _log_path,
    _postmaster_pid,
    _prepare_data_dir,
    _read_pid,
    _read_state,
    _terminate,
    _urls,
    _write_state,
    logger,
)
from ._postgres import _start_postgres
from ._redis import _start_redis


def ensure_services(data_dir: Path) -> ServiceURLs:
    """Return the URLs of the embedded servers, starting those that do not answer.

    When both answer this only reads ``services.json`` and knocks on two sockets (about a
    millisecond); otherwise it takes the data folder's lock and calls :func:`start_services`.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    state = _read_state(data_dir)
    if all(_answers(name, state.get(name)) for name in SERVICES):
        return _urls(state)
    return start_services(data_dir)


def start_services(data_dir: Path) -> ServiceURLs:
    """Start whichever embedded server is not running, record both and return their URLs."""
    import subprocess

    data_dir = _prepare_data_dir(Path(data_dir))
    with _locked(data_dir):
        state = _read_state(data_dir)
        credentials = _credentials(data_dir)
        for name, start in (("redis", _start_redis), ("postgres", _start_postgres)):
            entry = state.get(name)
            if _answers(name, entry):
                continue
            began = time.monotonic()
            try:
                state[name] = start(data_dir, entry or {}, credentials)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                raise ServiceError(
                    f"embedded {name} in {data_dir} failed to start ({exc}); "
                    f"see {_log_path(data_dir, name)}"
                ) from exc
            _write_state(data_dir, state)
            logger.info(
                "started embedded %s in %.2fs (%s)",
                name, time.monotonic() - began, mask_url(state[name]["url"]),
            )
        return _urls(state)


def stop_services(data_dir: Path) -> None:
    """Shut both embedded servers down cleanly (killing one that hangs); fine if none runs."""
    data_dir = Path(data_dir).expanduser().absolute()
    if not data_dir.is_dir():
        return
    with _locked(data_dir):
        state = _read_state(data_dir)
        pg_pid = _postmaster_pid(data_dir / "postgres")
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        _terminate("postgres", pg_pid, signal.SIGINT, data_dir)
        # SIGTERM makes Redis flush and fsync the append-only file before it exits.
        _terminate("redis", _read_pid(data_dir / "redis" / "redis.pid"), signal.SIGTERM, data_dir)
        for name in SERVICES:
            if name in state:
                state[name]["pid"] = None
        if state:
            _write_state(data_dir, state)


def services_status(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Describe each embedded server: running, pid, url (password masked), data and log."""
    data_dir = Path(data_dir).expanduser().absolute()
    state = _read_state(data_dir)
    status: dict[str, dict[str, Any]] = {}
    for name in SERVICES:
        entry = state.get(name) or {}
        running = _answers(name, entry)
        status[name] = {
            "running": running,
            "pid": entry.get("pid") if running else None,
            "url": mask_url(entry["url"]) if entry.get("url") else None,
            "data": str(data_dir / name),
            "log": str(_log_path(data_dir, name)),
        }
    return status


__all__ = [
    "POSTGRES_DATABASE",
    "POSTGRES_OS_USER",
    "SERVICES",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "ServiceURLs",
    "ensure_services",
    "resolve_backends",
    "services_status",
    "start_services",
    "stop_services",
]


def resolve_backends(settings: Settings) -> Settings:
    """Return ``settings`` with both backend URLs set, starting the embedded services for
    whichever of PostgreSQL and Redis has no URL configured (nothing starts when both are)."""
    if not settings.embedded:
        return settings
    urls = ensure_services(settings.data_dir)
    return replace(
        settings,
        database_url=settings.database_url or urls.database_url,
        redis_url=settings.redis_url or urls.redis_url,
    )

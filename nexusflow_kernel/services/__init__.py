"""Start private PostgreSQL and Redis servers in a data folder when no URL is configured.

The data folder holds::

    services.json      where the servers listen: pids, URLs, ports (rewritten atomically)
    services.lock      ``flock``-ed while servers start or stop, so concurrent callers agree
    credentials.json   passwords generated once (mode 0600)
    postgres/          the PostgreSQL cluster; its unix socket lives in it too
    redis/             redis.conf, the append-only file, the pid file
    logs/              postgres.log, redis.log

Both servers detach (their own session, parented to init), so every process — JupyterLab,
workers, notebook kernels, ``nexusflow run`` — finds them through ``services.json``. They run as
long as a process that uses them runs (see ``_lifetime``): whoever started them stops them when
it exits, unless another process still uses them, or they were started with ``nexusflow
services start`` (then they run until ``nexusflow services stop``).

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

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ..settings import Settings, mask_url
from . import _lifetime
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
    """Return the URLs of the embedded servers, starting (and keeping) those that do not answer.

    When both answer this only reads ``services.json`` and knocks on two sockets (about a
    millisecond); otherwise it takes the data folder's lock and calls :func:`start_services`.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    state = _read_state(data_dir)
    if all(_answers(name, state.get(name)) for name in SERVICES):
        return _urls(state)
    return start_services(data_dir)


def start_services(data_dir: Path) -> ServiceURLs:
    """Start whichever embedded server is not running, keep both running until
    :func:`stop_services` (``nexusflow services start``), and return their URLs."""
    data_dir = _prepare_data_dir(Path(data_dir))
    with _locked(data_dir):
        state = _read_state(data_dir)
        _start_missing(data_dir, state, SERVICES)
        for name in SERVICES:
            state[name]["kept"] = True
        _write_state(data_dir, state)
        return _urls(state)


def use_services(data_dir: Path, names: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """Return the URLs of the embedded servers ``names``, starting those that do not answer,
    and count this process among their users until it exits (or calls :func:`leave_services`).

    The last user to leave stops a server that is not kept. A process that uses them already
    only reads ``services.json`` and knocks on their sockets.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    if _lifetime.registered(data_dir, names):
        state = _read_state(data_dir)
        if all(_answers(name, state.get(name)) for name in names):
            return {name: state[name]["url"] for name in names}
    data_dir = _prepare_data_dir(data_dir)
    with _locked(data_dir):
        state = _read_state(data_dir)
        _start_missing(data_dir, state, names)
        user = _lifetime.me()
        for name in names:
            if not _lifetime.kept(state[name]):
                _lifetime.add_user(state[name], user)
        _write_state(data_dir, state)
    _lifetime.remember(data_dir, names)
    return {name: state[name]["url"] for name in names}


def leave_services(data_dir: Path) -> list[str]:
    """Stop using the embedded servers of ``data_dir``; stop those nobody else uses and that
    are not kept. Return the names of the servers stopped."""
    data_dir = Path(data_dir).expanduser().absolute()
    names = _lifetime.forget(data_dir)
    if not names or not data_dir.is_dir():
        return []
    with _locked(data_dir):
        state = _read_state(data_dir)
        stop = [name for name in SERVICES if name in names and name in state
                and _lifetime.remove_user(state[name], os.getpid())]
        _stop(data_dir, state, stop)
        _write_state(data_dir, state)
    for name in stop:
        logger.info("stopped embedded %s: its last user left", name)
    return stop


def stop_services(data_dir: Path) -> None:
    """Shut both embedded servers down cleanly (killing one that hangs); fine if none runs."""
    data_dir = Path(data_dir).expanduser().absolute()
    if not data_dir.is_dir():
        return
    with _locked(data_dir):
        state = _read_state(data_dir)
        _stop(data_dir, state, SERVICES)
        if state:
            _write_state(data_dir, state)


def _start_missing(data_dir: Path, state: dict[str, Any], names: tuple[str, ...]) -> None:
    """Start the servers in ``names`` that do not answer (under the lock); update ``state``.

    A server started here is not kept and has no user yet; one that was restarted keeps what
    its previous entry said (kept, and the users still running)."""
    import subprocess

    credentials = _credentials(data_dir)
    for name, start in (("redis", _start_redis), ("postgres", _start_postgres)):
        if name not in names:
            continue
        entry = state.get(name)
        if _answers(name, entry):
            continue
        began = time.monotonic()
        try:
            new = start(data_dir, entry or {}, credentials)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise ServiceError(
                f"embedded {name} in {data_dir} failed to start ({exc}); "
                f"see {_log_path(data_dir, name)}"
            ) from exc
        new["kept"] = bool(entry and entry.get("pid") and _lifetime.kept(entry))
        new["users"] = _lifetime.live_users(entry)
        state[name] = new
        _write_state(data_dir, state)
        logger.info(
            "started embedded %s in %.2fs (%s)",
            name, time.monotonic() - began, mask_url(state[name]["url"]),
        )


def _stop(data_dir: Path, state: dict[str, Any], names: Any) -> None:
    """Stop the servers ``names`` of ``data_dir`` (under the lock); they are no longer kept."""
    if "postgres" in names:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
        _terminate("postgres", _postmaster_pid(data_dir / "postgres"), signal.SIGINT, data_dir)
    if "redis" in names:
        # SIGTERM makes Redis flush and fsync the append-only file before it exits.
        _terminate("redis", _read_pid(data_dir / "redis" / "redis.pid"), signal.SIGTERM,
                   data_dir)
    for name in names:
        if name in state:
            state[name].update(pid=None, kept=False, users=[])


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
            "kept": running and _lifetime.kept(entry),
            "users": [u["pid"] for u in _lifetime.live_users(entry)] if running else [],
        }
    return status


def resolve_backends(settings: Settings) -> Settings:
    """Return ``settings`` with both backend URLs set, starting the embedded server for
    whichever of PostgreSQL and Redis has no URL configured (nothing starts when both are).

    This process then counts among that server's users (see :func:`use_services`). Policies
    that depend on whether the backends are the embedded ones (the private-HTTP default) are
    pinned first: filled-in URLs do not make a zero-config setup look shared."""
    settings = replace(settings, allow_private_http=settings.allows_private_http())
    names = tuple(name for name, url in (("postgres", settings.database_url),
                                         ("redis", settings.redis_url)) if not url)
    if not names:
        return settings
    urls = use_services(settings.data_dir, names)
    return replace(
        settings,
        database_url=settings.database_url or urls["postgres"],
        redis_url=settings.redis_url or urls["redis"],
    )


_lifetime.at_exit(leave_services)


__all__ = [
    "POSTGRES_DATABASE",
    "POSTGRES_OS_USER",
    "SERVICES",
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "ServiceURLs",
    "ensure_services",
    "leave_services",
    "resolve_backends",
    "services_status",
    "start_services",
    "stop_services",
    "use_services",
]

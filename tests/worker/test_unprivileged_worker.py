"""Issue #13, finding 1: workers need no root, only the Docker socket's group.

``nexusflow worker`` runs here as an unprivileged system user in the ``docker`` group (created
by the test when it runs as root, the Docker socket given group access as a deployment does),
against the test's PostgreSQL and Redis, and runs a flow whose code node runs in the Docker
sandbox. Its processes have that user's uid, no capabilities, and the ``docker`` group.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nftest import flow, node, settings_env, wait_run

from nexusflow_kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
USER = "nfworker-test"
SOCKET = "/var/run/docker.sock"


def ensure_sandbox() -> None:
    from nexusflow_worker.sandbox import build_image, engine_error

    if engine_error() is not None:
        subprocess.run(["bash", str(ROOT / "scripts" / "setup-docker.sh")], check=True)
    problem = engine_error()
    assert problem is None, problem
    build_image(Settings.from_env().data_dir)


def ensure_user() -> pwd.struct_passwd:
    """Create the system user (in the docker group) and give the socket group access."""
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        subprocess.run(["groupadd", "--system", "docker"], check=True)
        docker = grp.getgrnam("docker")
    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "--groups", "docker", USER], check=True)
        user = pwd.getpwnam(USER)
    assert USER in grp.getgrnam("docker").gr_mem, "the test user must be in the docker group"
    # As a deployment does: the socket belongs to root:docker, read-write for the group.
    socket_stat = os.stat(SOCKET)
    if socket_stat.st_gid != docker.gr_gid or socket_stat.st_mode & 0o060 != 0o060:
        os.chown(SOCKET, -1, docker.gr_gid)
        os.chmod(SOCKET, 0o660)
    return user


def blocked_ancestor(path: str) -> tuple[str, str] | None:
    """Return ``(directory, child)`` where others may not traverse on the way to ``path``."""
    parts = Path(path).parts
    for i in range(1, len(parts) - 1):
        directory = os.path.join(*parts[: i + 1])
        if not os.stat(directory).st_mode & 0o001:
            return directory, parts[i + 1]
    return None


def as_user_command(user: pwd.struct_passwd, argv: list[str], scratch: Path) -> list[str]:
    """Wrap ``argv`` to run as ``user`` (uid, its groups, no capabilities).

    This machine's Python may live under a directory only root can traverse (a pyenv build
    in /root). A deployment installs it where the worker's user can read it; here a private
    mount namespace makes that one directory traversable for the worker alone, nothing else.
    """
    drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            "--inh-caps=-all", "--"]
    blocked = blocked_ancestor(os.path.realpath(sys.executable))
    if blocked is None:
        return drop + argv
    directory, child = blocked
    keep = scratch / "keep"
    script = " && ".join([
        f"mkdir -p {shlex.quote(str(keep))}",
        f"mount --bind {shlex.quote(os.path.join(directory, child))} {shlex.quote(str(keep))}",
        f"mount -t tmpfs -o mode=755 tmpfs {shlex.quote(directory)}",
        f"mkdir {shlex.quote(os.path.join(directory, child))}",
        f"mount --bind {shlex.quote(str(keep))} {shlex.quote(os.path.join(directory, child))}",
        "exec " + shlex.join(drop + argv),
    ])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout.split()
    found = [int(p) for p in out]
    for child in list(found):
        found.extend(descendants(child))
    return found


@pytest.fixture
def unprivileged_worker(settings, tmp_path_factory) -> Iterator[tuple[subprocess.Popen, int]]:
    ensure_sandbox()
    scratch = tmp_path_factory.mktemp("unprivileged")
    os.chmod(scratch, 0o755)
    if os.geteuid() == 0:
        user = ensure_user()
        home = scratch / "home"
        home.mkdir()
        os.chown(home, user.pw_uid, user.pw_gid)
    else:  # already unprivileged: run as this user, which must be in the docker group
        user = pwd.getpwuid(os.geteuid())
        home = Path(user.pw_dir)
        assert grp.getgrnam("docker").gr_gid in os.getgroups(), \
            "the user running the tests must be in the docker group"
    env = settings_env(settings)
    env.update({
        "HOME": str(home),
        "NEXUSFLOW_DATA_DIR": str(home / "nexusflow"),
        "NEXUSFLOW_CODE_ISOLATION": "docker",
        "PYTHONDONTWRITEBYTECODE": "1",
        "NEXUSFLOW_LOG_LEVEL": "INFO",
    })
    argv = [sys.executable, "-m", "nexusflow_worker", "--processes", "1",
            "--queues", "default,sandbox", "--grace", "10"]
    command = as_user_command(user, argv, scratch) if os.geteuid() == 0 else argv
    log = open(scratch / "worker.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, env=env, cwd=str(home), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, user.pw_uid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        print((scratch / "worker.log").read_text(errors="replace")[-4000:])


def test_worker_runs_a_code_node_in_docker_without_root(engine, unprivileged_worker) -> None:
    proc, uid = unprivileged_worker
    doc = flow(
        node("A", expression="params['n'] + 1"),
        node("code", "code", language="python",
             source="import os\n\ndef main(inputs, params):\n"
                    "    return {'double': inputs['A'] * 2, 'uid': os.getuid()}\n"),
        node("B", expression="inputs['code']['double']"),
        edges=[("A", "code"), ("code", "B")],
    )
    run = wait_run(engine, engine.start_run(doc, inputs={"n": 20}), 120)
    assert run["status"] == "succeeded", {k: v.get("error") for k, v in run["nodes"].items()}
    assert run["nodes"]["B"]["output"] == 42
    assert run["nodes"]["code"]["output"]["uid"] == 65534  # the sandbox's own user
    # Every worker process runs as the unprivileged user, with no capabilities, in docker.
    docker_gid = grp.getgrnam("docker").gr_gid
    pids = [p for p in [proc.pid, *descendants(proc.pid)]
            if "nexusflow_worker" in Path(f"/proc/{p}/cmdline").read_bytes().decode(
                errors="replace")]
    assert len(pids) >= 2, pids  # the supervisor and its worker child
    for pid in pids:
        status = proc_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
        assert str(docker_gid) in status["Groups"].split(), status["Groups"]
    assert uid != 0
    time.sleep(0.1)
    assert proc.poll() is None

"""Who stops the embedded servers: the last process that uses them, unless they are kept.

Real servers in scratch folders, real processes: scripts that resolve their backends like the
CLI or a worker does, a real JupyterLab with a real kernel, a notebook run by nbclient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from nexusflow_kernel.cli.services import services as services_cli
from nexusflow_kernel.services import services_status, stop_services
from tests.kernel.services.test_services import private_base, server_pids

# Resolve the backends as every process does (the CLI, a kernel, a worker), report, then
# wait for a line on stdin before exiting normally (or get killed).
USER = """
import json, os, sys
from nexusflow_kernel.services import resolve_backends, services_status
from nexusflow_kernel.settings import Settings
s = resolve_backends(Settings.from_env())
status = services_status(s.data_dir)
print(json.dumps({"pid": os.getpid(), "users": {k: v["users"] for k, v in status.items()},
                  "kept": {k: v["kept"] for k, v in status.items()}}), flush=True)
sys.stdin.readline()
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUSFLOW_")}
    return {**env, "NEXUSFLOW_DATA_DIR": str(data_dir), **extra}


class User:
    """A process that uses the embedded servers until told to exit."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", USER], env=_env(data_dir, **env),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, f"the user process failed (exit {self.proc.wait()})"
        self.report = json.loads(line)

    def exit(self) -> None:
        self.proc.communicate("\n", timeout=60)
        assert self.proc.returncode == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with private_base() as base:
        try:
            yield base / "data"
        finally:
            stop_services(base / "data")


def running(data_dir: Path) -> dict[str, bool]:
    return {name: info["running"] for name, info in services_status(data_dir).items()}


def test_the_process_that_started_them_stops_them_when_it_exits(data_dir) -> None:
    user = User(data_dir)
    assert user.report["users"] == {"postgres": [user.report["pid"]],
                                    "redis": [user.report["pid"]]}
    assert user.report["kept"] == {"postgres": False, "redis": False}
    user.exit()
    assert running(data_dir) == {"postgres": False, "redis": False}
    assert server_pids(data_dir) == {"postgres": [], "redis": []}  # really gone


def test_the_last_user_out_stops_them_and_not_before(data_dir) -> None:
    first, second = User(data_dir), User(data_dir)
    assert sorted(second.report["users"]["redis"]) == sorted(
        [first.report["pid"], second.report["pid"]])
    first.exit()  # the one that started them leaves: the other still uses them
    assert running(data_dir) == {"postgres": True, "redis": True}
    assert services_status(data_dir)["postgres"]["users"] == [second.report["pid"]]
    second.exit()
    assert running(data_dir) == {"postgres": False, "redis": False}


def test_a_killed_user_does_not_keep_them_forever(data_dir) -> None:
    first, second = User(data_dir), User(data_dir)
    first.kill()  # no exit handler runs
    assert running(data_dir) == {"postgres": True, "redis": True}
    assert services_status(data_dir)["redis"]["users"] == [second.report["pid"]]
    second.exit()
    assert running(data_dir) == {"postgres": False, "redis": False}


def test_only_the_server_without_a_url_is_started_and_stopped(data_dir, redis_url) -> None:
    user = User(data_dir, NEXUSFLOW_REDIS_URL=redis_url)
    assert running(data_dir) == {"postgres": True, "redis": False}
    assert user.report["users"]["postgres"] == [user.report["pid"]]
    user.exit()
    assert running(data_dir) == {"postgres": False, "redis": False}


def test_services_start_keeps_them_until_services_stop(data_dir) -> None:
    runner = CliRunner()
    started = runner.invoke(services_cli, ["start", "--data-dir", str(data_dir)])
    assert started.exit_code == 0, started.output
    assert "they run until `nexusflow services stop`" in started.output
    User(data_dir).exit()
    assert running(data_dir) == {"postgres": True, "redis": True}
    status = runner.invoke(services_cli, ["status", "--data-dir", str(data_dir), "--json"])
    assert {v["kept"] for v in json.loads(status.output).values()} == {True}
    assert runner.invoke(services_cli, ["stop", "--data-dir", str(data_dir)]).exit_code == 0
    assert running(data_dir) == {"postgres": False, "redis": False}


def test_services_start_adopts_servers_a_process_started(data_dir) -> None:
    user = User(data_dir)
    assert CliRunner().invoke(services_cli, ["start", "--data-dir", str(data_dir)]).exit_code == 0
    user.exit()
    assert running(data_dir) == {"postgres": True, "redis": True}


# ---------------------------------------------------------------- JupyterLab and kernels
def _execute(lab, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel of ``lab`` through its websocket; return what it printed."""
    import websocket

    ws = websocket.create_connection(
        f"{lab.url.replace('http', 'ws', 1)}api/kernels/{kernel_id}/channels"
        f"?token={lab.token}", timeout=timeout)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
    out, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "execute_reply":
                return "".join(out)
    finally:
        ws.close()
    raise AssertionError(f"the kernel did not answer within {timeout} s")


def _api(lab, method: str, path: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"{lab.url}api/{path}", method=method,
                                 headers={"Authorization": f"token {lab.token}"},
                                 data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def _wait(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s")


def test_jupyterlab_and_its_kernel_stop_the_servers_lab_started(data_dir, tmp_path) -> None:
    from tests.ui.conftest import running_lab

    env = _env(data_dir, NEXUSFLOW_LOCAL_WORKER_PROCESSES="1")
    with running_lab(tmp_path, env, token="nexusflow-lifetime",
                     log_name="jupyter-embedded-lifetime.log") as lab:
        info = json.loads(next((tmp_path / "runtime").glob("jpserver-*.json")).read_text())
        lab_pid = info["pid"]
        # The extension starts the servers (zero-config) and supervises a worker.
        _wait(lambda: services_status(data_dir)["postgres"]["users"] == [lab_pid],
              "JupyterLab did not start the embedded servers")
        kernel = _api(lab, "POST", "kernels")
        printed = _execute(lab, kernel["id"], (
            "import os\n"
            "from nexusflow_kernel.notebook.run import get_engine\n"
            "from nexusflow_kernel.services import services_status\n"
            "e = get_engine()\n"
            "print('KERNEL', os.getpid(), services_status(e.settings.data_dir)['redis']['users'])"
        ))
        kernel_pid = int(printed.split()[1])
        assert sorted(services_status(data_dir)["redis"]["users"]) == sorted(
            [lab_pid, kernel_pid])
        pids = server_pids(data_dir)
        assert pids["postgres"] and pids["redis"]

        os.kill(lab_pid, signal.SIGTERM)  # what Ctrl-C (twice) or a service manager does
        _wait(lambda: not _alive(lab_pid), "JupyterLab did not exit", 60)
        assert not _alive(kernel_pid)
        assert running(data_dir) == {"postgres": False, "redis": False}
        assert server_pids(data_dir) == {"postgres": [], "redis": []}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False


def test_a_notebook_that_started_them_stops_them_when_its_kernel_ends(data_dir,
                                                                      tmp_path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from nexusflow_kernel.notebook.run import get_engine\n"
        "print(get_engine().get_run.__name__)")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute(
        cwd=str(tmp_path), env=_env(data_dir))
    assert "get_run" in "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert running(data_dir) == {"postgres": False, "redis": False}
    assert server_pids(data_dir) == {"postgres": [], "redis": []}

"""A waiting approval survives everything: killed workers and a killed Jupyter server.

The approval waits in PostgreSQL (node state ``waiting``), not in a worker or in the server:
kill every worker and the server while it waits, start a new server with no worker at all,
decide through the new server's REST API, then start workers: the run completes, and the node
that waited is recorded once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from nftest import flow, node, settings_env, wait_run

from nexusflow_kernel.procs import free_port

TOKEN = "nexusflow-crash-test"


@contextmanager
def jupyter_server(settings, base: Path, name: str):
    """Start `jupyter server` with the extension on the test backends (no local workers);
    yield its URL; SIGKILL it when the block ends (as a crash would)."""
    root = base / "root"
    root.mkdir(exist_ok=True)
    env = dict(settings_env(settings), NEXUSFLOW_LOCAL_WORKERS="0",
               JUPYTER_RUNTIME_DIR=str(base / f"runtime-{name}"),
               JUPYTER_DATA_DIR=str(base / "data"))
    port = free_port()
    log = (base / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root",
         "--ip", "127.0.0.1", "--port", str(port), "--ServerApp.port_retries=0",
         f"--ServerApp.token={TOKEN}", f"--ServerApp.root_dir={root}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (base / f"{name}.log").read_text()[-3000:]
            try:
                if call(url, "GET", "node-types")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "jupyter server did not answer in 90 s"
            time.sleep(0.3)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)
        log.close()


def call(url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{url}nexusflow/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_a_waiting_approval_outlives_workers_and_server(engine, settings, workers,
                                                        tmp_path) -> None:
    doc = flow(node("before", expression="'ready'"),
               node("ask", "approval", message="Go live?"),
               node("live", expression="inputs['ask']['comment']"),
               node("stop", "noop"),
               edges=[("before", "ask"), ("ask", "live", "approved"),
                      ("ask", "stop", "rejected")], name="golive")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "golive.nxflow").write_text(json.dumps(doc))
    group = workers.start(2)
    with jupyter_server(settings, tmp_path, "first") as url:
        code, started = call(url, "POST", "runs", {"path": "golive.nxflow"})
        assert code == 201, started
        run_id = started["run_id"]
        deadline = time.monotonic() + 60
        while engine.get_run(run_id)["nodes"]["ask"]["state"] != "waiting":
            assert time.monotonic() < deadline, engine.get_run(run_id)
            time.sleep(0.1)
        # Every worker dies, then the server: nothing of the wait lived in them.
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()
    time.sleep(1.0)
    assert engine.get_run(run_id)["nodes"]["ask"]["state"] == "waiting"
    with jupyter_server(settings, tmp_path, "second") as url:
        code, run = call(url, "GET", f"runs/{run_id}")
        assert code == 200 and run["nodes"]["ask"]["waiting"]["message"] == "Go live?"
        code, done = call(url, "POST", f"runs/{run_id}/nodes/ask/decision",
                          {"approved": True, "comment": "after the crash"})
        assert code == 200, done
        workers.start(1)  # the decision queued the approved branch: a new worker runs it
        run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["live"]["output"] == "after the crash"
    assert run["nodes"]["stop"]["state"] == "skipped"
    assert [a["status"] for a in engine.node_attempts(run_id, "ask")] == ["succeeded"]
    assert [a["status"] for a in engine.node_attempts(run_id, "before")] == ["succeeded"]

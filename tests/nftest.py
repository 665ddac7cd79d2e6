"""Helpers shared by the tests (a module of its own: several folders have a ``conftest``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def settings_env(settings) -> dict[str, str]:
    """Return the environment that makes a child process use ``settings``' backends."""
    from nexusflow_kernel.workers import worker_env

    return worker_env(settings)


class WorkerPool:
    """``nexusflow worker`` processes started by a test; stopped (or killed) afterwards."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.procs: list = []

    def start(self, processes: int = 2, *extra: str, ready_timeout: float = 90.0,
              env: dict[str, str] | None = None):
        """Start ``nexusflow worker --processes N`` and return once all N serve (each has
        registered in Redis), so a test never races the workers' start on a busy machine.
        ``extra``: more options; ``env`` replaces the environment made from the settings."""
        import subprocess

        from nexusflow_kernel.workers import worker_argv

        proc = subprocess.Popen(
            worker_argv(processes, grace_s=10, extra=extra),
            env=env or settings_env(self.settings), start_new_session=True,
        )
        self.procs.append(proc)
        self._wait_ready(proc, processes, ready_timeout)
        return proc

    def _wait_ready(self, proc, processes: int, timeout: float) -> None:
        import time

        import psutil
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(self.settings.redis_url)
        end = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"the workers exited with status {proc.returncode}")
                try:
                    mine = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
                except psutil.NoSuchProcess:
                    mine = set()
                ready = [w for w in Worker.all(connection=conn) if w.pid in mine]
                if len(ready) >= processes:
                    return
                if time.monotonic() > end:
                    raise AssertionError(f"{len(ready)} of {processes} workers registered "
                                         f"within {timeout:g} s")
                time.sleep(0.05)
        finally:
            conn.close()

    def stop(self) -> None:
        import signal
        import subprocess

        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


class LocalHTTPServer:
    """A threaded HTTP server on 127.0.0.1 and a free port for ``handler`` (a
    ``BaseHTTPRequestHandler`` class), serving while used as a context manager; ``url`` is
    its address with ``path``. Its listen backlog is 1024, so a burst of workers' connects is
    never dropped (a dropped SYN costs the client a 1 s retransmit)."""

    def __init__(self, handler: type, path: str = "/") -> None:
        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # read as the constructor listens: a class attribute

        self.httpd = Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(handler, status: int, body: bytes) -> bool:
    """Answer a request of ``handler`` with ``status`` and the JSON ``body``; return whether
    it was sent. A client that went away (a killed worker, a timed-out node) is no error of
    the server's: ``False``."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        return False
    return True


class AuthDigestEcho(BaseHTTPRequestHandler):
    """Answers every GET with ``{"sha": ...}``, a digest of the request's Authorization
    header: which credential arrived, without the value (which a run would mask)."""

    def do_GET(self) -> None:  # noqa: N802
        auth = (self.headers.get("Authorization") or "").encode()
        send_json(self, 200, json.dumps({"sha": hashlib.sha256(auth).hexdigest()[:12]}).encode())

    def log_message(self, *args: object) -> None:
        pass


def wait_for(pred, timeout: float, what: str, interval: float = 0.05):
    """Poll ``pred()`` until it gives a true value and return that; fail naming ``what`` when
    ``timeout`` seconds pass first."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    value = pred()
    if value:
        return value
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_run(engine, run_id: str, timeout: float = 60.0) -> dict:
    """Poll a run until it is final; fail the test when it is not within ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run = engine.get_run(run_id)
        if run["status"] in ("succeeded", "failed", "canceled"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish within {timeout}s: {engine.get_run(run_id)}")


def flow(*nodes: dict, edges: list | None = None, **top) -> dict:
    """Build a flow document: ``flow(node(...), ..., edges=[("A", "B"), ("C", "D", "true")])``."""
    out_edges = []
    for e in edges or []:
        src, dst, *handle = e
        item = {"id": f"{src}-{dst}", "source": src, "target": dst}
        if handle:
            item["source_handle"] = handle[0]
        out_edges.append(item)
    return {"schema": 1, "name": top.pop("name", "test"), "nodes": list(nodes),
            "edges": out_edges, **top}


def node(id: str, type: str = "transform", **config) -> dict:
    """Build a node; ``retry``, ``timeout_s`` and ``trigger_rule`` go to the node, the rest
    to its config."""
    out: dict = {"id": id, "type": type}
    for key in ("retry", "timeout_s", "trigger_rule"):
        if key in config:
            out[key] = config.pop(key)
    out["config"] = config
    return out


class RunningService:
    """A ``NexusFlowService`` serving in a thread of the test, with its own event loop."""

    def __init__(self, settings, *, auth: str = "token", extra: dict | None = None) -> None:
        from nexusflow_server.service.app import NexusFlowService
        from traitlets.config import Config

        from nexusflow_kernel.procs import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        config = Config({
            "NexusFlow": {"database_url": settings.database_url,
                          "redis_url": settings.redis_url, "data_dir": str(settings.data_dir),
                          "secret_key": settings.secret_key, "local_workers": False,
                          "trigger_poll_s": 0.2, **(extra or {})},
            "NexusFlowService": {"ip": "127.0.0.1", "port": self.port, "auth": auth},
        })
        self.app = NexusFlowService(config=config)
        self.app.initialize([])
        import threading

        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nexusflow-service", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise AssertionError(f"the service did not start: {self._error!r}")

    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.stop_event = asyncio.Event()
        ready = asyncio.Event()

        async def main() -> None:
            task = asyncio.create_task(self.app.serve(ready, self.stop_event))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            self._started.set()
            await task

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported by __init__ or stop
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self._thread.join(30)

    def client(self, token: str | None):
        import httpx

        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url + "nexusflow/api/", headers=headers, timeout=30)


def diamond(*, a: dict | None = None, b: dict | None = None, c: dict | None = None,
            d: dict | None = None, **top) -> dict:
    """The design's diamond, ``A → (B ∥ C) → D``, defined once for every test.

    By default: A doubles ``params['n']``, B adds one, C is a condition (``A > 10``) whose
    ``true`` handle leads to D, and D (``none_failed``) reads B. Replace any node to vary it;
    the C → D edge uses the ``true`` handle only while C is a condition.
    """
    a = a or node("A", expression="params['n'] * 2")
    b = b or node("B", expression="inputs['A'] + 1")
    c = c or node("C", "condition", expression="inputs['A'] > 10")
    d = d or node("D", expression="inputs['B']", trigger_rule="none_failed")
    c_to_d = ("C", "D", "true") if c["type"] == "condition" else ("C", "D")
    return flow(a, b, c, d, edges=[("A", "B"), ("A", "C"), ("B", "D"), c_to_d],
                **{"name": "diamond", **top})


class ServiceProcess:
    """``python -m nexusflow_server.service`` (what ``nexusflow server`` runs) as a process of
    its own on the test backends: what a deployment runs, with no Jupyter server anywhere."""

    def __init__(self, settings, *args: str, env: dict[str, str] | None = None,
                 auth: str = "token", timeout: float = 60.0) -> None:
        import subprocess
        import sys
        import time

        import httpx

        from nexusflow_kernel.procs import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        full_env = settings_env(settings)
        full_env.update({"NEXUSFLOW_LOCAL_WORKERS": "0", **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nexusflow_server.service", f"--port={self.port}",
             "--ip=127.0.0.1", f"--auth={auth}", "--NexusFlow.trigger_poll_s=0.2", *args],
            env=full_env, start_new_session=True, stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with status {self.proc.returncode}")
            try:
                if httpx.get(self.url + "nexusflow/api/workers", timeout=2).status_code in (
                        200, 401):
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                self.stop()
                raise AssertionError(f"the service did not answer within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self, token: str | None):
        import httpx

        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url + "nexusflow/api/", headers=headers, timeout=30)


NODE_PACKAGES = ("examples/node-package", "tests/fixtures/node-packages/broken")
"""The example node package and the deliberately broken one, installed by
``installed_node_packages``."""

_installed_packages: list = []


def installed_node_packages():
    """Install the example node package and the broken one (``NODE_PACKAGES``) with pip into
    a temporary folder, once per test session, and return that folder: a process whose
    ``PYTHONPATH`` holds it loads their node types through the ``nexusflow.nodes`` entry
    points, as from any installed package; this environment is left as it was."""
    import atexit
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if _installed_packages:
        return _installed_packages[0]
    repo = Path(__file__).resolve().parents[1]
    target = Path(tempfile.mkdtemp(prefix="nexusflow-node-packages-"))
    atexit.register(shutil.rmtree, target, True)
    # No index and no build isolation: the build backend (hatchling) is a test dependency,
    # so this works offline on a clean clone.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(target),
                    *(str(repo / p) for p in NODE_PACKAGES)], check=True, cwd=target)
    _installed_packages.append(target)
    return target


def with_node_packages(env: dict[str, str]) -> dict[str, str]:
    """Return ``env`` with the installed test node packages on ``PYTHONPATH``."""
    import os

    path = str(installed_node_packages())
    return dict(env, PYTHONPATH=os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p))

"""One-off measurements: import time, compile time, memory growth, websocket event latency."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from nexusflow_kernel.procs import free_port

from . import shapes
from .env import ROOT
from .nexus import FINAL, at_seconds

IMPORT_SNIPPET = ("import time; t = time.perf_counter(); import {mod}; "
                  "print(time.perf_counter() - t)")


def import_time(module: str = "nexusflow_kernel", repeats: int = 5) -> list[float]:
    """Seconds to import ``module`` in a fresh interpreter, ``repeats`` times."""
    out = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", IMPORT_SNIPPET.format(mod=module)],
                             capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


def compile_time(doc: dict[str, Any], repeats: int = 3) -> list[float]:
    """Seconds to validate and compile ``doc`` (load_document + compile_flow)."""
    from nexusflow_kernel.model.compiler import compile_flow
    from nexusflow_kernel.model.document import load_document

    compile_flow(load_document(shapes.chain(3)))  # warm the validators' caches
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        compile_flow(load_document(json.loads(json.dumps(doc))))
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------- memory growth, one size
def _memprobe_main(argv: list[str]) -> None:
    """``python -m bench.probes mem LAYERS WIDTH``: start one lattice run here, wait for it,
    print JSON with this process's RSS before and its peak RSS (bytes)."""
    import psutil

    from nexusflow_kernel.engine import Engine

    from .nexus import run_and_wait

    layers, width = int(argv[0]), int(argv[1])
    engine = Engine()
    engine.check()
    run_and_wait(engine, shapes.chain(2))  # warm: pools, prepared statements, imports
    from .env import RssSampler

    before = psutil.Process().memory_info().rss
    # Sampled, not ru_maxrss: Linux carries ru_maxrss over exec from the parent's fork.
    with RssSampler(lambda: [os.getpid()], interval=0.01, recursive=False) as rss:
        doc = shapes.lattice(layers, width)
        res = run_and_wait(engine, doc, timeout=900)
    peak = rss.peak
    print(json.dumps({"before": before, "peak": peak, "status": res.status,
                      "seconds": res.seconds}))


def memory_probe(env: dict[str, str], layers: int, width: int) -> dict[str, Any]:
    res = subprocess.run([sys.executable, "-m", "bench.probes", "mem", str(layers), str(width)],
                         env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def linear_verdict(sizes: list[int], deltas: list[float]) -> tuple[bool, float]:
    """Return (linear?, ratio of the last segment's slope to the first's).

    Quadratic growth from 1k to 5k to 10k nodes makes the second slope ~2.5x the first;
    linear keeps it ~1 (noise allowed up to 1.6x)."""
    if len(sizes) < 3:
        return True, 1.0
    s1 = (deltas[1] - deltas[0]) / (sizes[1] - sizes[0])
    s2 = (deltas[-1] - deltas[-2]) / (sizes[-1] - sizes[-2])
    if s1 <= 0:
        ratio = 1.0 if s2 <= max(1.0, abs(s1)) * 1.6 else float("inf")
    else:
        ratio = s2 / s1
    return ratio <= 1.6, ratio


# ---------------------------------------------------------------- the Jupyter server
def server_ext_available() -> bool:
    try:
        import nexusflow_server  # noqa: F401
        import websocket  # noqa: F401
    except Exception:
        return False
    return True


class JupyterServer:
    """A ``jupyter server`` with the Nexus-Flow extension on loopback (no local workers)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)
        self.tmp = Path(tempfile.mkdtemp(prefix="nf-bench-jupyter-"))
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> JupyterServer:
        import httpx

        env = self.env
        for sub in ("config", "jdata", "runtime", "root"):
            (self.tmp / sub).mkdir()
        env.update({"JUPYTER_CONFIG_DIR": str(self.tmp / "config"),
                    "JUPYTER_DATA_DIR": str(self.tmp / "jdata"),
                    "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
                    "NEXUSFLOW_DATA_DIR": str(self.tmp / "data")})
        log = open(self.tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.tmp / 'root'}", "--ServerApp.allow_root=True",
             "--ServerApp.jpserver_extensions={'nexusflow_server': True}",
             "--NexusFlow.local_workers=False"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        end = time.monotonic() + 90
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/nexusflow/api/openapi.json",
                              headers={"Authorization": f"token {self.token}"}, timeout=5)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > end:
                self.__exit__()
                raise RuntimeError("jupyter server did not start: "
                                   + (self.tmp / "server.log").read_text()[-2000:])
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        import shutil
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class WebsocketListener(threading.Thread):
    """Reads a run's event websocket until the run-level final event; records latencies."""

    def __init__(self, server: JupyterServer, run_id: str, timeout: float = 120.0) -> None:
        super().__init__(daemon=True)
        self.url = (f"ws://127.0.0.1:{server.port}/nexusflow/api/runs/{run_id}/events")
        self.token = server.token
        self.timeout = timeout
        self.latencies_ms: list[float] = []
        self.error: BaseException | None = None
        self.final = False

    def run(self) -> None:
        import websocket

        try:
            ws = websocket.create_connection(
                self.url, header=[f"Authorization: token {self.token}"], timeout=self.timeout)
            connected = time.time()
            try:
                while True:
                    msg = json.loads(ws.recv())
                    arrived = time.time()
                    at = at_seconds(msg["at"])
                    if at >= connected:
                        self.latencies_ms.append(max(0.0, (arrived - at) * 1000))
                    if msg.get("node") is None and msg.get("state") in FINAL:
                        self.final = True
                        return
            finally:
                ws.close()
        except BaseException as exc:  # reported by the caller
            self.error = exc


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":
    if sys.argv[1:2] == ["mem"]:
        _memprobe_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m bench.probes mem LAYERS WIDTH")

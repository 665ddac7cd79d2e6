"""The measurements of one ``python -m bench`` run, collected into one JSON-able dict."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from . import probes, rawrq, shapes
from .endpoint import SlowEndpoint
from .env import (
    Backends,
    ProcessGroup,
    RssSampler,
    nexus_worker_cmd,
    raw_worker_cmd,
    tree_rss,
    wait_workers,
)
from .nexus import run_and_wait

RAW_QUEUE = "bench-raw"


@dataclass(frozen=True)
class Sizes:
    """How big each shape is: the issue's sizes, or small ones for ``--quick``."""

    drain: int = 1000
    wide_peer: int = 200
    chain_peer: int = 100
    wide: int = 1000
    chain: int = 200
    lattice: tuple[int, int] = (100, 100)
    diamond_s: float = 1.0
    memory: tuple[int, ...] = (10, 50, 100)  # lattice layers of width 100: 1k, 5k, 10k nodes
    memory_width: int = 100
    latency_chain: int = 100
    map_items: int = 10_000
    http_items: int = 1000
    http_delay_s: float = 0.1

    @classmethod
    def quick(cls) -> Sizes:
        return cls(drain=100, wide_peer=20, chain_peer=10, wide=50, chain=20, lattice=(10, 10),
                   diamond_s=0.2, memory=(2, 4, 8), memory_width=25, latency_chain=20,
                   map_items=200, http_items=40)


def nexus_shapes(sz: Sizes, http_url: str | None = None,
                 ) -> list[tuple[str, dict[str, Any], int | None]]:
    """``(name, flow, items)``: ``items`` is the map's item count (``None``: no map)."""
    layers, width = sz.lattice
    out: list[tuple[str, dict[str, Any], int | None]] = [
        (f"wide {sz.wide_peer}", shapes.wide(sz.wide_peer), None),
        (f"chain {sz.chain_peer}", shapes.chain(sz.chain_peer), None),
        (f"wide {sz.wide}", shapes.wide(sz.wide), None),
        (f"chain {sz.chain}", shapes.chain(sz.chain), None),
        (f"lattice {layers}x{width}", shapes.lattice(layers, width), None),
        ("diamond", shapes.diamond(sz.diamond_s), None),
        (f"map {sz.map_items}", shapes.map_items(sz.map_items), sz.map_items),
    ]
    if http_url is not None:
        out.append((f"http map {sz.http_items}", shapes.http_map(sz.http_items, http_url),
                    sz.http_items))
    return out


def celery_peers(sz: Sizes) -> dict[str, Any]:
    """Shape name -> the same shape as Celery canvas primitives (``bench.celerypeer``)."""
    from . import celerypeer as cp

    return {
        f"wide {sz.wide_peer}": lambda: cp.wide(sz.wide_peer),
        f"chain {sz.chain_peer}": lambda: cp.chain_of(sz.chain_peer),
        f"wide {sz.wide}": lambda: cp.wide(sz.wide),
        f"chain {sz.chain}": lambda: cp.chain_of(sz.chain),
        "diamond": lambda: cp.diamond(sz.diamond_s),
        f"map {sz.map_items}": lambda: cp.map_items(sz.map_items),
    }


def raw_peers(sz: Sizes) -> dict[str, Any]:
    """Shape name -> a raw RQ ``depends_on`` run of the same shape (where RQ can express it)."""
    return {
        f"wide {sz.wide_peer}": lambda c: rawrq.wide(c, RAW_QUEUE, sz.wide_peer),
        f"chain {sz.chain_peer}": lambda c: rawrq.chain(c, RAW_QUEUE, sz.chain_peer),
        f"wide {sz.wide}": lambda c: rawrq.wide(c, RAW_QUEUE, sz.wide),
        f"chain {sz.chain}": lambda c: rawrq.chain(c, RAW_QUEUE, sz.chain),
        "diamond": lambda c: rawrq.diamond(c, RAW_QUEUE, sz.diamond_s),
    }


class Suite:
    def __init__(self, be: Backends, *, workers: list[int], repeats: int, quick: bool,
                 console: Console, websocket: bool = True, only: set[str] | None = None,
                 memory: bool = True, depends_on: bool = True, celery: bool = True) -> None:
        self.with_celery = celery
        self.only = only
        self.depends_on = depends_on
        self.with_memory = memory
        self.be = be
        self.workers = workers
        self.repeats = repeats
        self.quick = quick
        self.sz = Sizes.quick() if quick else Sizes()
        self.console = console
        self.websocket = websocket
        self.tmp = Path(tempfile.mkdtemp(prefix="nf-bench-"))
        self.env = be.env(self.tmp / "data")
        # the http map's endpoint listens on 127.0.0.1: the bench's workers may reach it
        self.env["NEXUSFLOW_ALLOW_PRIVATE_HTTP"] = "1"
        self.redis = redis.Redis.from_url(be.redis_url)
        self.results: dict[str, Any] = {"quick": quick, "repeats": repeats, "workers": workers,
                                        "machine": machine(be), "raw": {}, "nexus": {},
                                        "celery": {}}
        os.environ["NEXUSFLOW_DATABASE_URL"] = be.database_url
        os.environ["NEXUSFLOW_REDIS_URL"] = be.redis_url
        os.environ["NEXUSFLOW_DATA_DIR"] = str(self.tmp / "data")
        from nexusflow_kernel.engine import Engine
        from nexusflow_kernel.settings import Settings

        self.engine = Engine(replace(Settings.from_env(), database_url=be.database_url,
                                     redis_url=be.redis_url))

    def log(self, msg: str) -> None:
        self.console.log(msg)

    # ------------------------------------------------------------------ raw RQ
    def raw(self, n: int) -> dict[str, Any]:
        group = ProcessGroup()
        out: dict[str, Any] = {}
        try:
            for _ in range(n):
                group.start(raw_worker_cmd(RAW_QUEUE), self.env, self.tmp / "raw-workers.log")
            wait_workers(self.be.redis_url, RAW_QUEUE, n, group=group)
            for _ in range(2):  # warm-up: imports, connections
                rawrq.drain(self.redis, RAW_QUEUE, 50)
            with RssSampler(lambda: group.pids) as rss:
                out["drain"] = {"n": self.sz.drain, "times": [
                    rawrq.drain(self.redis, RAW_QUEUE, self.sz.drain)
                    for _ in range(self.repeats)]}
            out["drain"]["worker_peak_rss"] = rss.peak
            self.log(f"raw RQ x{n}: drain {self.sz.drain}: "
                     f"{fmt_times(out['drain']['times'])}")
            for name, fn in raw_peers(self.sz).items():
                if not self.wanted(name) or not self.depends_on:
                    continue
                # RQ's depends_on on a 1,000-wide join costs tens of seconds a run: once is enough
                reps = 1 if name == f"wide {self.sz.wide}" and not self.quick else self.repeats
                times = [fn(self.redis) for _ in range(reps)]
                out[name] = {"times": times}
                self.log(f"raw RQ x{n}: depends_on {name}: {fmt_times(times)}")
        finally:
            group.stop()
            self._clean_queue(RAW_QUEUE)
        return out

    # ------------------------------------------------------------------ Celery
    def celery(self, n: int) -> dict[str, Any]:
        """The Celery peer: a prefork worker of ``n`` processes on the bench's Redis."""
        try:
            from . import celerypeer as cp
        except ImportError as exc:
            return {"skipped": f"celery is not installed ({exc}): pip install -e '.[bench]'"}
        cp.configure(self.be.redis_url)
        group = ProcessGroup()
        out: dict[str, Any] = {}
        try:
            group.start(cp.worker_cmd(n), self.env, self.tmp / "celery-workers.log")
            cp.wait_ready(n)
            for name, fn in celery_peers(self.sz).items():
                if not self.wanted(name):
                    continue
                try:
                    times = [fn() for _ in range(self.repeats)]
                except Exception as exc:  # one shape that does not finish loses no other
                    out[name] = {"times": [], "error": f"{type(exc).__name__}: {exc}"[:200]}
                    self.log(f"Celery x{n}: {name}: failed: {out[name]['error']}")
                    cp.purge()
                    continue
                out[name] = {"times": times}
                self.log(f"Celery x{n}: {name}: {fmt_times(times)}")
                group.check_alive()
        finally:
            group.stop()
            cp.purge()
        return out

    def wanted(self, shape: str) -> bool:
        """Whether ``--only`` keeps a shape (by its kind: the first word of its name)."""
        return self.only is None or shape.split()[0] in self.only

    def _clean_queue(self, name: str) -> None:
        from rq import Queue

        try:
            Queue(name, connection=self.redis).empty()
        except redis.RedisError:
            pass

    # ------------------------------------------------------------------ Nexus-Flow
    def start_nexus_workers(self, n: int, group: ProcessGroup) -> None:
        from nexusflow_kernel import defaults

        group.start(nexus_worker_cmd(n), self.env, self.tmp / "nexus-workers.log")
        wait_workers(self.be.redis_url, self.engine.settings.queue_name or defaults.QUEUE_NAME,
                     n, group=group)
        for _ in range(2):  # warm-up: imports, pools, prepared statements, node types
            for doc in (shapes.wide(20), shapes.chain(5), shapes.map_items(50)):
                res = run_and_wait(self.engine, doc, timeout=60)
                if res.status != "succeeded":
                    raise RuntimeError(f"warm-up run {res.run_id} {res.status}")

    def nexus(self, n: int) -> dict[str, Any]:
        group = ProcessGroup()
        out: dict[str, Any] = {}
        me = os.getpid()
        endpoint = SlowEndpoint(self.sz.http_delay_s).__enter__()
        try:
            self.start_nexus_workers(n, group)
            for name, doc, items in nexus_shapes(self.sz, endpoint.url):
                if not self.wanted(name):
                    continue
                m = self.stage(f"Nexus-Flow x{n} {name}",
                               lambda name=name, doc=doc: self._shape(n, name, doc, group, me))
                if m is not None:
                    if items is not None:
                        m["items"] = items
                    if doc["name"].startswith("bench-http-map"):
                        m["endpoint"] = {"delay_s": self.sz.http_delay_s,
                                         "peak_requests": endpoint.peak}
                        endpoint.peak = 0
                    out[name] = m
            if n == max(self.workers):
                self.results["latency"] = self.stage("latency", self.latency)
        finally:
            endpoint.__exit__()
            group.stop()
        return out

    def quiesce(self, timeout: float = 180.0) -> float:
        """Wait until the RQ queue holds no leftover jobs of earlier runs; return the wait."""
        key = self.engine.broker.queue_for("default").key
        t0 = time.perf_counter()
        end = time.monotonic() + timeout
        while self.redis.llen(key) and time.monotonic() < end:
            time.sleep(0.02)
        return time.perf_counter() - t0

    def _shape(self, n: int, name: str, doc: dict[str, Any], group: ProcessGroup,
               me: int) -> dict[str, Any]:
        times, latencies, statuses, leftover = [], [], [], []
        self.quiesce()
        with RssSampler(lambda: group.pids) as wrss, \
                RssSampler(lambda: [me], recursive=False) as crss:
            for _ in range(self.repeats):
                res = run_and_wait(self.engine, doc, timeout=900)
                times.append(res.seconds)
                statuses.append(res.status)
                latencies.extend(res.latencies_ms)
                group.check_alive()
                # jobs the run left in RQ (ready-pushes that found nothing to claim)
                leftover.append(self.quiesce())
        out = {"nodes": shapes.size(doc), "times": times, "statuses": statuses,
               "worker_peak_rss": wrss.peak, "client_peak_rss": crss.peak,
               "latencies_ms": latencies, "leftover_drain_s": leftover}
        self.log(f"Nexus-Flow x{n}: {name}: {fmt_times(times)}, then leftover jobs "
                 f"drained in {fmt_times(leftover)} "
                 f"{'' if set(statuses) == {'succeeded'} else statuses}")
        return out

    def latency(self) -> dict[str, Any]:
        """Event latency to an XREAD BLOCK client and, when the server extension is there,
        to a websocket client of a ``jupyter server`` on loopback, on the same runs."""
        doc = shapes.latency_probe(self.sz.latency_chain)
        out: dict[str, Any] = {"redis": [], "websocket": None, "websocket_note": ""}
        server = None
        if self.websocket and probes.server_ext_available():
            try:
                server = probes.JupyterServer(self.env).__enter__()
                out["websocket"] = []
            except Exception as exc:
                out["websocket_note"] = f"jupyter server did not start: {exc}"[:300]
        elif self.websocket:
            out["websocket_note"] = "nexusflow_server or websocket-client not importable"
        try:
            for _ in range(max(3, self.repeats)):
                listeners: list[probes.WebsocketListener] = []

                def started(run_id: str, listeners: list = listeners) -> None:
                    if server is not None:
                        lst = probes.WebsocketListener(server, run_id)
                        lst.start()
                        listeners.append(lst)

                res = run_and_wait(self.engine, doc, timeout=120, on_started=started)
                out["redis"].extend(res.latencies_ms)
                for lst in listeners:
                    lst.join(30)
                    if lst.error is not None:
                        out["websocket_note"] = f"websocket: {lst.error!r}"[:300]
                    else:
                        out["websocket"].extend(lst.latencies_ms)
        finally:
            if server is not None:
                server.__exit__()
        self.log(f"event latency: redis p50 {probes.percentile(out['redis'], 50):.1f} ms, "
                 f"p95 {probes.percentile(out['redis'], 95):.1f} ms"
                 + (f"; websocket p50 {probes.percentile(out['websocket'], 50):.1f} ms, "
                    f"p95 {probes.percentile(out['websocket'], 95):.1f} ms"
                    if out["websocket"] else ""))
        return out

    def memory(self, n: int = 2) -> list[dict[str, Any]]:
        """Peak memory of the starting process and of fresh workers vs lattice size."""
        rows = []
        for layers in self.sz.memory:
            group = ProcessGroup()
            try:
                self.start_nexus_workers(n, group)
                before = tree_rss(group.pids)
                with RssSampler(lambda g=group: g.pids) as wrss:
                    probe = probes.memory_probe(self.env, layers, self.sz.memory_width)
                rows.append({"nodes": layers * self.sz.memory_width,
                             "client_delta": probe["peak"] - probe["before"],
                             "worker_delta": wrss.peak - before, "status": probe["status"],
                             "seconds": probe["seconds"]})
                self.log(f"memory: {rows[-1]}")
            finally:
                group.stop()
        return rows

    # ------------------------------------------------------------------ all
    def stage(self, name: str, fn: Any) -> Any:
        """Run one stage; a failure is recorded (and shown) instead of losing the others."""
        try:
            return fn()
        except Exception as exc:
            self.results.setdefault("errors", []).append(f"{name}: {exc!r}"[:500])
            self.console.log(f"[red]{name} failed[/red]: {exc!r}"[:2000])
            return None

    def run(self) -> dict[str, Any]:
        r = self.results
        r["import_s"] = self.stage("import", lambda: probes.import_time("nexusflow_kernel", 5))
        r["import_engine_s"] = self.stage(
            "import", lambda: probes.import_time("nexusflow_kernel.engine", 5))
        layers, width = self.sz.lattice
        n10k = layers * width
        r["compile_s"] = self.stage("compile", lambda: {
            f"lattice {layers}x{width}": probes.compile_time(shapes.lattice(layers, width)),
            f"chain {n10k}": probes.compile_time(shapes.chain(n10k)),
        })
        self.log(f"import {fmt_times(r['import_s'] or [])}; compile {r['compile_s']}")
        for n in self.workers:
            r["raw"][str(n)] = self.stage(f"raw RQ x{n}", lambda n=n: self.raw(n)) or {}
            if self.with_celery:
                r["celery"][str(n)] = self.stage(f"Celery x{n}",
                                                 lambda n=n: self.celery(n)) or {}
            r["nexus"][str(n)] = self.stage(f"Nexus-Flow x{n}", lambda n=n: self.nexus(n)) or {}
        r["memory"] = (self.stage("memory", self.memory) or []) if self.with_memory else []
        sizes = [m["nodes"] for m in r["memory"]]
        r["memory_linear"] = {
            who: probes.linear_verdict(sizes, [m[f"{who}_delta"] for m in r["memory"]])
            for who in ("client", "worker")}
        return {k: v for k, v in r.items() if v is not None}

    def close(self) -> None:
        import shutil

        self.redis.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def fmt_times(times: list[float]) -> str:
    if not times:
        return "-"
    return f"{probes.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


def machine(be: Backends) -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(),
                            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        info["redis"] = redis.Redis.from_url(be.redis_url).info("server")["redis_version"]
    except Exception:
        pass
    try:
        import psycopg

        with psycopg.connect(be.database_url) as conn:
            info["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:
        pass
    try:
        import rq

        info["rq"] = rq.__version__
    except Exception:
        pass
    try:
        import celery

        info["celery"] = celery.__version__
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info

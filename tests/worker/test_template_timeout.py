"""Issue #13, finding 5 (the worker's half): a node's templates render under its timeout.

Templates were rendered before the node's timeout started: an http node with ``timeout_s``
5 ran a 28-second template. Here a node with ``timeout_s`` 1 whose URL template would take
minutes fails as timed out after about a second, on a real worker, and the request is never
sent.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nftest import flow, node, wait_run

SLOW = "[i for s in ['ab' * 400000] for i in range(10 ** 6) if str(i) in s]"


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_a_slow_template_stops_at_the_node_timeout(engine, workers) -> None:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        workers.start(1)
        url = f"http://127.0.0.1:{server.server_port}/x?n={{{{ len({SLOW}) }}}}"
        doc = flow(
            node("H", "http", url=url, timeout_s=1),
            node("T", expression="len(" + SLOW + ")", timeout_s=1),
        )
        started = time.monotonic()
        run = wait_run(engine, engine.start_run(doc), 60)
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert run["status"] == "failed", run
    for node_id in ("H", "T"):
        n = run["nodes"][node_id]
        assert n["state"] == "failed", n
        attempts = engine.node_attempts(run["run_id"], node_id)
        assert all("timed out after 1 s" in (a["error"] or "") for a in attempts), attempts
        assert ts(n["ended_at"]) - ts(n["started_at"]) < 3.0, n
    assert hits == []
    assert took < 20, took

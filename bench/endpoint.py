"""The slow local endpoint of the I/O shape: every GET answers ``{"i": N}`` after a delay.

It runs in the bench's own process, on 127.0.0.1 and a free port, with a thread per request
(so it never is the bottleneck: it holds as many requests at once as the workers send), and
counts the requests and the most it held at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: read by ``server_activate`` inside the constructor, so it must be a
    # class attribute (set on the instance afterwards it changes nothing, and the socket kept
    # Python's default of 5). With 5, a burst of connects overflowed the accept queue and the
    # kernel dropped the SYNs: each such client waited for its 1 s SYN retransmit, which
    # capped the requests in flight and made the http map's time swing between runs.
    request_queue_size = 1024


class SlowEndpoint:
    def __init__(self, delay_s: float = 0.1) -> None:
        self.delay_s = delay_s
        self.requests = 0
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                with outer._lock:
                    outer.requests += 1
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                try:
                    time.sleep(outer.delay_s)
                    body = json.dumps({"i": int(query.get("i", ["0"])[0])}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass
                finally:
                    with outer._lock:
                        outer.active -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/item"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="bench-endpoint")

    def __enter__(self) -> SlowEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

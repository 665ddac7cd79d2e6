"""The bench's slow endpoint takes a burst of connections at once (it must never be what the
http map waits on)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_endpoint_listen_backlog_holds_a_burst_of_connects() -> None:
    from bench.endpoint import SlowEndpoint

    # Not entered: nothing accepts, so every connect below completes only if the kernel's
    # accept queue (the listen backlog) has room for it. Python's default backlog of 5 made
    # the kernel drop the SYNs of a burst, and each dropped client waited 1 s to retry.
    endpoint = SlowEndpoint(0.1)
    host, port = endpoint.httpd.server_address[:2]
    socks: list[socket.socket] = []
    try:
        for i in range(128):
            try:
                socks.append(socket.create_connection((host, port), timeout=2.0))
            except OSError as exc:
                raise AssertionError(f"connect #{i} did not complete with nothing accepting "
                                     f"({exc}): the listen backlog is too small") from None
    finally:
        for s in socks:
            s.close()
        endpoint.httpd.server_close()

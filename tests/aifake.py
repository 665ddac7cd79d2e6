"""A small OpenAI-compatible chat-completions server for the tests (no internet, no model).

``FakeModel`` listens on loopback and answers ``POST /v1/chat/completions`` from a script the
test writes: each request takes the next ``Reply`` (then ``fallback``, if set). A reply is an
answer (plain JSON, or server-sent events when the request asks ``stream: true``, one event
per piece, ``delay_s`` apart), an error status with its headers (429 with ``Retry-After``),
an error body that echoes the key it was sent, a malformed body, or a refusal of
``response_format`` (as servers without structured outputs answer). Every request is kept
(headers and JSON body) for the test to check.

    with FakeModel() as fake:
        fake.reply(Reply.rate_limited(retry_after=1), Reply("hello"))
        ...  # point base_url at fake.url
        assert fake.requests[-1].body["model"] == "m"
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer of the fake server."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    """A raw body to send instead of a chat completion (malformed answers, error bodies)."""
    pieces: list[str] | None = None
    """How a streamed answer is cut (default: word by word, spaces kept)."""
    delay_s: float = 0.0
    """Wait before each streamed piece (and before a plain answer)."""
    echo_key: bool = False
    """Answer ``status`` with an error body that quotes the Authorization / api-key header."""
    refuse_response_format: bool = False
    """Answer 400 to a request that has ``response_format`` (the reply stays scripted)."""
    model: str = "fake-model"
    usage: dict[str, int] = field(
        default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 7})

    @classmethod
    def rate_limited(cls, retry_after: float = 1, *, header: str = "Retry-After") -> Reply:
        return cls(status=429, headers={header: f"{retry_after:g}"},
                   body=b'{"error": {"message": "Rate limit reached", "type": "requests"}}')

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(status=status, body=b'{"error": {"message": "the model crashed"}}')

    @classmethod
    def malformed(cls) -> Reply:
        return cls(body=b"<html>502 from a proxy</html>", headers={"Content-Type": "text/html"})

    @classmethod
    def json(cls, value: Any, **kw: Any) -> Reply:
        return cls(text=json.dumps(value), **kw)


@dataclass
class Request:
    headers: dict[str, str]
    body: dict[str, Any]
    path: str
    at: float = field(default_factory=time.time)


class FakeModel:
    """The fake server (a context manager; ``url`` is its ``.../v1`` base URL)."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.fallback: Callable[[Request], Reply] | None = None
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                req = Request({k: v for k, v in self.headers.items()}, body, self.path)
                with fake._lock:
                    fake.requests.append(req)
                if not self.path.split("?")[0].rstrip("/").endswith("/chat/completions"):
                    return self._send(404, b'{"error": {"message": "no such path"}}')
                reply = fake._next(req)
                if reply is None:
                    return self._send(500, b'{"error": {"message": "no scripted reply"}}')
                fake._answer(self, req, reply)

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                      ctype: str = "application/json") -> None:
                self.send_response(status)
                headers = dict(headers or {})
                self.send_header("Content-Type", headers.pop("Content-Type", ctype))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, *replies: Reply) -> FakeModel:
        """Queue ``replies``: each request takes the next one."""
        with self._lock:
            self.script.extend(replies)
        return self

    def _next(self, req: Request) -> Reply | None:
        with self._lock:
            if self.script:
                reply = self.script[0]
                if reply.refuse_response_format and "response_format" in req.body:
                    return Reply(status=400, body=b'{"error": {"message": "response_format '
                                 b'json_schema is not supported by this server"}}')
                return self.script.popleft()
        return self.fallback(req) if self.fallback is not None else None

    @staticmethod
    def _answer(h: Any, req: Request, reply: Reply) -> None:
        if reply.echo_key:
            key = req.headers.get("Authorization") or req.headers.get("api-key") or ""
            data = json.dumps({"error": {"message": f"Incorrect API key provided: {key}",
                                         "echo": {"key": key}}}).encode()
            return h._send(reply.status if reply.status != 200 else 401, data, reply.headers)
        if reply.body is not None or reply.status != 200:
            return h._send(reply.status, reply.body or b"{}", reply.headers)
        model = reply.model
        if not req.body.get("stream"):
            time.sleep(reply.delay_s)
            data = json.dumps({
                "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply.text}}],
                "usage": {**reply.usage,
                          "total_tokens": sum(reply.usage.values())}}).encode()
            return h._send(200, data, reply.headers)
        pieces = reply.pieces if reply.pieces is not None else _words(reply.text)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True

        def event(payload: dict[str, Any]) -> None:
            h.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            h.wfile.flush()

        h.wfile.write(b": keep-alive comment\n\n")
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model}
        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for piece in pieces:
            time.sleep(reply.delay_s)
            event({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (req.body.get("stream_options") or {}).get("include_usage"):
            event({**base, "choices": [], "usage": reply.usage})
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


def _words(text: str) -> list[str]:
    out: list[str] = []
    for word in text.split(" "):
        out.append(word if not out else " " + word)
    return [p for p in out if p] or ([text] if text else [])


__all__ = ["FakeModel", "Reply", "Request"]

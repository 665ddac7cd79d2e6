"""A single-user server's Nexus-Flow API when the Nexus-Flow service holds the backends.

With ``NexusFlow.service_url`` set (``NEXUSFLOW_SERVICE_URL``; on a JupyterHub the
configuration sets it for every user's server), this server opens no database and no Redis
and holds no secrets key: every ``/nexusflow/api/`` request of the canvas is forwarded to the
service with **the caller's own token** — on a Hub, the token of their request (the
``Authorization`` header, or the OAuth token of their browser session, whose scopes include
the service's access scope) — so the service decides with the caller's Hub identity, groups
and scopes, exactly as if they had called it themselves. Responses come back unchanged.

What stays here is what only this server has, the user's files:

- ``documents/live`` and ``documents/patch`` (the live collaborative documents) and a node's
  debug notebook (``runs/{id}/nodes/{node}/notebook``, written next to the flow) are served
  here as without a service;
- ``POST runs {"path"}`` reads the file (the live document when it is open, as the canvas
  shows it) here and sends the flow itself to the service (``graph``, with ``file``: its real
  path, which files the run under the file's workflow) together with this server's own token
  (``X-NexusFlow-Server-Token``), which proves whose file it is when someone the server is
  shared with runs it; ``POST tests`` and ``POST runs/{id}/retry`` (``update``) name their
  flow by ``path`` the same way;
- ``GET runs?path=`` becomes ``?file=`` the same way.

Event websockets are relayed: this server opens the same websocket at the service with the
caller's token and copies each message. Webhooks are the service's (its public URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any
from urllib.parse import urlencode

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import httpclient, web
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

from .base import (
    SERVER_TOKEN_HEADER,
    BadRequest,
    ErrorMixin,
    Forbidden,
    caller_token,
    field,
    parse_json,
)
from .live import check_path, read_flow
from .subflowfiles import gather_subflow_files

API = "nexusflow/api/"

_PASS_HEADERS = ("Content-Type", "Retry-After")

_RETRY = re.compile(r"runs/[^/]+/retry")
"""A retry may name its flow by ``path`` too (``update``: resume with the file's version)."""


class ServiceClient:
    """The HTTP client of one forwarding server: one connection pool to the service."""

    def __init__(self, url: str, *, token: str | None, server_token: str | None) -> None:
        import httpx

        self.url = url.rstrip("/") + "/"
        self.token = token
        self.server_token = server_token
        self.http = httpx.AsyncClient(
            base_url=self.url + API, timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + API

    async def close(self) -> None:
        await self.http.aclose()


class _Forwarding:
    """What the forwarding handlers share: the service client and the caller's token."""

    @property
    def nf(self) -> Any:
        return self.extensionapp  # type: ignore[attr-defined]

    @property
    def service(self) -> ServiceClient:
        return self.nf.service_client()  # type: ignore[no-any-return]

    def upstream_headers(self, *, proof: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = caller_token(self)
        if token:
            headers["Authorization"] = f"token {token}"
        if proof and self.service.server_token:
            headers[SERVER_TOKEN_HEADER] = self.service.server_token
        return headers


class ForwardHandler(_Forwarding, ErrorMixin, ExtensionHandlerMixin, APIHandler):
    """``/nexusflow/api/<path>``: the request, as the caller, at the Nexus-Flow service."""

    auth_resource = "nexusflow:api"

    @authorized
    async def get(self, path: str) -> None:
        await self.forward(path)

    @authorized
    async def post(self, path: str) -> None:
        await self.forward(path)

    @authorized
    async def put(self, path: str) -> None:
        await self.forward(path)

    @authorized
    async def delete(self, path: str) -> None:
        await self.forward(path)

    async def forward(self, path: str) -> None:
        import httpx

        method = self.request.method or "GET"
        body: bytes | None = self.request.body if method in ("POST", "PUT") else None
        query = [(k, v.decode("utf-8", "replace")) for k, values in
                 self.request.query_arguments.items() for v in values]
        proof = False
        if method == "POST" and (path in ("runs", "tests") or _RETRY.fullmatch(path)):
            body, proof = await self._run_body(body or b"")  # also a test's, a retry's flow
        elif path == "runs" and method == "GET" and any(k == "path" for k, _ in query):
            query, proof = self._runs_query(query), True
        headers = self.upstream_headers(proof=proof)
        if body is not None:
            headers["Content-Type"] = self.request.headers.get("Content-Type") or \
                "application/json"
        url = path + ("?" + urlencode(query) if query else "")
        try:
            resp = await self.service.http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise web.HTTPError(503, f"the Nexus-Flow service at {self.service.url} does not "
                                f"answer: {exc}") from None
        self.set_status(resp.status_code)
        for name in _PASS_HEADERS:
            if name in resp.headers:
                self.set_header(name, resp.headers[name])
        if resp.status_code in (204, 304):
            self.finish()
        else:
            self.finish(resp.content, set_content_type=resp.headers.get(
                "Content-Type", "application/json"))

    async def _run_body(self, raw: bytes) -> tuple[bytes, bool]:
        """Turn ``{"path"}`` into the flow itself, read here (the live document if open)."""
        body = parse_json(raw, max_bytes=self.nf.max_request_bytes) if raw.strip() else {}
        if not isinstance(body, dict) or body.get("path") is None:
            return raw, False
        path = check_path(field(body, "path", str, required=True))
        ok = await ensure_async(self.authorizer.is_authorized(
            self, self.current_user, "read", "contents"))
        if not ok:
            raise Forbidden("reading the flow file needs the 'read' permission on contents")
        flow, live = await read_flow(self.serverapp, path)
        if isinstance(flow, bytes):
            flow = flow.decode("utf-8", "replace")
        sent = {k: v for k, v in body.items() if k != "path"}
        sent.update(graph=flow, source=path, file=self.real_path(path), live=live)

        files = await gather_subflow_files(self.serverapp, flow, self.real_path)
        if files:
            sent["subflow_files"] = files
        return json.dumps(sent).encode(), True

    def _runs_query(self, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
        out = []
        for key, value in query:
            if key == "path":
                try:
                    value = check_path(value)
                except BadRequest as exc:
                    raise BadRequest(str(exc), "?path") from None
                key, value = "file", self.real_path(value)
            out.append((key, value))
        return out

    def real_path(self, path: str) -> str:
        root = getattr(self.contents_manager, "root_dir", None) or self.serverapp.root_dir
        return os.path.realpath(os.path.join(root, path))


class ForwardSocket(_Forwarding, ErrorMixin, WebSocketMixin, WebSocketHandler,
                    ExtensionHandlerMixin, JupyterHandler):
    """An event websocket relayed from the service (opened there with the caller's token)."""

    auth_resource = "nexusflow:runs"
    upstream: Any = None
    _task: asyncio.Task[Any] | None = None

    @authorized
    async def get(self, *args: Any, **kwargs: Any) -> None:
        rel = self.request.path.split("/nexusflow/api/", 1)[1]
        url = self.service.ws_url + rel
        if self.request.query:
            url += "?" + self.request.query
        request = httpclient.HTTPRequest(url, headers=self.upstream_headers(),
                                         connect_timeout=5, request_timeout=30)
        try:
            self.upstream = await websocket_connect(request)
        except httpclient.HTTPClientError as exc:
            body = exc.response.body if exc.response is not None else b""
            try:
                message = json.loads(body).get("message") or str(exc)
            except (ValueError, AttributeError):
                message = str(exc)
            raise web.HTTPError(exc.code if exc.code != 599 else 503, message) from None
        except OSError as exc:
            raise web.HTTPError(503, f"the Nexus-Flow service does not answer: {exc}") from None
        await WebSocketHandler.get(self, *args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # starts the pings
        self._task = asyncio.create_task(self._relay())

    async def _relay(self) -> None:
        while True:
            message = await self.upstream.read_message()
            if message is None:  # the service closed it
                self.close()
                return
            try:
                await self.write_message(message)
            except WebSocketClosedError:
                return

    def on_message(self, message: Any) -> None:
        pass  # one-way stream

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
        if self._task is not None:
            self._task.cancel()


def forward_handlers() -> list[tuple[str, Any]]:
    """Return the routes of a forwarding server: the files' own handlers, the relayed
    websockets, then everything else of ``/nexusflow/api/`` forwarded."""
    from .routes import file_handlers

    return [
        *file_handlers(),
        (r"/nexusflow/api/runs/[^/]+/events", ForwardSocket),
        (r"/nexusflow/api/events", ForwardSocket),
        (r"/nexusflow/api/(?P<path>.+)", ForwardHandler),
    ]


__all__ = ["ForwardHandler", "ForwardSocket", "ServiceClient", "caller_token",
           "forward_handlers"]

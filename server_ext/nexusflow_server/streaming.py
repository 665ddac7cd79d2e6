"""Websockets that stream run events: one run (history first, then live) or all runs.

Each socket tails its Redis stream with short blocking reads in the streaming thread pool and
stops when the socket closes. Every message is one event as JSON text with its stream ``id``
(a client that reconnects passes ``?after=<id>`` to resume without gaps or repeats).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from . import rbac
from .base import ErrorMixin, NexusFlowHandler, check_uuid

BLOCK_MS = 1000
"""How long one read waits for new events; bounds how late a closed socket is noticed."""


class _EventSocket(ErrorMixin, WebSocketMixin, WebSocketHandler, ExtensionHandlerMixin,
                   JupyterHandler):
    auth_resource = "nexusflow:runs"
    _closed = False
    _task: asyncio.Task[Any] | None = None

    # role helpers are shared with the REST handlers
    nf = NexusFlowHandler.nf
    user_name = NexusFlowHandler.user_name
    sync = NexusFlowHandler.sync
    engine_do = NexusFlowHandler.engine_do
    role_on = NexusFlowHandler.role_on
    require = NexusFlowHandler.require
    visible_filter = NexusFlowHandler.visible_filter
    identity = NexusFlowHandler.identity  # Hub groups and custom scopes (hub.py)
    is_admin = NexusFlowHandler.is_admin
    _default_role = NexusFlowHandler._default_role

    def _after(self, default: str) -> str:
        after = self.get_query_argument("after", default) or default
        if len(after) > 64 or not all(c.isdigit() or c in "-$" for c in after):
            raise web.HTTPError(400, "'after' must be a stream id")
        return after

    def on_close(self) -> None:
        self._closed = True

    def on_message(self, message: Any) -> None:
        pass  # the stream is one-way; pings are handled by the mixin

    async def _pump(self, read: Any, after: str, keep: Any = None) -> None:
        loop = asyncio.get_running_loop()
        executor = self.nf.stream_executor
        while not self._closed and not self.nf.stopping.is_set():
            try:
                items = await loop.run_in_executor(executor, read, after)
            except Exception as exc:  # Redis restarting: tell the client, keep trying
                self.log.warning("event stream read failed: %s", exc)
                await asyncio.sleep(1)
                continue
            for stream_id, event in items:
                after = stream_id
                if keep is not None and not await keep(event):
                    continue
                try:
                    await self.write_message(json.dumps({"id": stream_id, **event}, default=str))
                except WebSocketClosedError:
                    return


class RunEventsSocket(_EventSocket):
    """``/nexusflow/api/runs/{run_id}/events``: a run's events, the whole history first."""

    @authorized
    async def get(self, run_id: str) -> None:
        run_id = check_uuid(run_id, "run")
        run = await self.engine_do(lambda e: e.get_run(run_id, outputs=False))
        await self.require(str(run["workflow_id"]), "read")
        self.run_id = run_id
        self.after = self._after("0-0")
        await WebSocketHandler.get(self, run_id)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # starts the pings
        engine = self.nf.engine()

        def read(after: str) -> Any:
            return engine.read_events(self.run_id, after=after, block_ms=BLOCK_MS)

        self._task = asyncio.create_task(self._pump(read, self.after))


class AllEventsSocket(_EventSocket):
    """``/nexusflow/api/events``: live events of every run the user may see; with
    ``?level=run`` only the runs' own events (started, ended: ``node`` is null), which is what
    a canvas needs to follow the newest run of its flow without every node's traffic."""

    runs_only = False

    @authorized
    async def get(self) -> None:
        self.after = self._after("$")
        level = self.get_query_argument("level", "all") or "all"
        if level not in ("all", "run"):
            raise web.HTTPError(400, "'level' must be 'all' or 'run'")
        self.runs_only = level == "run"
        self.visible = await self.sync(self.visible_filter)
        await WebSocketHandler.get(self)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # starts the pings
        engine = self.nf.engine()
        cache: dict[str, bool] = {}

        def read(after: str) -> Any:
            return engine.read_all_events(after=after, block_ms=BLOCK_MS)

        async def keep(event: dict[str, Any]) -> bool:
            if self.runs_only and event.get("node") is not None:
                return False
            if self.visible is None:
                return True
            run_id = str(event.get("run"))
            if run_id not in cache:
                try:
                    run = await self.engine_do(lambda e: e.get_run(run_id, outputs=False))
                    cache[run_id] = self.visible(str(run["workflow_id"]))
                except Exception:
                    cache[run_id] = False
            return cache[run_id]

        self._task = asyncio.create_task(self._pump(read, self.after, keep))


__all__ = ["AllEventsSocket", "RunEventsSocket", "rbac"]

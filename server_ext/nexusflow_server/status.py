"""What a client with no backend of its own needs besides the REST API: the workers serving the
queues, and a run's events by long polling (``nexusflow_kernel.remote.RemoteEngine``)."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import NexusFlowHandler, check_uuid

MAX_BLOCK_MS = 10_000
"""Longest one event-log request waits for new events."""


def queue_depths(engine: Any) -> dict[str, int]:
    """Return the jobs waiting in each RQ queue and in the timer's set (blocking)."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    settings = engine.settings
    depths = {kind: Queue(name, connection=engine.redis, serializer=JSONSerializer).count
              for kind, name in (("default", settings.queue_name),
                                 ("sandbox", settings.sandbox_queue_name))}
    from nexusflow_kernel.transport.broker import DUE_KEY

    depths["due"] = int(engine.redis.zcard(DUE_KEY))
    return depths


class WorkersHandler(NexusFlowHandler):
    """``GET /workers``: how many workers serve the queues, and what waits in them."""

    auth_resource = "nexusflow:runs"

    @authorized
    async def get(self) -> None:
        from nexusflow_kernel.workers import worker_count

        def read(engine: Any) -> dict[str, Any]:
            return {"workers": worker_count(engine.settings, redis=engine.redis),
                    "queues": queue_depths(engine)}

        self.reply(await self.engine_do(read))


class RunEventLogHandler(NexusFlowHandler):
    """``GET /runs/{run_id}/event-log?after=&block_ms=``: the run's events after a stream id,
    waiting up to ``block_ms`` for new ones (the websocket's history, for plain HTTP)."""

    auth_resource = "nexusflow:runs"

    @authorized
    async def get(self, run_id: str) -> None:
        run_id = check_uuid(run_id, "run")
        after = self.get_query_argument("after", "0-0") or "0-0"
        if len(after) > 64 or not all(c.isdigit() or c == "-" for c in after):
            raise web.HTTPError(400, "'after' must be a stream id")
        block_ms = self.query_int("block_ms", default=0, low=0, high=MAX_BLOCK_MS)
        count = self.query_int("count", default=1000, low=1, high=10_000)
        run = await self.engine_do(lambda e: e.get_run(run_id, outputs=False))
        await self.require(str(run["workflow_id"]), "read")
        engine = await self.sync(self.nf.engine)
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(
            self.nf.stream_executor,
            lambda: engine.read_events(run_id, after=after, block_ms=block_ms or None,
                                       count=count))
        self.reply({"events": [{"id": stream_id, **event} for stream_id, event in items]})


__all__ = ["RunEventLogHandler", "WorkersHandler", "queue_depths"]

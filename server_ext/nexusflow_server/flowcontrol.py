"""REST for flow control: approval decisions, resume callbacks of wait nodes, pools.

- ``POST /runs/{run_id}/nodes/{node_id}/decision`` ``{"approved": bool, "comment"?}``: decide a
  waiting approval node. Who may: the node's approvers (user names, ``group:G`` for Hub
  groups) when it names some, else anyone with the runner role on the workflow (403
  otherwise). A node that does not wait for a decision (decided already, not reached, timed
  out, not an approval) answers 409 saying why.
- ``POST /nexusflow/hooks/resume/{token}``: public, like the webhooks (the token is the
  credential: unguessable, single use, only its hash stored). Checked cheapest first: the
  caller's address rate and the token's own rate (429), the token (404), the node still
  waiting (409), the content type (``application/json`` only, 415), the body size (the wait
  node's ``max_body_bytes`` or the webhook limit; 413, before the body is read), valid JSON
  (400). The body becomes the wait node's output.
- ``GET /pools``, ``GET|PUT|DELETE /pools/{name}``: pools and their use; changing one needs the
  Nexus-Flow administrator (``admin_users``, the Hub's admin scope, or a single-user server).
- ``GET /runs/{run_id}/children``: the child runs (sub-flows) of a run.
- ``GET /runs/{run_id}/nodes/{node_id}/items?offset=&limit=&state=``: one page of a map
  node's items (index, state, attempts, item, output, error, timing) with the map's counts;
  ``GET /runs/{run_id}/nodes/{node_id}/items/{index}``: one item with its log and every
  attempt. Both need the viewer role on the run's workflow, as the run itself does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from tornado import web

from nexusflow_kernel.errors import NotFoundError, RunStateError

from .api import RunBase
from .base import BadRequest, Forbidden, NexusFlowHandler, PublicHandler, field, parse_json
from .webhooks import TooManyRequests

TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,128}$")

RESUME_RATE_LIMIT = 30
"""Callbacks one resume token may receive per minute (it resumes once; the rest are refused)."""

MAX_COMMENT = 10_000


class DecisionHandler(RunBase):
    """``POST /runs/{run_id}/nodes/{node_id}/decision``: approve or reject a waiting approval."""

    @authorized
    async def post(self, run_id: str, node_id: str) -> None:
        body = self.body()
        approved = field(body, "approved", bool, required=True)
        comment = field(body, "comment", str)
        if comment is not None and len(comment) > MAX_COMMENT:
            raise BadRequest(f"'comment' may hold {MAX_COMMENT} characters at most", "/comment")
        run = await self.run_for(run_id, "read")
        rid = run["run_id"]
        if node_id not in run["nodes"]:
            raise NotFoundError(f"run {rid} has no node {node_id!r}")
        waits = await self.engine_do(lambda e: e.waiting_node(rid, node_id))
        if not (waits.get("kind") == "approval" and waits.get("approvers")):
            # No approvers named: whoever may run the workflow decides. (Whether the node
            # waits at all is the engine's to say, with a 409.)
            await self.require(str(run["workflow_id"]), "run")
        groups = frozenset(getattr(self.identity, "groups", ()) or ())
        decision = await self.engine_do(lambda e: e.decide(
            rid, node_id, approved, comment=comment, actor=self.user_name, groups=groups))
        await self.audit("run.decision", f"run:{rid}", node=node_id, approved=approved)
        self.reply({"run_id": rid, "node_id": node_id, "decision": decision})


class ChildRunsHandler(RunBase):
    """``GET /runs/{run_id}/children``: the run's child runs (sub-flows), oldest first."""

    @authorized
    async def get(self, run_id: str) -> None:
        run = await self.run_for(run_id, "read")
        self.reply({"children": await self.engine_do(lambda e: e.child_runs(run["run_id"]))})


ITEM_STATES = ("queued", "running", "succeeded", "failed", "canceled")
"""The states of a map's item (``?state=`` of the items page)."""


class MapItemsHandler(RunBase):
    """``GET /runs/{run_id}/nodes/{node_id}/items``: one page of a map node's items."""

    @authorized
    async def get(self, run_id: str, node_id: str) -> None:
        offset = self.query_int("offset", default=0, low=0, high=10_000_000) or 0
        limit = self.query_int("limit", default=50, low=1, high=1000) or 50
        state = self.get_query_argument("state", None) or None
        if state is not None and state not in ITEM_STATES:
            raise BadRequest(f"'state' must be one of {', '.join(ITEM_STATES)}", "?state")
        run = await self.run_for(run_id, "read")
        rid = run["run_id"]
        page = await self.engine_do(lambda e: e.map_items(rid, node_id, offset=offset,
                                                          limit=limit, state=state))
        self.reply({"run_id": rid, "node_id": node_id, "limit": limit, **page})


class MapItemHandler(RunBase):
    """``GET /runs/{run_id}/nodes/{node_id}/items/{index}``: one item, its log and attempts."""

    @authorized
    async def get(self, run_id: str, node_id: str, index: str) -> None:
        if not index.isdigit() or len(index) > 9:
            raise BadRequest("the item index must be a whole number", "/index")
        run = await self.run_for(run_id, "read")
        rid = run["run_id"]
        item = await self.engine_do(lambda e: e.map_item(rid, node_id, int(index)))
        self.reply({"run_id": rid, "node_id": node_id, **item})


class PoolsHandler(NexusFlowHandler):
    """``GET /pools``: every pool with its size, the slots in use and the nodes waiting."""

    auth_resource = "nexusflow:pools"

    @authorized
    async def get(self) -> None:
        self.reply({"pools": await self.engine_do(lambda e: e.list_pools())})


class PoolHandler(NexusFlowHandler):
    """``GET|PUT|DELETE /pools/{name}``."""

    auth_resource = "nexusflow:pools"

    def _admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("changing pools needs a Nexus-Flow administrator (admin_users)")

    @authorized
    async def get(self, name: str) -> None:
        self.reply(await self.engine_do(lambda e: e.get_pool(name)))

    @authorized
    async def put(self, name: str) -> None:
        body = self.body()
        size = field(body, "size", int, required=True)
        description = field(body, "description", str)
        if description is not None and len(description) > 1000:
            raise BadRequest("'description' may hold 1000 characters at most", "/description")
        self._admin()
        pool = await self.engine_do(lambda e: e.set_pool(name, size, description=description,
                                                         actor=self.user_name))
        await self.audit("pool.set", f"pool:{name}", size=size)
        self.reply(pool)

    @authorized
    async def delete(self, name: str) -> None:
        self._admin()
        await self.engine_do(lambda e: e.delete_pool(name))
        await self.audit("pool.delete", f"pool:{name}")
        self.set_status(204)
        self.finish()


@web.stream_request_body
class ResumeReceiver(PublicHandler):
    """``POST /nexusflow/hooks/resume/{token}``: an external system resumes a wait node."""

    target: dict[str, Any] | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflow = False
        self._limit = self.nf.webhook_max_body_bytes
        token = self.path_kwargs.get("token") or (self.path_args or [""])[0]
        if self.request.method != "POST":
            return
        await self._admit(token)

    async def _admit(self, token: str) -> None:
        """The checks that need no body: a refused callback is never read."""
        nf = self.nf
        limiter = nf.rate_limiter()
        for name, limit, window in ((f"ip:{self.request.remote_ip}", nf.webhook_ip_rate_limit,
                                     60), (f"resume:{token[:128]}", RESUME_RATE_LIMIT, 60)):
            try:
                decision = await nf.run_sync(limiter.hit, name, limit, window)
            except Exception as exc:  # Redis down: as the webhooks do
                if not nf.webhook_rate_limit_fail_open:
                    from nexusflow_kernel.errors import BackendUnavailable

                    raise BackendUnavailable("the rate limiter is unavailable; retry later"
                                             ) from exc
                decision = None
            if decision is not None and not decision.allowed:
                raise TooManyRequests(decision.retry_after_s)
        if not TOKEN.match(token):
            raise NotFoundError("no wait node waits for this resume URL")
        self.target = await nf.run_sync(lambda: nf.engine().resume_target(token))
        if self.target["state"] != "waiting":
            raise RunStateError(f"node {self.target['node_id']!r} of run "
                                f"{self.target['run_id']} no longer waits for a callback "
                                f"(it is {self.target['state']})")
        ctype = self.request.headers.get("Content-Type") or ""
        media, _, params = ctype.partition(";")
        charset = params.strip().lower().replace(" ", "")
        if media.strip().lower() != "application/json" or (
                charset and charset not in ("charset=utf-8", "charset=utf8")):
            raise BadRequest(f"content type {ctype!r} is not accepted: a resume URL takes "
                             "application/json", status=415)
        self._limit = int(self.target.get("max_body_bytes") or self._limit)
        length = self.request.headers.get("Content-Length")
        if length is not None:
            try:
                too_big = int(length) > self._limit
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if too_big:
                raise BadRequest(f"the body is over this wait node's limit of {self._limit} "
                                 "bytes", status=413)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            self._overflow = True
            self._chunks.clear()
        elif not self._overflow:
            self._chunks.append(chunk)

    @allow_unauthenticated
    async def post(self, token: str) -> None:
        assert self.target is not None
        if self._overflow:
            raise BadRequest(f"the body is over this wait node's limit of {self._limit} bytes",
                             status=413)
        raw = b"".join(self._chunks)
        if not raw.strip():
            raise BadRequest("the body must be JSON (it becomes the wait node's output)")
        payload = parse_json(raw, max_bytes=self._limit)
        nf = self.nf
        done = await nf.run_sync(lambda: nf.engine().resume(token, payload))
        await nf.run_sync(nf.store().audit, f"resume:{done['run_id']}", "run.resume",
                          f"run:{done['run_id']}", {"node": done["node_id"]})
        self.set_status(200)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({**done, "status": "resumed"}))


__all__ = ["ChildRunsHandler", "DecisionHandler", "PoolHandler", "PoolsHandler",
           "ResumeReceiver"]

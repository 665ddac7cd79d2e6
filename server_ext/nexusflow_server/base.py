"""Handler base: errors as JSON, JSON bodies with limits, engine calls off the IO loop, roles."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from http.client import responses
from typing import TYPE_CHECKING, Any, TypeVar

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from nexusflow_kernel.errors import (
    BackendUnavailable,
    FlowError,
    NexusFlowError,
    NotFoundError,
    PermissionDenied,
    RunStateError,
)

from . import rbac

if TYPE_CHECKING:  # pragma: no cover
    from nexusflow_kernel.engine import Engine

T = TypeVar("T")

MAX_BODY_DEPTH = 80
"""Deepest JSON nesting accepted in a request body (a flow may nest 64 levels)."""

SERVER_TOKEN_HEADER = "X-NexusFlow-Server-Token"
"""The header a forwarding user server proves itself with to the service (``forward.py`` sends
it, ``service/auth.py`` checks it): the contract between the two sides lives below both."""


class BadRequest(NexusFlowError):
    """The request is malformed; ``pointer`` names the faulty field of the body or query."""

    def __init__(self, message: str, pointer: str = "", status: int = 400) -> None:
        self.pointer = pointer
        self.status = status
        super().__init__(message)


class Forbidden(NexusFlowError):
    """The user's role does not allow the action."""


def error_status(exc: BaseException) -> int | None:
    """Return the HTTP status of an exception, or ``None`` for an unexpected one."""
    import psycopg
    import redis

    if isinstance(exc, BadRequest):
        return exc.status
    if isinstance(exc, (Forbidden, PermissionDenied)):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, FlowError):
        return 422
    if isinstance(exc, RunStateError):
        return 409
    if isinstance(exc, BackendUnavailable):
        return 503
    if isinstance(exc, NexusFlowError):
        return 400
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, redis.ConnectionError,
                        redis.TimeoutError)):
        return 503
    if isinstance(exc, psycopg.DataError):
        return 400
    return None


def error_body(exc: BaseException | None, status: int) -> dict[str, Any]:
    """Return the JSON error body: ``{"error", "message", "pointer"?, ...}``."""
    if isinstance(exc, FlowError):
        return exc.to_dict()
    if isinstance(exc, web.HTTPError):
        return {"error": responses.get(exc.status_code, "Error").replace(" ", ""),
                "message": exc.log_message or exc.reason or responses.get(status, "")}
    if isinstance(exc, NexusFlowError):
        body = {"error": type(exc).__name__, "message": str(exc)}
        if getattr(exc, "pointer", ""):
            body["pointer"] = exc.pointer
        return body
    if exc is not None and error_status(exc) == 503:
        return {"error": "BackendUnavailable", "message": "a backend is unreachable; try again"}
    return {"error": responses.get(status, "Error").replace(" ", ""),
            "message": responses.get(status, "error")}


class ErrorMixin:
    """Turn Nexus-Flow errors into 4xx/503 JSON answers (never a traceback, never a 500)."""

    def _handle_request_exception(self, e: BaseException) -> None:
        status = error_status(e)
        if status is not None:
            if self._finished:  # type: ignore[attr-defined]
                return
            self.log.info("%s %s -> %s: %s", self.request.method,  # type: ignore[attr-defined]
                          self.request.path, status, e)  # type: ignore[attr-defined]
            self.send_error(status, exc_info=sys.exc_info())  # type: ignore[attr-defined]
            return
        super()._handle_request_exception(e)  # type: ignore[misc]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        body = error_body(exc, status_code)
        if status_code == 429 and isinstance(exc, BadRequest) and getattr(exc, "retry_after", 0):
            self.set_header("Retry-After", str(exc.retry_after))  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps(body))  # type: ignore[attr-defined]


def _depth_ok(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level > limit:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((v, level + 1) for v in children)
    return True


def parse_json(raw: bytes, *, max_bytes: int) -> Any:
    """Parse a JSON body within size and depth limits; raise ``BadRequest`` otherwise."""
    if len(raw) > max_bytes:
        raise BadRequest(f"body is {len(raw)} bytes, over the limit of {max_bytes}", status=413)
    try:
        value = json.loads(raw or b"null")
    except RecursionError:
        raise BadRequest(f"body nests deeper than {MAX_BODY_DEPTH} levels", status=413) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not _depth_ok(value, MAX_BODY_DEPTH):
        raise BadRequest(f"body nests deeper than {MAX_BODY_DEPTH} levels", status=413)
    return value


_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string",
                           int: "an integer", bool: "a boolean", float: "a number"}


def field(body: dict[str, Any], key: str, kind: type | tuple[type, ...], *,
          required: bool = False, default: Any = None, where: str = "") -> Any:
    """Return ``body[key]`` checked against ``kind``; raise ``BadRequest`` naming the field."""
    pointer = f"{where}/{key}"
    if key not in body or body[key] is None:
        if required:
            raise BadRequest(f"{key!r} is required", pointer)
        return default
    value = body[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int))
    if not ok:
        names = " or ".join(_TYPES.get(k, k.__name__) for k in kinds)
        raise BadRequest(f"{key!r} must be {names}", pointer)
    return value


def check_uuid(value: str, what: str) -> str:
    """Return ``value`` if it is a UUID, else raise ``NotFoundError`` (ids are UUIDs)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise NotFoundError(f"no {what} {value!r}") from None


class NexusFlowHandler(ErrorMixin, ExtensionHandlerMixin, APIHandler):
    """Base of the REST handlers: thin, authorized, and blocking work in a thread pool."""

    auth_resource = "nexusflow:workflows"

    @property
    def nf(self) -> Any:
        """Return the ``NexusFlow`` extension app."""
        return self.extensionapp

    @property
    def user_name(self) -> str:
        user = self.current_user
        return getattr(user, "username", None) or str(user or "anonymous")

    async def sync(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call (engine, database) in the API thread pool."""
        return await self.nf.run_sync(fn, *args, **kwargs)

    async def engine_do(self, call: Callable[[Engine], T]) -> T:
        """Return ``call(engine)``, run in the API thread pool (the engine is created there
        on first use): ``await self.engine_do(lambda e: e.get_run(run_id))``."""
        return await self.sync(lambda: call(self.nf.engine()))

    def body(self) -> dict[str, Any]:
        """Return the request's JSON object body (415 unless JSON, 413 when too big)."""
        raw = self.request.body or b""
        ctype = (self.request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw.strip() and ctype not in ("application/json", ""):
            raise BadRequest(f"content type {ctype!r} is not accepted: send application/json",
                             status=415)
        value = parse_json(raw, max_bytes=self.nf.max_request_bytes) if raw.strip() else {}
        if not isinstance(value, dict):
            raise BadRequest("body must be a JSON object", "")
        return value

    def query_int(self, name: str, *, default: int | None = None, low: int = 0,
                  high: int = 2**31 - 1) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"query parameter {name!r} must be an integer", f"?{name}") from None
        if not low <= value <= high:
            raise BadRequest(f"query parameter {name!r} must be in {low}..{high}", f"?{name}")
        return value

    def reply(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, default=str))

    # ------------------------------------------------------------------ roles

    # Hub identity (groups, custom scopes): see hub.py. -----------------------------------

    @property
    def identity(self) -> Any:
        """Return the request's ``hub.Identity`` (user, Hub groups, custom scopes)."""
        ident = getattr(self, "_nf_identity", None)
        if ident is None or ident.name != self.user_name:
            from .hub import identity_of

            ident = self._nf_identity = identity_of(self.current_user)
        return ident

    @property
    def is_admin(self) -> bool:
        """Whether the user administers Nexus-Flow: ``admin_users``, the Hub's admin scope, or
        anyone on a single-user server (``default_role`` ``owner``)."""
        nf = self.nf
        return (self.user_name in nf.admin_users or self.identity.admin
                or nf.default_role == "owner")

    def record_identity(self) -> None:
        """Write the user's Hub groups where workers check group-scoped secrets (blocking)."""
        from .hub import record_principal

        record_principal(self.nf.store().pool, self.identity)

    def _default_role(self) -> str | None:
        default = None if self.nf.default_role == "none" else self.nf.default_role
        return rbac.highest(default, self.identity.scope_role)

    def role_on(self, workflow_id: str, conn: Any = None) -> str | None:
        """Return the user's role on a workflow, ``None`` on a deleted one (blocking).

        ``conn`` reads inside that transaction (a run being filed under a workflow).
        """
        from .hub import workflow_role

        live, granted = workflow_role(conn if conn is not None else self.nf.store().pool,
                                      workflow_id, self.identity.principals)
        if not live:  # its history stays in PostgreSQL, out of everyone's reach
            return None
        if self.is_admin:
            return "owner"
        return rbac.highest(self._default_role(), granted)

    @property
    def key_owner(self) -> str:
        """Return whose files a run from a file (or a flow name) is filed for.

        In a single-user server: the server's user (``NexusFlow.file_owner``). In the service:
        the caller, or the user whose server forwarded the request when the request proves it
        (the service's identity provider checks that server's own token).
        """
        return getattr(self, "_nf_key_owner", None) or self.nf.file_owner or self.user_name

    def need_files(self, pointer: str) -> None:
        """Raise ``BadRequest`` when this app has no Jupyter contents (the service)."""
        if self.settings.get("serverapp") is None:
            raise BadRequest(
                "this Nexus-Flow service has no files: send the flow itself ('graph', and "
                "'file' for its real path), as the Nexus-Flow extension of a single-user server "
                "does", pointer)

    def file_key(self, path: str) -> str:
        """Return the workflow key of a contents path of this server: its owner and real path.

        On a JupyterHub every user's server has its own root (often at the same path), so the
        relative path alone would file two users' files under one workflow.
        """
        import os

        from nexusflow_kernel.engine import file_workflow_key

        root = getattr(self.contents_manager, "root_dir", None) or self.serverapp.root_dir
        return file_workflow_key(os.path.join(root, path), self.nf.file_owner)

    async def require(self, workflow_id: str, action: str) -> None:
        """Raise 403 unless the user may do ``action`` on ``workflow_id`` (404 if not even read)."""
        role = await self.sync(self.role_on, workflow_id)
        if rbac.allows(role, action):
            return
        if not rbac.allows(role, "read"):
            raise NotFoundError(f"no workflow {workflow_id} (or no role on it)")
        raise Forbidden(f"your role {role!r} on workflow {workflow_id} does not allow {action!r}")

    def visible_filter(self) -> Callable[[str], bool] | None:
        """Return a predicate on workflow ids the user may read, or ``None`` for all (blocking)."""
        from .hub import roles_of

        if rbac.allows(self._default_role(), "read") or self.is_admin:
            return None
        grants = roles_of(self.nf.store().pool, self.identity.principals)
        return lambda wid: rbac.allows(grants.get(str(wid)), "read")

    async def audit(self, action: str, resource: str, **detail: Any) -> None:
        await self.sync(self.nf.store().audit, self.user_name, action, resource, detail)


def caller_token(handler: Any) -> str | None:
    """Return the token to call the service with: the caller's own Hub token (header, or their
    browser session's OAuth token), else the server's configured service token."""
    hub_auth = getattr(handler.identity_provider, "hub_auth", None)
    if hub_auth is not None:
        token = hub_auth.get_token(handler)  # header, ?token= (websockets), or OAuth cookie
        if token:
            return str(token)
    return handler.extensionapp.service_client().token  # type: ignore[no-any-return]


class PublicHandler(ErrorMixin, ExtensionHandlerMixin, JupyterHandler):
    """Base of the public (webhook) handlers: no Jupyter login, no XSRF cookie."""

    def check_xsrf_cookie(self) -> None:  # signed requests, never cookie-authenticated
        return None

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare(_redirect_to_login=False)

    @property
    def nf(self) -> Any:
        return self.extensionapp

"""The URL table of the extension (paths relative to the server's base URL)."""

from __future__ import annotations

import re
from typing import Any

from . import (
    admin,
    api,
    connections,
    debugapi,
    describe,
    environments,
    flowcontrol,
    live,
    metrics,
    status,
    streaming,
    webhooks,
)

API = "/nexusflow/api"
_ID = r"(?P<{}>[^/]+)"


def _p(template: str) -> str:
    """Turn ``/runs/{run_id}`` into a Tornado pattern with named groups."""
    return re.sub(r"\{(\w+)\}", lambda m: _ID.format(m.group(1)), template)


ROUTES: list[tuple[str, type]] = [
    (f"{API}/openapi.json", admin.OpenAPIHandler),
    (f"{API}/node-types", admin.NodeTypesHandler),
    (f"{API}/describe", describe.DescribeHandler),
    (f"{API}/workflows", api.WorkflowsHandler),
    (f"{API}/workflows/{{workflow_id}}", api.WorkflowHandler),
    (f"{API}/workflows/{{workflow_id}}/versions", api.VersionsHandler),
    (f"{API}/workflows/{{workflow_id}}/diff", api.DiffHandler),
    (f"{API}/workflows/{{workflow_id}}/rollback", api.RollbackHandler),
    (f"{API}/workflows/{{workflow_id}}/promote", environments.PromoteHandler),
    (f"{API}/workflows/{{workflow_id}}/promotions", environments.PromotionsHandler),
    (f"{API}/workflows/{{workflow_id}}/roles", admin.RolesHandler),
    (f"{API}/workflows/{{workflow_id}}/roles/{{principal}}", admin.RoleHandler),
    (f"{API}/workflows/{{workflow_id}}/webhooks", admin.WebhooksHandler),
    (f"{API}/workflows/{{workflow_id}}/schedules", admin.SchedulesHandler),
    (f"{API}/workflows/{{workflow_id}}/queues", admin.QueuesHandler),
    (f"{API}/webhooks/{{hook_id}}", admin.WebhookHandler),
    (f"{API}/webhooks/{{hook_id}}/rotate", admin.WebhookRotateHandler),
    (f"{API}/schedules/{{schedule_id}}", admin.ScheduleHandler),
    (f"{API}/queues/{{trigger_id}}", admin.QueueHandler),
    (f"{API}/runs", api.RunsHandler),
    (f"{API}/runs/{{run_id}}", api.RunHandler),
    (f"{API}/runs/{{run_id}}/cancel", api.RunCancelHandler),
    (f"{API}/runs/{{run_id}}/retry", debugapi.RunRetryHandler),
    (f"{API}/runs/{{run_id}}/replay", api.RunReplayHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/logs", api.NodeLogsHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/output", api.NodeOutputHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/decision", flowcontrol.DecisionHandler),
    (f"{API}/runs/{{run_id}}/children", flowcontrol.ChildRunsHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/items", flowcontrol.MapItemsHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/items/{{index}}", flowcontrol.MapItemHandler),
    (f"{API}/pools", flowcontrol.PoolsHandler),
    (f"{API}/pools/{{name}}", flowcontrol.PoolHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/context", debugapi.NodeContextHandler),
    (f"{API}/runs/{{run_id}}/nodes/{{node_id}}/notebook", debugapi.DebugNotebookHandler),
    (f"{API}/tests", debugapi.TestsHandler),
    (f"{API}/tests/{{test_id}}", debugapi.TestHandler),
    (f"{API}/runs/{{run_id}}/event-log", status.RunEventLogHandler),
    (f"{API}/runs/{{run_id}}/events", streaming.RunEventsSocket),
    (f"{API}/events", streaming.AllEventsSocket),
    (f"{API}/secrets", admin.SecretsHandler),
    (f"{API}/secrets/{{name}}", admin.SecretHandler),
    (f"{API}/connections", connections.ConnectionsHandler),
    (f"{API}/connections/{{name}}", connections.ConnectionHandler),
    (f"{API}/connections/{{name}}/test", connections.ConnectionTestHandler),
    (f"{API}/envs", environments.EnvironmentsHandler),
    (f"{API}/envs/{{env}}", environments.EnvironmentHandler),
    (f"{API}/envs/{{env}}/vars/{{name}}", environments.EnvVarHandler),
    (f"{API}/envs/{{env}}/roles/{{principal}}", environments.EnvRoleHandler),
    (f"{API}/audit", admin.AuditHandler),
    (f"{API}/workers", status.WorkersHandler),
    (f"{API}/documents/live", live.LiveDocumentHandler),
    (f"{API}/documents/patch", live.DocumentPatchHandler),
    ("/nexusflow/metrics", metrics.MetricsHandler),
    ("/nexusflow/hooks/resume/{token}", flowcontrol.ResumeReceiver),
    ("/nexusflow/hooks/{hook_id}", webhooks.WebhookReceiver),
]
"""``(OpenAPI-style path template, handler class)``: the OpenAPI test checks both sides."""

PUBLIC = {webhooks.WebhookReceiver, flowcontrol.ResumeReceiver}
"""Handlers that Jupyter does not authenticate (they verify signatures themselves)."""

WEBSOCKETS = {streaming.RunEventsSocket, streaming.AllEventsSocket}

FILES = {live.LiveDocumentHandler, live.DocumentPatchHandler, debugapi.DebugNotebookHandler}
"""Handlers of the user's own files (the live collaborative documents): served by the
single-user server always, never by the Nexus-Flow service (which has no files)."""


def handlers() -> list[tuple[str, Any]]:
    """Return ``(pattern, handler)`` pairs for ``ExtensionApp.handlers``."""
    return [(_p(template), handler) for template, handler in ROUTES]


def service_handlers() -> list[tuple[str, Any]]:
    """Return the ``(pattern, handler)`` pairs the Nexus-Flow service serves: every route but
    the files' (``FILES``), relative to the service's base URL."""
    return [(_p(template), handler) for template, handler in ROUTES if handler not in FILES]


def file_handlers() -> list[tuple[str, Any]]:
    """Return the ``(pattern, handler)`` pairs of ``FILES`` (a forwarding server keeps them)."""
    return [(_p(template), handler) for template, handler in ROUTES if handler in FILES]


def methods(handler: type) -> list[str]:
    """Return the HTTP methods a handler implements (lowercase)."""
    from tornado.web import RequestHandler

    return [m for m in ("get", "post", "put", "patch", "delete")
            if getattr(handler, m) is not getattr(RequestHandler, m)]

"""The OpenAPI 3 document of the extension (served at ``/nexusflow/api/openapi.json``).

A test compares it with the registered handlers: every route and method is described here,
and nothing here is missing a handler.
"""

from __future__ import annotations

from typing import Any

from . import __version__

_ID = {"type": "string", "format": "uuid"}
_ANY_OBJ = {"type": "object", "additionalProperties": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props,
                              "additionalProperties": True}
    if required:
        schema["required"] = required
    return schema


def _list(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _obj([key], **{key: {"type": "array", "items": item}})


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed request (the body names the field)", 401: "Signature rejected",
            403: "Not allowed", 404: "Not found", 409: "Conflict with the run's state or a "
            "replayed delivery", 413: "Body too large", 415: "Unsupported content type",
            422: "The flow does not compile (pointer names the fault)",
            429: "Rate limited (see Retry-After)", 502: "The configured model could not be asked",
            503: "A backend is unavailable"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str = "path", schema: dict[str, Any] | None = None,
           required: bool | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path" if required is None
            else required, "schema": schema or {"type": "string"}, "description": description}


def _op(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (400, 403, 404),
        tag: str = "", **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_errors(*errors)}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if tag:
        op["tags"] = [tag]
    op.update(extra)
    return op


_NO_CONTENT = {"204": {"description": "Done"}}
_WF = _param("workflow_id", schema=_ID)
_RUN = _param("run_id", schema=_ID)
_NODE = _param("node_id")
_VERSION_Q = _param("version", "query", {"type": "integer", "minimum": 1}, False)
_GRAPH = {"oneOf": [_ref("FlowDocument"), {"type": "string", "description": "flow JSON text"}]}
_RUN_OPTIONS = {"use_pins": {"type": "boolean", "description": "nodes with a pinned output "
                             "give it instead of running (runs started by hand only)"},
                "cache": {"type": "boolean", "description": "false: no node is served from the "
                          "result cache"},
                "env": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$",
                        "description": "the environment the run runs in (default dev); a "
                        "restricted one needs a role on it"}}
_TRIGGER_VERSION = {"type": "integer", "minimum": 1,
                    "description": "pin a version (default: the latest at each start)"}
_MISFIRE = {"enum": ["skip", "catch_up"], "default": "skip",
            "description": "firings missed while no service ran (found more than "
            "NexusFlow.misfire_grace_s late): skip runs none of them, catch_up runs the most "
            "recent catch_up_limit, oldest first"}
_CATCH_UP = {"type": "integer", "minimum": 1, "maximum": 100, "default": 10,
             "description": "most missed firings one outage may start (misfire: catch_up)"}
_TRIGGER_ENV = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$",
                "description": "run in this environment the version promoted there (no "
                "version then; the deployer role on it)"}


def _schemas() -> dict[str, Any]:
    return {
        "Error": _obj(["error", "message"], error={"type": "string"},
                      message={"type": "string"},
                      pointer={"type": "string", "description": "JSON pointer of the fault"}),
        "FlowDocument": _obj(["nodes", "edges"], schema={"type": "integer"},
                             name={"type": "string"},
                             nodes={"type": "array", "items": _ANY_OBJ},
                             edges={"type": "array", "items": _ANY_OBJ}),
        "WorkflowVersion": _obj(["workflow_id", "version"], workflow_id=_ID,
                                name={"type": "string"}, version={"type": "integer"},
                                hash={"type": "string"}, created_at={"type": "string"},
                                created_by={"type": ["string", "null"]}),
        "Workflow": {"allOf": [_ref("WorkflowVersion"), _obj(["graph"],
                                                              graph=_ref("FlowDocument"))]},
        "RunId": _obj(["run_id"], run_id=_ID),
        "NodeState": _obj(["state"], state={"type": "string"}, attempts={"type": "integer"},
                          started_at={"type": ["string", "null"]},
                          ended_at={"type": ["string", "null"]}, output={},
                          error={"type": ["string", "null", "object"]},
                          waiting=_ref("Waiting"),
                          items={**_ref("ItemCounts"), "description": "a map node's item "
                                 "counts (done of total, failed...)"},
                          child_run={"type": "string", "format": "uuid",
                                     "description": "the child run this node started "
                                     "(a sub-flow): open it to drill down"}),
        "Waiting": {**_obj(["kind"], kind={"enum": ["subflow", "approval", "resume"]},
                           message={"type": "string"},
                           approvers={"type": "array", "items": {"type": "string"}},
                           since={"type": "string"}, timeout_at={"type": "string"},
                           child={"type": "string"}),
                    "description": "what a waiting node waits for"},
        "Decision": _obj(["approved", "decided_by", "decided_at"],
                         approved={"type": "boolean"}, decided_by={"type": "string"},
                         decided_at={"type": "string"}, comment={"type": "string"}),
        "Pool": _obj(["name", "size"], name={"type": "string"},
                     size={"type": "integer", "minimum": 0},
                     description={"type": ["string", "null"]},
                     running={"type": "integer", "description": "slots in use"},
                     waiting={"type": "integer", "description": "nodes waiting for a slot"},
                     updated_by={"type": ["string", "null"]}, updated_at={"type": "string"}),
        "ChildRun": _obj(["run_id", "node_id", "status"], run_id=_ID,
                         node_id={"type": "string"}, item={"type": ["integer", "null"]},
                         status={"type": "string"}, started_at={"type": ["string", "null"]},
                         ended_at={"type": ["string", "null"]}),
        "ItemCounts": _obj(["total", "done"], total={"type": "integer"},
                           done={"type": "integer"}, running={"type": "integer"},
                           succeeded={"type": "integer"}, failed={"type": "integer"},
                           canceled={"type": "integer"}),
        "MapItem": _obj(["index", "state", "attempts"], index={"type": "integer"},
                        state={"enum": ["queued", "running", "succeeded", "failed",
                                        "canceled"]},
                        attempts={"type": "integer"}, item={"description": "the item itself"},
                        output={}, error={"type": ["string", "null"]},
                        worker={"type": ["string", "null"]},
                        duration_ms={"type": ["number", "null"]},
                        started_at={"type": ["string", "null"]},
                        ended_at={"type": ["string", "null"]}),
        "Run": _obj(["run_id", "status"], run_id=_ID, status={"type": "string"},
                    workflow_id=_ID, version={"type": "integer"},
                    source={"type": ["string", "null"]}, trigger={"type": "string"},
                    inputs=_ANY_OBJ, created_by={"type": ["string", "null"]},
                    started_at={"type": ["string", "null"]},
                    ended_at={"type": ["string", "null"]},
                    parent={"oneOf": [{"type": "null"}, _obj(
                        ["run_id", "node_id"], run_id=_ID, node_id={"type": "string"},
                        item={"type": ["integer", "null"]})],
                        "description": "the run and node this child run (a sub-flow) "
                        "belongs to"},
                    nodes={"type": "object", "additionalProperties": _ref("NodeState")}),
        "Attempt": _obj(["attempt"], attempt={"type": "integer"}, status={"type": "string"},
                        error={}, log={"type": ["string", "null"]}, input={}, output={},
                        duration_ms={"type": ["number", "null"]}),
        "Proposal": _obj(["flow", "model", "attempts"], flow=_ref("FlowDocument"),
                         model={"type": "string"}, usage=_ANY_OBJ,
                         attempts={"type": "integer", "minimum": 1, "maximum": 2},
                         faults={"type": "array", "items": _ANY_OBJ}),
        "RunUpdate": _obj(["run_id", "version"], run_id=_ID, version={"type": "integer"},
                          previous_version={"type": "integer"},
                          rerun={"type": "array", "items": {"type": "string"}},
                          added={"type": "array", "items": {"type": "string"}},
                          removed={"type": "array", "items": {"type": "string"}},
                          stale={"type": "array", "items": {"type": "string"}}),
        "NodeContext": _obj(["run_id", "node_id", "inputs", "params"], run_id=_ID,
                            node_id={"type": "string"}, type={"type": "string"},
                            state={"type": "string"}, version={"type": "integer"},
                            recorded={"type": "boolean"}, inputs=_ANY_OBJ, params=_ANY_OBJ,
                            config={"type": ["object", "null"]}, node=_ANY_OBJ,
                            code={"type": ["string", "null"]}, error={}),
        "NodeTest": _obj(["test_id", "status"], test_id=_ID,
                         status={"enum": ["queued", "running", "succeeded", "failed"]},
                         node_id={"type": "string"}, output={}, error={},
                         log={"type": ["string", "null"]}, env={"type": "string"},
                         duration_ms={"type": ["number", "null"]}),
        "Secret": _obj(["name"], name={"type": "string"}, updated_at={"type": "string"}),
        "Environment": _obj(
            ["name", "restricted"], name={"type": "string"}, description={"type": "string"},
            restricted={"type": "boolean"}, vars={"type": "object"},
            roles={"type": "array", "items": _ANY_OBJ}),
        "Connection": _obj(
            ["name", "env", "kind", "display"], name={"type": "string"},
            env={"type": "string", "description": "'' : every environment without its own"},
            kind={"enum": ["postgres", "http"]},
            display={"type": "string", "description": "the URL without its password"},
            trusted={"type": "boolean"}, groups={"type": "array", "items": {"type": "string"}},
            updated_at={"type": "string"}),
        "Role": _obj(["principal", "role"], principal={"type": "string"},
                     role={"enum": ["viewer", "runner", "editor", "owner"]}),
        "Webhook": _obj(["hook_id", "workflow_id", "auth"], hook_id={"type": "string"},
                        workflow_id={"type": "string"}, auth={"enum": ["hmac", "jwt"]},
                        secret={"type": "string", "description": "shown only on create/rotate"},
                        url={"type": "string"}),
        "Schedule": _obj(["schedule_id", "cron"], schedule_id={"type": "string"},
                         cron={"type": "string"}, timezone={"type": "string"},
                         next_fire_at={"type": "string"}, misfire=_MISFIRE,
                         catch_up_limit=_CATCH_UP,
                         skipped_firings={"type": "integer", "description":
                                          "firings missed and not run (misfire policy)"}),
        "QueueTrigger": _obj(["trigger_id", "stream"], trigger_id={"type": "string"},
                             stream={"type": "string"}, consumer_group={"type": "string"}),
        "Event": _obj(["id", "run", "state"], id={"type": "string"}, run={"type": "string"},
                      node={"type": ["string", "null"]}, state={"type": "string"},
                      attempt={"type": "integer"}, at={"type": "string"},
                      duration_ms={"type": ["number", "null"]}, error={}),
    }


def _paths() -> dict[str, Any]:
    wf_body = _body(_obj(["graph"], graph=_GRAPH, name={"type": "string"}))
    ws = {"101": {"description": "Switching to the websocket; each message is an Event "
                  "(JSON text)", "content": {"application/json": {"schema": _ref("Event")}}}}
    after = _param("after", "query", {"type": "string", "pattern": "^[0-9$-]{1,64}$"}, False,
                   "resume after this stream id")
    name = _param("name", schema={"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$"})
    env_s = {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"}
    env_p = _param("env", schema=env_s)
    env_q = _param("env", "query", {"type": "string", "pattern": "^([a-z][a-z0-9_-]{0,62})?$"},
                   False, "an environment (absent: every environment)")
    return {
        "/nexusflow/api/openapi.json": {"get": _op(
            "This document", {"200": _json(_ANY_OBJ)}, errors=(403,), tag="meta")},
        "/nexusflow/api/node-types": {"get": _op(
            "The node-type catalog: each type's config JSON Schema, category, icon, docs link, "
            "package and version; and the node packages that are broken, with the reason",
            {"200": _json(_obj(
                ["node_types", "broken"],
                node_types={"type": "array", "items": _ANY_OBJ},
                broken={"type": "array", "items": _obj(
                    ["type", "package", "version", "reason"], type={"type": "string"},
                    package={"type": "string"}, version={"type": "string"},
                    entry_point={"type": ["string", "null"]}, reason={"type": "string"})}))},
            errors=(403,), tag="meta")},
        "/nexusflow/api/describe": {
            "get": _op("Whether 'describe a flow' has a model, and which (never the key)",
                       {"200": _json(_obj(["configured"], configured={"type": "boolean"},
                                          model={"type": ["string", "null"]},
                                          base_url={"type": ["string", "null"]}))},
                       errors=(403,), tag="ai"),
            "post": _op(
                "Describe a flow: the server's configured model proposes a flow document for "
                "the words given (the compiler checked it; nothing is saved or run)",
                {"200": _json(_ref("Proposal"))},
                body=_body(_obj(["text"], text={"type": "string", "minLength": 1,
                                                "maxLength": 8000},
                                name={"type": "string", "maxLength": 200})),
                errors=(400, 403, 413, 415, 422, 502), tag="ai",
                description="422: the model's answer did not compile, also when asked again "
                            "with the compiler's error; the body holds the error (message, "
                            "pointer), the answer and each attempt's fault."),
        },
        "/nexusflow/api/workflows": {
            "get": _op("List workflows (latest version of each)",
                       {"200": _json(_list("workflows", _ref("WorkflowVersion")))},
                       errors=(403, 503), tag="workflows"),
            "post": _op("Create a workflow (its first version)",
                        {"201": _json(_ref("WorkflowVersion"), "Created")}, body=wf_body,
                        errors=(400, 403, 413, 415, 422, 503), tag="workflows")},
        "/nexusflow/api/workflows/{workflow_id}": {
            "get": _op("Get a workflow version with its graph", {"200": _json(_ref("Workflow"))},
                       params=[_WF, _VERSION_Q], tag="workflows"),
            "put": _op("Save a new version (none when the graph is unchanged)",
                       {"200": _json(_ref("WorkflowVersion"))}, body=wf_body, params=[_WF],
                       errors=(400, 403, 404, 413, 415, 422), tag="workflows"),
            "delete": _op("Delete a workflow (owner)", _NO_CONTENT, params=[_WF],
                          tag="workflows")},
        "/nexusflow/api/workflows/{workflow_id}/versions": {"get": _op(
            "List a workflow's versions", {"200": _json(_list("versions",
                                                              _ref("WorkflowVersion")))},
            params=[_WF], tag="workflows")},
        "/nexusflow/api/workflows/{workflow_id}/diff": {"get": _op(
            "Diff two versions", {"200": _json(_obj(["from", "to"], **{
                "from": {"type": "integer"}, "to": {"type": "integer"}, "nodes": _ANY_OBJ,
                "edges": _ANY_OBJ, "text": {"type": "string"}}))},
            params=[_WF, _param("from", "query", {"type": "integer", "minimum": 1}, True),
                    _param("to", "query", {"type": "integer", "minimum": 1}, True)],
            tag="workflows")},
        "/nexusflow/api/workflows/{workflow_id}/rollback": {"post": _op(
            "Make an old version current (as a new version)",
            {"200": _json(_ref("WorkflowVersion"))},
            body=_body(_obj(["version"], version={"type": "integer", "minimum": 1})),
            params=[_WF], errors=(400, 403, 404, 415), tag="workflows")},
        "/nexusflow/api/workflows/{workflow_id}/roles": {"get": _op(
            "List the roles on a workflow", {"200": _json(_list("roles", _ref("Role")))},
            params=[_WF], tag="roles")},
        "/nexusflow/api/workflows/{workflow_id}/roles/{principal}": {
            "put": _op("Grant a role (owner)", {"200": _json(_ref("Role"))},
                       body=_body(_obj(["role"], role={"enum": ["viewer", "runner", "editor",
                                                                "owner"]})),
                       params=[_WF, _param("principal")], errors=(400, 403, 404, 415),
                       tag="roles"),
            "delete": _op("Revoke a role (owner)", _NO_CONTENT,
                          params=[_WF, _param("principal")], tag="roles")},
        "/nexusflow/api/workflows/{workflow_id}/webhooks": {
            "get": _op("List a workflow's webhooks",
                       {"200": _json(_list("webhooks", _ref("Webhook")))}, params=[_WF],
                       tag="triggers"),
            "post": _op("Create a webhook (the secret is shown once)",
                        {"201": _json(_ref("Webhook"), "Created")}, params=[_WF],
                        body=_body(_obj(
                            auth={"enum": ["hmac", "jwt"]}, version=_TRIGGER_VERSION,
                            env=_TRIGGER_ENV,
                            jwt_algorithm={"type": "string"}, jwt_audience={"type": "string"},
                            jwt_issuer={"type": "string"}, jwt_key={"type": "string"},
                            content_types={"type": "array", "items": {"type": "string"}},
                            max_body_bytes={"type": "integer"}, rate_limit={"type": "integer"},
                            rate_window_s={"type": "integer"}, wait_s={"type": "number"}),
                            required=False),
                        errors=(400, 403, 404, 415), tag="triggers")},
        "/nexusflow/api/workflows/{workflow_id}/schedules": {
            "get": _op("List a workflow's cron schedules",
                       {"200": _json(_list("schedules", _ref("Schedule")))}, params=[_WF],
                       tag="triggers"),
            "post": _op("Create a cron schedule", {"201": _json(_ref("Schedule"), "Created")},
                        params=[_WF], body=_body(_obj(
                            ["cron"], cron={"type": "string"}, timezone={"type": "string"},
                            inputs=_ANY_OBJ, version=_TRIGGER_VERSION, misfire=_MISFIRE,
                            catch_up_limit=_CATCH_UP, env=_TRIGGER_ENV)),
                        errors=(400, 403, 404, 415), tag="triggers")},
        "/nexusflow/api/workflows/{workflow_id}/queues": {
            "get": _op("List a workflow's queue triggers",
                       {"200": _json(_list("queues", _ref("QueueTrigger")))}, params=[_WF],
                       tag="triggers"),
            "post": _op("Start a run for each message of a Redis stream",
                        {"201": _json(_ref("QueueTrigger"), "Created")}, params=[_WF],
                        body=_body(_obj(["stream"], stream={"type": "string"},
                                        group={"type": "string"}, version=_TRIGGER_VERSION,
                                        env=_TRIGGER_ENV)),
                        errors=(400, 403, 404, 415), tag="triggers")},
        "/nexusflow/api/webhooks/{hook_id}": {"delete": _op(
            "Delete a webhook", _NO_CONTENT, params=[_param("hook_id")], tag="triggers")},
        "/nexusflow/api/webhooks/{hook_id}/rotate": {"post": _op(
            "Rotate a webhook's secret (the previous one stays valid until the next rotation)",
            {"200": _json(_ref("Webhook"))}, params=[_param("hook_id")],
            body=_body(_obj(jwt_key={"type": "string"}), required=False), tag="triggers")},
        "/nexusflow/api/schedules/{schedule_id}": {"delete": _op(
            "Delete a schedule", _NO_CONTENT, params=[_param("schedule_id")], tag="triggers")},
        "/nexusflow/api/queues/{trigger_id}": {"delete": _op(
            "Delete a queue trigger", _NO_CONTENT, params=[_param("trigger_id")],
            tag="triggers")},
        "/nexusflow/api/runs": {
            "get": _op("List runs, newest first (without nodes)",
                       {"200": _json(_list("runs", _ref("Run")))},
                       params=[_param("limit", "query", {"type": "integer", "minimum": 1,
                                                         "maximum": 1000}, False),
                               _param("workflow_id", "query", _ID, False),
                               _param("source", "query", {"type": "string"}, False,
                                      "the .nxflow path a run came from (any user's root)"),
                               _param("path", "query", {"type": "string"}, False,
                                      "a .nxflow path of this server: the runs of the "
                                      "workflow that file is filed under"),
                               _param("file", "query", {"type": "string"}, False,
                                      "the real absolute path of a flow file (what a "
                                      "single-user server sends the service for ?path)"),
                               _param("status", "query", {"enum": ["queued", "running",
                                                                   "succeeded", "failed",
                                                                   "canceled"]},
                                      False)],
                       errors=(400, 403, 404), tag="runs"),
            "post": _op("Start a run from a .nxflow path (the live collaborative document "
                        "when open), a flow sent whole, or a stored workflow version",
                        {"201": _json(_ref("RunId"), "Started")},
                        body=_body({"oneOf": [
                            _obj(["path"], path={"type": "string"}, inputs=_ANY_OBJ,
                                 **_RUN_OPTIONS),
                            _obj(["graph"], graph=_GRAPH, inputs=_ANY_OBJ, **_RUN_OPTIONS,
                                 source={"type": "string", "description": "where it came "
                                         "from (recorded as the run's source)"},
                                 file={"type": "string", "description": "the file's real "
                                       "absolute path: filed under that file's workflow"},
                                 live={"type": "boolean"},
                                 trigger={"enum": ["manual", "notebook"]}),
                            _obj(["workflow_id"], workflow_id=_ID,
                                 version={"type": "integer", "minimum": 1},
                                 inputs=_ANY_OBJ, trigger={"enum": ["manual", "notebook"]},
                                 **_RUN_OPTIONS)]}),
                        errors=(400, 403, 404, 413, 415, 422, 503), tag="runs")},
        "/nexusflow/api/runs/{run_id}": {"get": _op(
            "Get a run with every node's state and output (as `nexusflow run --json`; "
            "outputs=false leaves the outputs out)",
            {"200": _json(_ref("Run"))},
            params=[_RUN, _param("outputs", "query", {"type": "string",
                                                      "enum": ["true", "false"]}, False)],
            tag="runs")},
        "/nexusflow/api/runs/{run_id}/cancel": {"post": _op(
            "Cancel a run", {"202": _json(_ref("RunId"), "Canceling")}, params=[_RUN],
            errors=(400, 403, 404, 409), tag="runs")},
        "/nexusflow/api/runs/{run_id}/retry": {"post": _op(
            "Retry a finished run's failed nodes, or re-run from a node (same run id); with "
            "update, with the flow's current version (a .nxflow path of this server, a flow "
            "sent whole, else the latest stored version), keeping what succeeded",
            {"202": _json({"oneOf": [_ref("RunId"), _ref("RunUpdate")]}, "Retrying")},
            params=[_RUN],
            body=_body(_obj(from_node={"type": "string"}, update={"type": "boolean"},
                            path={"type": "string"}, graph=_GRAPH, file={"type": "string"},
                            source={"type": "string"}), required=False),
            errors=(400, 403, 404, 409, 415, 422), tag="runs")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/context": {"get": _op(
            "What a node saw, as recorded: its inputs, params, rendered config and code "
            "(masked like the run's record)", {"200": _json(_ref("NodeContext"))},
            params=[_RUN, _NODE], tag="debug")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/notebook": {"post": _op(
            "Write the node's debug notebook (<flow>-<node>-debug.ipynb) next to the flow, or "
            "find it", {"200": _json(_obj(["path", "created"], path={"type": "string"},
                                          created={"type": "boolean"}), "There already"),
                        "201": _json(_obj(["path", "created"], path={"type": "string"},
                                          created={"type": "boolean"}), "Written")},
            params=[_RUN, _NODE], body=_body(_obj(["path"], path={"type": "string"})),
            errors=(400, 403, 404, 415), tag="debug")},
        "/nexusflow/api/tests": {"post": _op(
            "Test one node on a worker, outside any run, with the inputs of its latest run "
            "or the ones given; wait up to wait_s for the result",
            {"201": _json(_ref("NodeTest"), "Queued (and maybe done)")},
            body=_body(_obj(["node_id"], node_id={"type": "string"}, node=_ANY_OBJ,
                            path={"type": "string"}, graph=_GRAPH, file={"type": "string"},
                            source={"type": "string"}, workflow_id=_ID, inputs=_ANY_OBJ,
                            params=_ANY_OBJ, run_id=_ID, env=env_s,
                            wait_s={"type": "number", "minimum": 0, "maximum": 60})),
            errors=(400, 403, 404, 413, 415, 422, 503), tag="debug")},
        "/nexusflow/api/tests/{test_id}": {"get": _op(
            "A node test: status, output, error and log", {"200": _json(_ref("NodeTest"))},
            params=[_param("test_id", schema=_ID)], tag="debug")},
        "/nexusflow/api/runs/{run_id}/replay": {"post": _op(
            "Start a new run with the same version and inputs",
            {"201": _json(_ref("RunId"), "Started")}, params=[_RUN],
            errors=(400, 403, 404, 409), tag="runs")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/logs": {"get": _op(
            "A node's attempts with logs, inputs, outputs and timing",
            {"200": _json(_list("attempts", _ref("Attempt")))}, params=[_RUN, _NODE],
            tag="runs")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/output": {"get": _op(
            "A node's output", {"200": _json(_obj(["run_id", "node"], run_id=_ID,
                                                  node={"type": "string"},
                                                  state={"type": ["string", "null"]},
                                                  output={}, error={}))},
            params=[_RUN, _NODE], tag="runs")},
        "/nexusflow/api/runs/{run_id}/event-log": {"get": _op(
            "The run's events after a stream id, waiting up to block_ms for new ones (the "
            "websocket's stream for plain HTTP clients)",
            {"200": _json(_list("events", _ref("Event")))},
            params=[_RUN, after, _param("block_ms", "query", {"type": "integer", "minimum": 0,
                                                             "maximum": 10000}, False),
                    _param("count", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 10000}, False)],
            tag="events")},
        "/nexusflow/api/workers": {"get": _op(
            "How many workers serve the queues, and the jobs waiting in them",
            {"200": _json(_obj(["workers", "queues"], workers={"type": "integer"},
                               queues={"type": "object",
                                       "additionalProperties": {"type": "integer"}}))},
            errors=(403, 503), tag="meta")},
        "/nexusflow/api/runs/{run_id}/events": {"get": _op(
            "Websocket: the run's events, the whole history first, then live", ws,
            params=[_RUN, after], tag="events", **{"x-websocket": True})},
        "/nexusflow/api/events": {"get": _op(
            "Websocket: live events of every run the user may see (level=run: only the "
            "runs' own events, node null)", ws,
            params=[after, _param("level", "query", {"type": "string", "enum": ["all", "run"]},
                                  False, "'run' keeps only the runs' own events")],
            errors=(400, 403), tag="events", **{"x-websocket": True})},
        "/nexusflow/api/secrets": {"get": _op(
            "List secret names (values are write-only)",
            {"200": _json(_list("secrets", _ref("Secret")))}, params=[env_q],
            errors=(400, 403, 503), tag="secrets")},
        "/nexusflow/api/secrets/{name}": {
            "put": _op("Set a secret (?env=: that environment's own value)", _NO_CONTENT,
                       params=[name, env_q],
                       body=_body(_obj(["value"], value={"type": "string"},
                                       groups={"type": "array", "items": {"type": "string"},
                                               "description": "Hub groups whose members' runs "
                                               "may read it (empty: any run)"})),
                       errors=(400, 403, 404, 413, 415), tag="secrets"),
            "delete": _op("Delete a secret", _NO_CONTENT, params=[name, env_q],
                          tag="secrets")},
        "/nexusflow/api/connections": {"get": _op(
            "List connections (passwords and header values are never shown)",
            {"200": _json(_list("connections", _ref("Connection")))}, params=[env_q],
            errors=(400, 403, 404, 503), tag="connections")},
        "/nexusflow/api/connections/{name}": {
            "get": _op("A connection's metadata", {"200": _json(_ref("Connection"))},
                       params=[name, env_q], tag="connections"),
            "put": _op("Store (or replace) a connection", {"200": _json(_ref("Connection"))},
                       params=[name, env_q],
                       body=_body(_obj(
                           ["url"], kind={"enum": ["postgres", "http"]},
                           url={"type": "string", "description": "postgresql://user@host/db, "
                                "or an http connection's base URL"},
                           password={"type": "string", "description": "write-only"},
                           headers={"type": "object", "additionalProperties":
                                    {"type": "string"}, "description": "http: sent with every "
                                    "request (write-only)"},
                           trusted={"type": "boolean", "description": "administrators only"},
                           groups={"type": "array", "items": {"type": "string"}})),
                       errors=(400, 403, 404, 413, 415), tag="connections"),
            "delete": _op("Delete a connection", _NO_CONTENT, params=[name, env_q],
                          tag="connections")},
        "/nexusflow/api/connections/{name}/test": {"post": _op(
            "Try a connection (connect, or GET its URL)",
            {"200": _json(_obj(["ok", "message"], ok={"type": "boolean"},
                               message={"type": "string"}, ms={"type": "number"}))},
            params=[name, env_q], tag="connections")},
        "/nexusflow/api/workflows/{workflow_id}/promote": {"post": _op(
            "Promote a version to an environment (its triggers run it); dry_run: only what "
            "would change", {"200": _json(_obj(
                ["env", "version", "from_version"], env={"type": "string"},
                version={"type": "integer"},
                from_version={"type": ["integer", "null"]}, unchanged={"type": "boolean"},
                nodes=_ANY_OBJ, edges=_ANY_OBJ, text={"type": "string"},
                promotion=_ANY_OBJ))},
            params=[_WF], body=_body(_obj(
                ["version", "env"], version={"type": "integer", "minimum": 1}, env=env_s,
                note={"type": "string", "maxLength": 2000}, dry_run={"type": "boolean"})),
            errors=(400, 403, 404, 413, 415, 422), tag="environments")},
        "/nexusflow/api/workflows/{workflow_id}/promotions": {"get": _op(
            "The version promoted to each environment, and the history (who, when)",
            {"200": _json(_obj(["current", "history"], current={"type": "object"},
                               history={"type": "array", "items": _ANY_OBJ}))},
            params=[_WF, _param("env", "query", env_s, False)], tag="environments")},
        "/nexusflow/api/envs": {
            "get": _op("Environments, their variables and role grants",
                       {"200": _json(_list("environments", _ref("Environment")))},
                       errors=(403, 503), tag="environments"),
            "post": _op("Create an environment (administrators)",
                        {"201": _json(_ref("Environment"))},
                        body=_body(_obj(["name"], name=env_s, description={"type": "string"},
                                        restricted={"type": "boolean", "description":
                                                    "running in it needs a role (default)"})),
                        errors=(400, 403, 413, 415), tag="environments")},
        "/nexusflow/api/envs/{env}": {
            "get": _op("An environment", {"200": _json(_ref("Environment"))},
                       params=[env_p], tag="environments"),
            "delete": _op("Delete an environment, its secrets and connections (administrators)",
                          _NO_CONTENT, params=[env_p], tag="environments")},
        "/nexusflow/api/envs/{env}/vars/{name}": {
            "put": _op("Set a variable (env['NAME'] in expressions; deployers)", _NO_CONTENT,
                       params=[env_p, name], body=_body(_obj(["value"], value={})),
                       errors=(400, 403, 404, 413, 415), tag="environments"),
            "delete": _op("Remove a variable (deployers)", _NO_CONTENT, params=[env_p, name],
                          tag="environments")},
        "/nexusflow/api/envs/{env}/roles/{principal}": {
            "put": _op("Grant a role on an environment (administrators)",
                       {"200": _json(_obj(["role"], role={"enum": ["runner", "deployer"]}))},
                       params=[env_p, _param("principal")],
                       body=_body(_obj(["role"], role={"enum": ["runner", "deployer"]})),
                       errors=(400, 403, 404, 413, 415), tag="environments"),
            "delete": _op("Revoke a role on an environment (administrators)", _NO_CONTENT,
                          params=[env_p, _param("principal")], tag="environments")},
        "/nexusflow/api/audit": {"get": _op(
            "The audit log, newest first", {"200": _json(_list("entries", _ANY_OBJ))},
            params=[_param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 1000}, False),
                    _param("before", "query", {"type": "integer", "minimum": 1}, False),
                    *(_param(q, "query", {"type": "string", "maxLength": 256}, False)
                      for q in ("actor", "action", "resource")),
                    _param("since", "query", {"type": "string", "format": "date-time"}, False)],
            errors=(400, 403), tag="meta")},
        "/nexusflow/api/documents/live": {"get": _op(
            "A .nxflow file as open canvases have it now (the live collaborative document), "
            "else as saved", {"200": _json(_obj(["path", "live", "document"],
                                                 path={"type": "string"},
                                                 live={"type": "boolean"},
                                                 document=_ref("FlowDocument")))},
            params=[_param("path", "query", {"type": "string"}, True,
                           "contents path of a .nxflow file")],
            errors=(400, 403, 404, 422), tag="documents")},
        "/nexusflow/api/documents/patch": {"post": _op(
            "Apply node, edge and field ops to a .nxflow file in one transaction of the live "
            "collaborative document (every open canvas sees them), else to the file",
            {"200": _json(_obj(["path", "live", "applied", "document"],
                               path={"type": "string"}, live={"type": "boolean"},
                               applied={"type": "integer"}, document=_ref("FlowDocument")))},
            body=_body(_obj(["path", "ops"], path={"type": "string"},
                            create={"type": "boolean", "description": "create a missing file"},
                            ops={"type": "array", "items": {"oneOf": [
                                _obj(["op", "node"], op={"const": "put_node"}, node=_ANY_OBJ),
                                _obj(["op", "edge"], op={"const": "put_edge"}, edge=_ANY_OBJ),
                                _obj(["op", "id"], op={"enum": ["delete_node", "delete_edge"]},
                                     id={"type": "string"}),
                                _obj(["op", "key", "value"], op={"const": "set"},
                                     key={"enum": ["name", "description", "params"]},
                                     value={})]}})),
            errors=(400, 403, 404, 409, 413, 415), tag="documents")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/decision": {"post": _op(
            "Approve or reject a waiting approval node (its approvers, else the runner role); "
            "the decision is the node's output",
            {"200": _json(_obj(["run_id", "node_id", "decision"], run_id=_ID,
                               node_id={"type": "string"}, decision=_ref("Decision")))},
            params=[_RUN, _NODE],
            body=_body(_obj(["approved"], approved={"type": "boolean"},
                            comment={"type": "string", "maxLength": 10000})),
            errors=(400, 403, 404, 409, 415), tag="runs")},
        "/nexusflow/api/runs/{run_id}/children": {"get": _op(
            "The run's child runs (sub-flows), oldest first",
            {"200": _json(_list("children", _ref("ChildRun")))}, params=[_RUN], tag="runs")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/items": {"get": _op(
            "One page of a map node's items (index, state, attempts, output, error) in item "
            "order, with the map's counts; total counts the items in the state asked for",
            {"200": _json(_obj(["run_id", "node_id", "total", "offset", "items"], run_id=_ID,
                               node_id={"type": "string"}, total={"type": "integer"},
                               offset={"type": "integer"}, limit={"type": "integer"},
                               counts={"oneOf": [{"type": "null"}, _ref("ItemCounts")],
                                       "description": "null until the map has started"},
                               items={"type": "array", "items": _ref("MapItem")}))},
            params=[_RUN, _NODE,
                    _param("offset", "query", {"type": "integer", "minimum": 0,
                                               "maximum": 10000000}, False),
                    _param("limit", "query", {"type": "integer", "minimum": 1,
                                              "maximum": 1000}, False),
                    _param("state", "query", {"enum": ["queued", "running", "succeeded",
                                                       "failed", "canceled"]}, False)],
            tag="runs")},
        "/nexusflow/api/runs/{run_id}/nodes/{node_id}/items/{index}": {"get": _op(
            "One item of a map node with its log and every attempt",
            {"200": _json({"allOf": [_ref("MapItem"), _obj(
                ["run_id", "node_id"], run_id=_ID, node_id={"type": "string"},
                log={"type": ["string", "null"]},
                history={"type": "array", "items": _ANY_OBJ})]})},
            params=[_RUN, _NODE, _param("index", schema={"type": "integer", "minimum": 0})],
            tag="runs")},
        "/nexusflow/api/pools": {"get": _op(
            "Pools with their size and use (slots held, nodes waiting)",
            {"200": _json(_list("pools", _ref("Pool")))}, errors=(403, 503), tag="pools")},
        "/nexusflow/api/pools/{name}": {
            "get": _op("A pool and its use", {"200": _json(_ref("Pool"))},
                       params=[_param("name")], tag="pools"),
            "put": _op("Create or resize a pool (administrators); a bigger pool starts waiting "
                       "nodes at once", {"200": _json(_ref("Pool"))}, params=[_param("name")],
                       body=_body(_obj(["size"], size={"type": "integer", "minimum": 0,
                                                        "maximum": 1000000},
                                       description={"type": "string", "maxLength": 1000})),
                       errors=(400, 403, 415), tag="pools"),
            "delete": _op("Delete a pool no node uses (administrators)", _NO_CONTENT,
                          params=[_param("name")], errors=(400, 403, 404, 409),
                          tag="pools")},
        "/nexusflow/hooks/resume/{token}": {"post": _op(
            "Public: resume a waiting wait node (its resume URL, from {{ resume_url('W') }}); "
            "the JSON body becomes its output; the token works once",
            {"200": _json(_obj(["run_id", "node_id", "status"], run_id=_ID,
                               node_id={"type": "string"}, status={"const": "resumed"}),
                          "Resumed")},
            params=[_param("token", schema={"type": "string",
                                             "pattern": "^[A-Za-z0-9_-]{20,128}$"})],
            body=_body({"description": "any JSON value"}),
            errors=(400, 404, 409, 413, 415, 429, 503), tag="triggers", security=[])},
        "/nexusflow/metrics": {"get": _op(
            "Prometheus metrics: runs by status, queue depths, live workers, trigger firings "
            "(the workers' own are on their metrics port). For the metrics token "
            "(NEXUSFLOW_METRICS_TOKEN, as a Bearer token) or an administrator",
            {"200": {"description": "Prometheus text exposition format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors=(401, 403), tag="operations")},
        "/nexusflow/hooks/{hook_id}": {"post": _op(
            "Public webhook: signed (Standard Webhooks HMAC) or JWT; the payload becomes the "
            "run's inputs",
            {"202": _json(_obj(["run_id"], run_id=_ID, status={"type": "string"}),
                          "Run started"),
             "200": _json(_obj(["run_id", "run"], run_id=_ID, status={"type": "string"},
                               run=_ref("Run")), "Run finished within ?wait")},
            params=[_param("hook_id"), _param("wait", "query", {"type": "number",
                                                                "minimum": 0}, False),
                    _param("webhook-id", "header", required=False),
                    _param("webhook-timestamp", "header", required=False),
                    _param("webhook-signature", "header", required=False)],
            body=_body({}, required=False),
            errors=(400, 401, 404, 409, 413, 415, 429, 503), tag="triggers", security=[])},
    }


def openapi_document(base_url: str = "/") -> dict[str, Any]:
    """Return the OpenAPI 3.1 document; ``servers`` points at the Jupyter base URL."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nexus-Flow", "version": __version__,
                 "description": "REST API of the Nexus-Flow Jupyter server extension. "
                 "Authenticate as for any Jupyter API (token header or cookie + XSRF)."},
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "security": [{"jupyterToken": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"jupyterToken": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`token <jupyter token>`"}},
        },
    }


__all__ = ["openapi_document"]

"""Describe a flow: a chat model turns a request in words into a flow the compiler accepts.

The model gets the node-type catalog (each type's config JSON Schema) and the request, and
must answer one flow document. It is asked with ``response_format`` set to the flow JSON
Schema (node types limited to the catalog's) where the server supports that, plainly where
it does not. The answer must parse, fit the schema and compile; if it does not, the model is
shown the compiler's error and asked once more; if that answer fails too, ``DescribeError``
carries the error and the answer. Nothing is ever applied from an answer that failed: the
caller gets a whole flow or an error.

The canvas calls this through the server (``POST /nexusflow/api/describe``, the server's
configured model and key), a notebook through ``Flow.from_text``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DescribeError, FlowError, NexusFlowError
from .nodes import catalog as node_catalog
from .nodes.chat import (
    DEFAULT_TIMEOUT_S,
    ChatClient,
    ChatError,
    Endpoint,
    add_usage,
    complete_with_format,
    json_schema_format,
    parse_json_answer,
)
from .settings import Settings

MAX_REQUEST_CHARS = 8000
"""Longest request (in characters) a user may describe a flow with."""

MAX_WAIT_S = 10.0
"""Longest ``Retry-After`` waited for once before the model is asked again (a person waits)."""

NOT_DESCRIBED = frozenset({"python_task"})
"""Node types never offered to the model: a ``python_task`` node comes from a notebook's
``@task`` (a function shipped by value), never from a description."""


class AiNotConfigured(NexusFlowError):
    """No model is configured for "describe a flow" (``NEXUSFLOW_AI_BASE_URL`` and
    ``NEXUSFLOW_AI_MODEL``, or the server's ``ai_base_url`` and ``ai_model``)."""


@dataclass(frozen=True)
class DescribeModel:
    """The model "describe a flow" asks."""

    endpoint: Endpoint
    model: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    temperature: float | None = 0.0


@dataclass
class Proposal:
    """A flow the model proposed and the compiler accepted (not applied anywhere yet)."""

    flow: dict[str, Any]
    """The flow document, without positions (the canvas and ``Flow`` lay it out)."""
    model: str
    usage: dict[str, int | None]
    attempts: int
    """1, or 2 when the first answer was refused and the model corrected it."""
    faults: list[dict[str, str]] = field(default_factory=list)
    """What was wrong with each refused answer (``message``, ``pointer``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "model": self.model, "usage": self.usage,
                "attempts": self.attempts, "faults": self.faults}


def configured_model(settings: Settings,
                     secret: Callable[[str], str] | None = None) -> DescribeModel:
    """Return the model of ``settings`` (``ai_base_url``, ``ai_model``, the key from the
    secret named ``ai_key_secret``, read with ``secret`` or the secret store).

    The endpoint is the operator's configuration, never a user's input, so it may be private
    (a model server on the same machine) whatever the workers' private-address policy.
    """
    missing = [name for name, value in (("NEXUSFLOW_AI_BASE_URL", settings.ai_base_url),
                                        ("NEXUSFLOW_AI_MODEL", settings.ai_model)) if not value]
    if missing:
        raise AiNotConfigured(
            "describing a flow needs a model: set " + " and ".join(missing)
            + " (or c.NexusFlow.ai_base_url and ai_model on the server; docs/ai.md)")
    key = None
    if settings.ai_key_secret:
        if secret is None:
            from .secrets import SecretStore

            secret = SecretStore(settings).get
        key = secret(settings.ai_key_secret)
    assert settings.ai_base_url and settings.ai_model
    return DescribeModel(Endpoint(settings.ai_base_url, key, allow_private=True),
                         settings.ai_model)


def describe_info(settings: Settings) -> dict[str, Any]:
    """Return whether "describe a flow" has a model, and which (never the key)."""
    from .settings import mask_url

    return {"configured": bool(settings.ai_base_url and settings.ai_model),
            "model": settings.ai_model,
            "base_url": mask_url(settings.ai_base_url) if settings.ai_base_url else None}


def describable_types(entries: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Return the catalog entries offered to the model (no testing or notebook-only types)."""
    entries = node_catalog() if entries is None else entries
    return [{"type": e["type"], "title": e.get("title"), "description": e.get("description"),
             "output_handles": e.get("output_handles") or [], "config_schema": e["config_schema"]}
            for e in entries
            if e.get("category") != "testing" and e["type"] not in NOT_DESCRIBED]


def answer_schema(types: Iterable[str]) -> dict[str, Any]:
    """Return the flow JSON Schema with node types limited to ``types`` (for
    ``response_format``; the compiler checks each config against its type's schema)."""
    from .model.document import flow_schema

    schema = copy.deepcopy(flow_schema())
    schema.pop("$id", None)
    schema.pop("$schema", None)
    schema["$defs"]["node"]["properties"]["type"] = {"enum": sorted(types)}
    return schema


_RULES = """\
You design workflows for Nexus-Flow. Answer with exactly one flow document as JSON and nothing
else: no prose, no code fence.

A flow document is {"schema": 1, "name": ..., "description": ..., "params": {...},
"nodes": [...], "edges": [...]}:
- nodes: {"id", "type", "label", "config"}. An id has letters, digits, "_", ".", "-"
  (start with a letter; short and meaningful, e.g. "fetch_orders"). "type" is one of the node
  types below and "config" must be valid against that type's config JSON Schema (required
  fields set, no other fields).
- edges: {"id", "source", "target"}; ids like "fetch_orders-summarize". An edge that leaves a
  node with output handles (a condition's "true" and "false") names one in "source_handle".
  The graph has no cycles. Leave positions out.
- A node gets its parents' outputs: in strings, templates like
  {{ inputs['fetch_orders']['json'] }} (an http node's output holds status, headers, json and
  text); transform and condition expressions are Python-like expressions over inputs and
  params (no imports, no assignments), e.g. len(inputs['fetch_orders']['json']) > 10.
- Values a run is started with are "params": declare each ({"city": {"type": "string",
  "default": "Paris"}}) and read it as params['city'].
- Never write a password, token or API key: where a config field accepts a stored secret, use
  {"$secret": "NAME"} with an upper-case NAME that says what it is (OPENAI_API_KEY).
- Keep the flow as small as the request allows."""


def system_prompt(types: list[dict[str, Any]]) -> str:
    """Return the system message: the rules of a flow document and the node-type catalog."""
    return (_RULES + "\n\nNode types (type, title, description, output_handles, "
            "config_schema):\n" + json.dumps(types, separators=(",", ":"), ensure_ascii=False))


def _fault(exc: FlowError) -> dict[str, str]:
    return {"message": exc.message, "pointer": exc.pointer}


def _fix_request(fault: dict[str, str]) -> str:
    where = f" at {fault['pointer']}" if fault["pointer"] else ""
    return (f"That flow is not valid{where}: {fault['message']}. Answer the whole corrected "
            "flow document, as JSON only.")


def check_answer(text: str, *, name: str | None = None) -> dict[str, Any]:
    """Return the flow document of an answer, or raise the ``FlowError`` that refuses it."""
    from .errors import FlowSchemaError, FlowSyntaxError
    from .model.compiler import compile_flow
    from .model.document import canonical_document, load_document

    try:
        data = parse_json_answer(text)
    except ValueError as exc:
        raise FlowSyntaxError(f"the answer is not JSON: {exc}", source="model answer") from None
    if not isinstance(data, dict):
        raise FlowSchemaError("the answer must be a flow document (a JSON object)",
                              source="model answer")
    data.setdefault("schema", 1)
    data.setdefault("edges", [])
    if name and not data.get("name"):
        data["name"] = name
    for node in data.get("nodes") or ():
        if isinstance(node, dict):
            node.pop("position", None)  # laid out by whoever shows it
    doc = load_document(data, source="model answer")
    compile_flow(doc)
    return canonical_document(doc.data)


def _ask(client: ChatClient, body: dict[str, Any], log: Callable[..., None] | None) -> Any:
    """Ask once, or twice when the server said to come back soon (a 429 or 5xx whose
    ``Retry-After`` is at most ``MAX_WAIT_S``): someone is waiting for the answer."""
    try:
        return complete_with_format(client, body, log=log)
    except ChatError as exc:
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        if not exc.retryable or exc.status == 0 or wait > MAX_WAIT_S:
            raise
        if log is not None:
            log("%s; asking again in %g s", exc, wait)
        time.sleep(wait)
        return complete_with_format(client, body, log=log)


def describe_flow(request: str, model: DescribeModel, *, name: str | None = None,
                  catalog: Iterable[Mapping[str, Any]] | None = None,
                  log: Callable[..., None] | None = None) -> Proposal:
    """Ask ``model`` for a flow that does what ``request`` says; return the ``Proposal``.

    Raises ``DescribeError`` (a ``FlowError``: what is wrong, where, and the answer) when the
    model's answer is refused twice, ``ChatError`` when the model cannot be asked, and
    ``NexusFlowError`` for an empty or too long request.
    """
    request = (request or "").strip()
    if not request:
        raise NexusFlowError("describe the flow you want: the request is empty")
    if len(request) > MAX_REQUEST_CHARS:
        raise NexusFlowError(f"the request is {len(request)} characters, over the limit of "
                             f"{MAX_REQUEST_CHARS}")
    types = describable_types(catalog)
    messages = [{"role": "system", "content": system_prompt(types)},
                {"role": "user", "content": request}]
    body: dict[str, Any] = {
        "model": model.model, "messages": messages,
        "response_format": json_schema_format(answer_schema(t["type"] for t in types),
                                              name="flow")}
    if model.temperature is not None:
        body["temperature"] = model.temperature
    faults: list[dict[str, str]] = []
    usage: dict[str, int | None] = {"prompt_tokens": None, "completion_tokens": None}
    with ChatClient(model.endpoint, timeout_s=model.timeout_s) as client:
        for attempt in (1, 2):
            answer = _ask(client, body, log)
            usage = add_usage(usage, answer.usage)
            try:
                flow = check_answer(answer.text, name=name)
            except FlowError as exc:
                faults.append(_fault(exc))
                if attempt == 2:
                    raise DescribeError(
                        f"the model's answer is not a runnable flow, also when asked again: "
                        f"{exc.message}", exc.pointer, answer=answer.text,
                        attempts=faults) from None
                if log is not None:
                    log("the answer is refused (%s); asking once more", exc)
                body["messages"] = [*messages, {"role": "assistant", "content": answer.text},
                                    {"role": "user", "content": _fix_request(faults[-1])}]
                continue
            return Proposal(flow, answer.model or model.model, usage, attempt, faults)
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["MAX_REQUEST_CHARS", "AiNotConfigured", "DescribeModel", "Proposal", "answer_schema",
           "check_answer", "configured_model", "describable_types", "describe_flow",
           "describe_info", "system_prompt"]

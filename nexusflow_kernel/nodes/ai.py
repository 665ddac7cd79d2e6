"""The AI node: one chat completion from any OpenAI-compatible server.

The protocol is ``chat.py``'s (httpx, the http node's guarded transport). With a
``json_schema``, the answer must be JSON valid against it: the model is asked once more with
the fault, then the node fails with it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import template_errors
from .base import NodeContext, NodeType
from .chat import (
    AUTH_HEADERS,
    DEFAULT_TIMEOUT_S,
    ChatClient,
    Endpoint,
    add_usage,
    complete_with_format,
    json_schema_format,
    parse_json_answer,
)
from .http import _SECRET_REF


def _schema_fault(value: Any, validator: Any) -> str | None:
    errors = sorted(validator.iter_errors(value), key=lambda e: _pointer(e.absolute_path))
    if not errors:
        return None
    err = errors[0]
    where = _pointer(err.absolute_path) or "/"
    return f"at {where}: {err.message[:300]}"


class AiNode(NodeType):
    """Ask an OpenAI-compatible model; the output holds the text (and its JSON)."""

    name = "ai"
    title = "AI"
    description = ("Ask a chat model (any OpenAI-compatible server); the output holds text, "
                   "json (with a json_schema), model and usage.")
    category = "core"
    icon = "✨"
    io_bound = True  # it waits on the model's server: map items of it wait in threads
    template_exempt = ("json_schema",)
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "AI",
        "description": "One chat completion. system and prompt may hold {{ templates }}.",
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": False,
        "properties": {
            "base_url": {
                "title": "Base URL", "type": "string", "minLength": 1, "maxLength": 2048,
                "description": "The server's API root, e.g. https://api.openai.com/v1 or "
                               "http://127.0.0.1:11434/v1 (Ollama); default: the workers' "
                               "NEXUSFLOW_AI_BASE_URL.",
            },
            "model": {
                "title": "Model", "type": "string", "minLength": 1, "maxLength": 256,
                "description": "Model name (a deployment name on Azure OpenAI).",
            },
            "system": {
                "title": "System prompt", "type": "string", "maxLength": 1_000_000,
                "description": "Instructions sent first, as the system message.",
            },
            "prompt": {
                "title": "Prompt", "type": "string", "minLength": 1, "maxLength": 1_000_000,
                "description": "The user message, e.g. Summarize: {{ inputs['fetch']['text'] }}",
            },
            "temperature": {
                "title": "Temperature", "type": "number", "minimum": 0, "maximum": 2,
                "description": "Sampling temperature; unset: the server's default.",
            },
            "max_tokens": {
                "title": "Max tokens", "type": "integer", "minimum": 1, "maximum": 10_000_000,
                "description": "Longest answer, in tokens; unset: the server's default.",
            },
            "api_key": {
                **_SECRET_REF,
                "title": "API key",
                "description": "A stored secret holding the key ({\"$secret\": NAME}), never "
                               "the key itself; unset for a server that needs none.",
            },
            "auth_header": {
                "title": "Key header", "enum": list(AUTH_HEADERS), "default": "authorization",
                "description": "authorization: 'Authorization: Bearer KEY' (OpenAI, most "
                               "servers); api-key: Azure OpenAI's header.",
            },
            "json_schema": {
                "title": "JSON Schema of the answer", "type": "object",
                "description": "When set, the answer must be JSON valid against this schema "
                               "(asked once more with the fault, then the node fails); the "
                               "output's json holds it.",
            },
            "stream": {
                "title": "Stream", "type": "boolean", "default": True,
                "description": "Stream the answer: the node's log shows it as it arrives.",
            },
            "timeout_s": {
                "title": "Timeout (s)", "type": "number", "exclusiveMinimum": 0,
                "maximum": 86400, "default": DEFAULT_TIMEOUT_S,
                "description": "Connect and read timeout of each request; never longer than "
                               "the node's timeout.",
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config, exempt=self.template_exempt)
        url = config.get("base_url")
        if isinstance(url, str) and "{{" not in url:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme not in ("http", "https"):
                faults.append(("/base_url", f"{url!r} is not an http:// or https:// URL"))
        schema = config.get("json_schema")
        if isinstance(schema, dict):
            import jsonschema

            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                faults.append(("/json_schema" + _pointer(exc.absolute_path),
                               f"not a valid JSON Schema: {exc.message[:300]}"))
        return faults

    def run(self, ctx: NodeContext) -> dict[str, Any]:
        config = ctx.config
        base_url = config.get("base_url") or ctx.settings.ai_base_url
        if not base_url:
            raise NodeExecutionError(
                "no base_url: set the node's base_url, or NEXUSFLOW_AI_BASE_URL on the workers",
                retryable=False)
        key = config.get("api_key")
        if key is not None and not isinstance(key, str):
            raise NodeExecutionError("api_key must be a secret reference", retryable=False)
        endpoint = Endpoint(str(base_url), key or None,
                            str(config.get("auth_header") or "authorization"),
                            allow_private=ctx.settings.allows_private_http())
        messages: list[dict[str, str]] = []
        if config.get("system"):
            messages.append({"role": "system", "content": _as_text(config["system"])})
        messages.append({"role": "user", "content": _as_text(config.get("prompt", ""))})
        body: dict[str, Any] = {"model": str(config.get("model", "")), "messages": messages}
        for name in ("temperature", "max_tokens"):
            if config.get(name) is not None:
                body[name] = config[name]
        schema = config.get("json_schema")
        validator = None
        if isinstance(schema, dict):
            import jsonschema

            validator = jsonschema.validators.validator_for(schema)(schema)
            body["response_format"] = json_schema_format(schema)
        stream = bool(config.get("stream", True))
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        on_text = ctx.log.stream if stream else None

        with ChatClient(endpoint, timeout_s=float(config.get("timeout_s", DEFAULT_TIMEOUT_S)),
                        deadline=ctx.deadline) as client:
            ctx.log("%s: model %s%s", client.shown, body["model"], ", streaming" if stream else "")
            started = time.monotonic()
            answer = complete_with_format(client, body, on_text=on_text, log=ctx.log)
            ctx.log.end_stream()
            usage = answer.usage
            value: Any = None
            if validator is not None:
                value, fault = _checked(answer.text, validator)
                if fault is not None:
                    ctx.log("the answer does not fit json_schema (%s); asking once more", fault)
                    body["messages"] = [
                        *messages, {"role": "assistant", "content": answer.text},
                        {"role": "user", "content": _fix_request(fault)}]
                    answer = complete_with_format(client, body, on_text=on_text, log=ctx.log)
                    ctx.log.end_stream()
                    usage = add_usage(usage, answer.usage)
                    value, fault = _checked(answer.text, validator)
                    if fault is not None:
                        raise NodeExecutionError(
                            f"the model's answer does not fit json_schema after one retry: "
                            f"{fault}", retryable=False)
            ctx.log("%s answered in %.1f s: %s prompt + %s completion tokens, finish %s",
                    answer.model or body["model"], time.monotonic() - started,
                    usage["prompt_tokens"], usage["completion_tokens"], answer.finish_reason)
        output: dict[str, Any] = {"text": answer.text, "model": answer.model or body["model"],
                                  "usage": usage}
        if validator is not None:
            output["json"] = value
        return output


def _checked(text: str, validator: Any) -> tuple[Any, str | None]:
    try:
        value = parse_json_answer(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    return value, _schema_fault(value, validator)


def _fix_request(fault: str) -> str:
    return (f"That answer is not valid: {fault}. Answer again with only the JSON value, "
            "valid against the JSON Schema you were given, and nothing else.")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _pointer(path: Any) -> str:
    """Return the JSON pointer (RFC 6901) of a jsonschema error's path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


__all__ = ["AiNode"]

"""Chat completions from any OpenAI-compatible server, over httpx (the ai node's client).

``ChatClient`` speaks the chat-completions protocol (``POST {base_url}/chat/completions``,
plain or streamed as server-sent events, read with ``httpx-sse``) through the HTTP node's
guarded transport, so the private-address policy of the workers applies to it as to ``http``
nodes. The ``ai`` node (``ai.py``) and "describe a flow" (``nexusflow_kernel.describe``) ask
their models through it.

Why httpx and not the ``openai`` package: the node needs the guarded transport (it connects
only to checked addresses), retries belong to the node's retry policy (the timer waits, no
worker sleeps; ``openai`` retries inside the call and sleeps), answers from servers that are
OpenAI-compatible only in part (Ollama, llama.cpp, vLLM, gateways) are read as plain JSON
rather than through strict response models, and the engine stays light (``openai`` brings
pydantic, anyio, jiter, tqdm and more into every kernel and worker).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import NodeExecutionError
from ..settings import mask_url
from .http import check_destination, checked_transport, ssl_context

DEFAULT_TIMEOUT_S = 120.0
"""Connect and read timeout of one request when the node sets none (never past its deadline)."""

MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Largest response body read from the server (a streamed answer counts its events)."""

MAX_ERROR_BODY = 64 * 1024
"""How much of an error response is read to say what went wrong."""

MAX_RETRY_AFTER_S = 3600.0
"""Longest ``Retry-After`` taken from a server."""

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
"""Statuses (besides 5xx) after which another attempt may succeed."""

AUTH_HEADERS = ("authorization", "api-key")


@dataclass(frozen=True)
class Endpoint:
    """Where a chat completion is asked and how the key goes with it."""

    base_url: str
    """The server's API root, e.g. ``https://api.openai.com/v1`` or
    ``http://127.0.0.1:11434/v1``; a query string (``?api-version=...``) is kept."""
    api_key: str | None = None
    auth_header: str = "authorization"
    """``authorization`` (``Authorization: Bearer KEY``) or ``api-key`` (Azure's header)."""
    allow_private: bool = False
    """Whether loopback, private and link-local addresses may be reached."""

    def chat_url(self) -> Any:
        import httpx

        url = httpx.URL(self.base_url)
        return url.copy_with(path=url.path.rstrip("/") + "/chat/completions")


@dataclass
class Answer:
    """One chat completion: the text, the model that answered, the tokens it counted."""

    text: str
    model: str
    usage: dict[str, int | None] = field(
        default_factory=lambda: {"prompt_tokens": None, "completion_tokens": None})
    finish_reason: str | None = None


class ChatError(NodeExecutionError):
    """The server refused or failed a chat completion; ``status`` is its HTTP status (0: no
    answer, or one that is not a chat completion)."""

    def __init__(self, message: str, *, status: int = 0, retryable: bool = True,
                 retry_after: float | None = None) -> None:
        self.status = status
        super().__init__(message, retryable=retryable, retry_after=retry_after)


def add_usage(a: Mapping[str, int | None], b: Mapping[str, int | None]) -> dict[str, int | None]:
    """Return the token counts of two calls together (``None`` when neither counted)."""
    out: dict[str, int | None] = {}
    for key in ("prompt_tokens", "completion_tokens"):
        x, y = a.get(key), b.get(key)
        out[key] = None if x is None and y is None else (x or 0) + (y or 0)
    return out


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Return the wait a server asked for: ``retry-after-ms``, else ``Retry-After`` (seconds
    or an HTTP date), within ``MAX_RETRY_AFTER_S``; ``None`` when it asked for none."""
    lower = {k.lower(): v for k, v in headers.items()}
    wait: float | None = None
    try:
        if "retry-after-ms" in lower:
            wait = float(lower["retry-after-ms"]) / 1000
        elif "retry-after" in lower:
            raw = lower["retry-after"].strip()
            try:
                wait = float(raw)
            except ValueError:
                when = email.utils.parsedate_to_datetime(raw)
                wait = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, OverflowError):
        return None
    if wait is None or wait != wait:  # NaN
        return None
    return max(0.0, min(MAX_RETRY_AFTER_S, wait))


def _error_text(body: bytes) -> str:
    """Return the message of an error body (OpenAI's ``{"error": {"message"}}`` or text)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"][:500]
    if isinstance(err, str):
        return err[:500]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"][:500]
    return text[:500]


class ChatClient:
    """Chat completions from one endpoint (one connection pool; use it as a context manager).

    ``deadline`` (``time.time()``) bounds every request and every streamed event: a call
    that runs past it fails as timed out, wherever it runs (a worker's main thread, where the
    node's alarm would stop it too, or a thread of its own). Every error it raises has the
    API key scrubbed out, whoever shows it (the server's "describe a flow" has no run masker).
    """

    def __init__(self, endpoint: Endpoint, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 deadline: float | None = None) -> None:
        import httpx

        if endpoint.auth_header not in AUTH_HEADERS:
            raise ChatError(f"auth_header must be one of {', '.join(AUTH_HEADERS)}",
                            retryable=False)
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.deadline = deadline
        try:
            self.url = endpoint.chat_url()
        except httpx.InvalidURL as exc:
            raise ChatError(f"invalid base_url {mask_url(endpoint.base_url)!r}: {exc}",
                            retryable=False) from None
        self.shown = f"POST {mask_url(str(self.url))}"
        self._scrub: Callable[[str], str] = _scrubber(endpoint.api_key)
        check_destination(self.url, endpoint.allow_private)
        # Guarded, the client connects only through the checked transport (environment
        # proxies are not used then: a proxy would connect wherever it is told).
        self._client = httpx.Client(
            transport=None if endpoint.allow_private else checked_transport(),
            verify=ssl_context(), follow_redirects=False)

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        key = self.endpoint.api_key
        if key:
            if self.endpoint.auth_header == "api-key":
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _left(self) -> float:
        if self.deadline is None:
            return self.timeout_s
        left = self.deadline - time.time()
        if left <= 0:
            raise ChatError(f"{self.shown} timed out (the node's timeout_s)", retryable=True)
        return min(self.timeout_s, left)

    def complete(self, body: Mapping[str, Any], *,
                 on_text: Callable[[str], None] | None = None) -> Answer:
        """Ask for one chat completion; ``body`` is the request (``stream: true`` streams it,
        each piece of text handed to ``on_text`` as it arrives)."""
        import httpx

        stream = bool(body.get("stream"))
        timeout = self._left()
        try:
            with self._client.stream("POST", self.url, json=dict(body),
                                     headers=self._headers(stream),
                                     timeout=httpx.Timeout(timeout)) as response:
                if response.status_code != 200:
                    raise self._status_error(response)
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype == "text/event-stream":
                    return self._read_stream(response, on_text)
                answer = self._read_whole(response)
                if on_text is not None and answer.text:
                    on_text(answer.text)
                return answer
        except ChatError as exc:
            raise ChatError(self._scrub(str(exc)), status=exc.status, retryable=exc.retryable,
                            retry_after=exc.retry_after) from None
        except NodeExecutionError as exc:  # the private-address guard
            raise NodeExecutionError(self._scrub(str(exc)), retryable=exc.retryable) from None
        except httpx.TimeoutException:
            raise ChatError(f"{self.shown} timed out after {timeout:.3g} s",
                            retryable=True) from None
        except (httpx.HTTPError, OSError) as exc:
            raise ChatError(self._scrub(f"{self.shown} failed: {type(exc).__name__}: {exc}"),
                            retryable=True) from None

    def _status_error(self, response: Any) -> ChatError:
        status = response.status_code
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= MAX_ERROR_BODY:
                break
        retryable = status >= 500 or status in RETRYABLE_STATUS
        wait = retry_after_s(response.headers) if retryable else None
        later = f" (retry after {wait:g} s)" if wait is not None else ""
        return ChatError(f"HTTP {status} from {self.shown}{later}: {_error_text(body)}",
                         status=status, retryable=retryable, retry_after=wait)

    def _malformed(self, why: str) -> ChatError:
        return ChatError(f"{self.shown}: the answer is not a chat completion ({why})",
                         retryable=True)

    def _read_whole(self, response: Any) -> Answer:
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise self._malformed(f"over {MAX_ANSWER_BYTES} bytes")
            self._left()
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise self._malformed(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self._malformed("not a JSON object")
        if "error" in data:
            raise ChatError(f"{self.shown} answered an error: {_error_text(body)}",
                            retryable=True)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._malformed("no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise self._malformed("no message in choices[0]")
        content = message.get("content")
        if content is None and isinstance(message.get("refusal"), str):
            raise ChatError(f"the model refused: {message['refusal'][:500]}", retryable=False)
        if content is not None and not isinstance(content, str):
            raise self._malformed("choices[0].message.content is not text")
        return Answer(content or "", str(data.get("model") or ""), _usage(data.get("usage")),
                      choices[0].get("finish_reason"))

    def _read_stream(self, response: Any, on_text: Callable[[str], None] | None) -> Answer:
        from httpx_sse import EventSource, SSEError

        parts: list[str] = []
        size = 0
        model, usage, finish = "", _usage(None), None
        try:
            for sse in EventSource(response).iter_sse():
                self._left()
                size += len(sse.data)
                if size > MAX_ANSWER_BYTES:
                    raise self._malformed(f"over {MAX_ANSWER_BYTES} bytes")
                if sse.data.strip() == "[DONE]":
                    break
                if not sse.data.strip():
                    continue
                try:
                    chunk = json.loads(sse.data)
                except ValueError as exc:
                    raise self._malformed(f"an event is not JSON: {exc}") from None
                if not isinstance(chunk, dict):
                    raise self._malformed("an event is not a JSON object")
                if "error" in chunk:
                    raise ChatError(f"{self.shown} answered an error while streaming: "
                                    f"{_error_text(sse.data.encode())}", retryable=True)
                model = str(chunk.get("model") or model)
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    piece = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(piece, str) and piece:
                        parts.append(piece)
                        if on_text is not None:
                            on_text(piece)
                    finish = choice.get("finish_reason") or finish
        except SSEError as exc:
            raise self._malformed(f"bad event stream: {exc}") from None
        return Answer("".join(parts), model, usage, finish)


def _usage(value: Any) -> dict[str, int | None]:
    value = value if isinstance(value, dict) else {}
    out: dict[str, int | None] = {}
    for key in ("prompt_tokens", "completion_tokens"):
        n = value.get(key)
        out[key] = n if isinstance(n, int) and not isinstance(n, bool) else None
    return out


def _scrubber(key: str | None) -> Callable[[str], str]:
    if not key:
        return lambda text: text
    from ..masking import Masker

    return Masker([key]).text


def json_schema_format(schema: Mapping[str, Any], name: str = "answer") -> dict[str, Any]:
    """Return the ``response_format`` that asks a server to answer JSON fitting ``schema``."""
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": dict(schema), "strict": False}}


def complete_with_format(client: ChatClient, body: dict[str, Any], *,
                         on_text: Callable[[str], None] | None = None,
                         log: Callable[..., None] | None = None) -> Answer:
    """Ask with ``body``'s ``response_format``; a server that refuses it (400 or 422) is asked
    once more without it (the answer is then checked by whoever asked)."""
    try:
        return client.complete(body, on_text=on_text)
    except ChatError as exc:
        if "response_format" not in body or exc.status not in (400, 422):
            raise
        if log is not None:
            log("the server refused response_format (%s); asking without it", exc)
        plain = {k: v for k, v in body.items() if k != "response_format"}
        answer = client.complete(plain, on_text=on_text)
        body.pop("response_format")  # later questions of this conversation go plain too
        return answer


def parse_json_answer(text: str) -> Any:
    """Return the JSON value of a model's answer: the text itself, or inside one fenced
    block (```json ... ```). Raises ``ValueError`` with the parser's message."""
    stripped = text.strip()
    if stripped.startswith("```"):
        first = stripped.find("\n")
        end = stripped.rfind("```")
        if first != -1 and end > first:
            stripped = stripped[first + 1:end].strip()
    return json.loads(stripped)


__all__ = ["AUTH_HEADERS", "DEFAULT_TIMEOUT_S", "Answer", "ChatClient", "ChatError", "Endpoint",
           "add_usage", "complete_with_format", "json_schema_format", "parse_json_answer",
           "retry_after_s"]

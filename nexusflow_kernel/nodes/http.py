"""The HTTP Request node: one request with httpx, an idempotency key and an SSRF guard."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import template_errors
from ..settings import mask_url
from .base import NodeContext, NodeType

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 429})

_SECRET_REF = {
    "type": "object",
    "title": "Secret",
    "description": "A stored secret, by name; resolved only on the worker.",
    "required": ["$secret"],
    "additionalProperties": False,
    "properties": {"$secret": {"type": "string", "minLength": 1}},
}
_TEXT_OR_SECRET = {"anyOf": [{"type": "string"}, _SECRET_REF]}
_SCALAR = {"type": ["string", "number", "boolean", "null"]}

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(address: str) -> str | None:
    """Return why ``address`` (an IP) must not be reached from a multi-user server, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = address_refusal(str(embedded))
            return f"{reason} (embedded in {ip})" if reason else None
    checks = (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
        ("not globally routable", not ip.is_global),
    )
    for label, hit in checks:
        if hit:
            return f"{ip} is a {label} address"
    return None


def _refused(url: Any, host: str, reason: str) -> NodeExecutionError:
    return NodeExecutionError(
        f"refused {mask_url(str(url))}: host {host!r} resolves to {reason}; private, "
        "loopback, link-local and metadata addresses are blocked on this worker "
        "(NEXUSFLOW_ALLOW_PRIVATE_HTTP)",
        retryable=False,
    )


def _resolve(host: str, port: int, url: Any) -> list[tuple[Any, ...]]:
    try:
        return socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise NodeExecutionError(
            f"cannot resolve host {host!r} of {mask_url(str(url))}: {exc}", retryable=True
        ) from None


def check_destination(url: Any, allow_private: bool) -> None:
    """Refuse a URL whose scheme is not http(s), or whose host resolves to a private address.

    Raises a non-retryable ``NodeExecutionError``; nothing is sent before this check passes.
    The connection itself is made by ``checked_transport``, which resolves the name once
    more, checks again and connects to the address it checked.
    """
    import httpx

    url = httpx.URL(str(url))
    if url.scheme not in ("http", "https"):
        raise NodeExecutionError(
            f"refused {mask_url(str(url))}: only http and https URLs are allowed",
            retryable=False,
        )
    host = url.host
    if not host:
        raise NodeExecutionError(f"refused {mask_url(str(url))}: the URL has no host",
                                 retryable=False)
    if allow_private:
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    for info in _resolve(host, port, url):
        reason = address_refusal(str(info[4][0]))
        if reason:
            raise _refused(url, host, reason)


_SSL_CONTEXT: Any = None


def ssl_context() -> Any:
    """Return the process's one TLS context (the system's CA bundle, verification on).

    Making one reads and parses the whole CA bundle: tens of milliseconds of CPU, which an
    httpx client makes afresh unless given one. Every request of the process shares this one
    (an ``ssl.SSLContext`` is safe to share between threads once configured), so a map of
    a thousand http items or a thousand waiting http nodes does not parse it a thousand times.
    """
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import httpx

        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


def checked_transport() -> Any:
    """Return an httpx transport that connects only to addresses the guard allows.

    It resolves each host once, refuses the connection if any address is private, and
    connects to an address it checked, so a name that answers differently the second time
    (DNS rebinding) cannot lead elsewhere. TLS still verifies the name of the URL. Hand-written
    over httpcore's network backend: no maintained library does this for httpx.
    """
    import httpcore
    import httpx

    class CheckedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            url = f"http://{host}:{port}/"
            infos = _resolve(host, port, url)
            for info in infos:
                reason = address_refusal(str(info[4][0]))
                if reason:
                    raise _refused(url, host, reason)
            error: Exception | None = None
            for info in infos:
                try:
                    return super().connect_tcp(str(info[4][0]), port, timeout, local_address,
                                               socket_options)
                except httpcore.ConnectError as exc:
                    error = exc
            raise error or httpcore.ConnectError(f"no address for {host!r}")

    shared = ssl_context()
    transport = httpx.HTTPTransport(verify=shared)
    # httpx takes no network backend: its pool is replaced by the same pool with ours (a test
    # pins that the transport connects through it).
    transport._pool = httpcore.ConnectionPool(ssl_context=shared,
                                              network_backend=CheckedBackend())
    return transport


def _query_pairs(query: Mapping[str, Any]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            pairs.append((str(key), text))
    return pairs


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HttpNode(NodeType):
    """Send one HTTP request and return the status, headers and body."""

    name = "http"
    title = "HTTP Request"
    description = "Call an HTTP API; the output holds status, headers, json and text."
    category = "core"
    icon = "🌐"
    effectful = True
    io_bound = True
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HTTP Request",
        "description": "One HTTP request. Strings may hold {{ templates }}.",
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "method": {
                "title": "Method", "enum": list(METHODS), "default": "GET",
                "description": "HTTP method.",
            },
            "url": {
                "title": "URL", "type": "string", "minLength": 1, "maxLength": 8192,
                "description": "http:// or https:// URL, e.g. https://api.example.com/items "
                               "(with a connection, a path under its URL: /items).",
            },
            "connection": {
                "title": "Connection", "type": "string", "minLength": 1, "maxLength": 128,
                "description": "A stored http connection (`nexusflow connections add`): its "
                               "headers (credentials) are sent, the URL must be under its own.",
            },
            "headers": {
                "title": "Headers", "type": "object", "default": {},
                "description": "Request headers; a value may be a secret reference.",
                "additionalProperties": _TEXT_OR_SECRET,
            },
            "query": {
                "title": "Query parameters", "type": "object", "default": {},
                "description": "Added to the URL's query string; a list repeats the key.",
                "additionalProperties": {
                    "anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}, _SECRET_REF]
                },
            },
            "json": {
                "title": "JSON body",
                "description": "Sent as application/json. Use either json or body.",
            },
            "body": {
                "title": "Raw body", "description": "Sent as is. Use either json or body.",
                **_TEXT_OR_SECRET,
            },
            "timeout_s": {
                "title": "Timeout (s)", "type": "number", "exclusiveMinimum": 0,
                "maximum": 3600, "default": 30,
                "description": "Connect and read timeout; never longer than the node's timeout.",
            },
            "fail_on_status": {
                "title": "Fail on error status", "type": "boolean", "default": True,
                "description": "Fail the node on a non-2xx response (5xx, 408, 425, 429 retry).",
            },
            "follow_redirects": {
                "title": "Follow redirects", "type": "boolean", "default": False,
                "description": "Follow 3xx responses (each hop is checked like the URL).",
            },
            "max_response_bytes": {
                "title": "Max response bytes", "type": "integer", "minimum": 1,
                "maximum": 1024 * 1024 * 1024, "default": DEFAULT_MAX_RESPONSE_BYTES,
                "description": "Longer bodies are cut and the output says truncated: true.",
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config)
        if "json" in config and "body" in config:
            faults.insert(0, ("/body", "set either json or body, not both"))
        url = config.get("url")
        if isinstance(url, str) and config.get("connection") and url.startswith("/"):
            pass  # a path under the connection's URL
        elif isinstance(url, str) and "{{" not in url:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme not in ("http", "https"):
                faults.append(("/url", f"{url!r} is not an http:// or https:// URL"))
        return faults

    def run(self, ctx: NodeContext) -> dict[str, Any]:
        import httpx

        config = ctx.config
        method = str(config.get("method", "GET")).upper()
        url = str(config.get("url", ""))
        stored: dict[str, str] = {}
        if config.get("connection"):
            url, stored = self._connection(ctx, str(config["connection"]), url)
        shown = f"{method} {mask_url(url)}"
        if "json" in config and "body" in config:
            raise NodeExecutionError(f"{shown}: set either json or body, not both",
                                     retryable=False)
        allow_private = ctx.settings.allows_private_http()
        try:
            check_destination(url, allow_private)
        except httpx.InvalidURL as exc:
            raise NodeExecutionError(f"{shown}: invalid URL: {exc}", retryable=False) from None

        headers = {**stored,
                   **{str(k): str(v) for k, v in (config.get("headers") or {}).items()}}
        if not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = ctx.idempotency_key
        timeout_s = float(config.get("timeout_s", 30))
        timeout = ctx.remaining(timeout_s)
        limit = int(config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))
        content: dict[str, Any] = {}
        if "json" in config:
            content["json"] = config["json"]
        elif "body" in config:
            body = config["body"]
            content["content"] = body.encode() if isinstance(body, str) else body

        def guard(request: httpx.Request) -> None:  # runs for the first request and each hop
            check_destination(request.url, allow_private)

        started = time.monotonic()
        try:
            target = httpx.URL(url)
            pairs = _query_pairs(config.get("query") or {})
            if pairs:  # added to the URL's own query string, which httpx would replace
                target = target.copy_merge_params(tuple(pairs))
            # Guarded, the client connects only through the checked transport (environment
            # proxies are not used then: a proxy would connect wherever it is told).
            with httpx.Client(
                timeout=httpx.Timeout(timeout),
                verify=ssl_context(),
                follow_redirects=bool(config.get("follow_redirects", False)),
                event_hooks={"request": [guard]},
                transport=None if allow_private else checked_transport(),
            ) as client:
                with client.stream(method, target, headers=headers, **content) as response:
                    body, truncated = self._read(response, limit, started, timeout, shown)
        except NodeExecutionError:
            raise
        except httpx.TimeoutException:
            raise NodeExecutionError(f"{shown} timed out after {timeout:.3g} s",
                                     retryable=True) from None
        except httpx.InvalidURL as exc:
            raise NodeExecutionError(f"{shown}: invalid URL: {exc}", retryable=False) from None
        except httpx.TooManyRedirects as exc:
            raise NodeExecutionError(f"{shown}: {exc}", retryable=False) from None
        except (httpx.HTTPError, OSError) as exc:
            raise NodeExecutionError(
                f"{shown} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from None

        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        status = response.status_code
        text = body.decode(response.encoding or "utf-8", errors="replace")
        ctx.log("%s -> %d (%s ms, %d bytes%s)", shown, status, elapsed_ms, len(body),
                ", truncated" if truncated else "")
        if config.get("fail_on_status", True) and not 200 <= status < 300:
            raise NodeExecutionError(
                f"HTTP {status} from {shown}: {text[:200]}",
                retryable=status >= 500 or status in RETRYABLE_STATUS,
            )
        output: dict[str, Any] = {
            "status": status,
            "url": mask_url(str(response.url)),
            "headers": {k.lower(): v for k, v in response.headers.items()},
            "json": None,
            "text": text,
            "truncated": truncated,
            "elapsed_ms": elapsed_ms,
        }
        if not truncated and _is_json(response.headers.get("content-type", "")) and body.strip():
            try:
                output["json"] = json.loads(body)
            except ValueError as exc:
                ctx.log("the response says JSON but does not parse: %s", exc)
        return output

    @staticmethod
    def _connection(ctx: NodeContext, name: str, url: str) -> tuple[str, dict[str, str]]:
        """Return the URL under connection ``name`` and its headers; refuse a URL elsewhere
        (the credentials go only where the connection says)."""
        found = ctx.connections(name) if ctx.connections is not None else None
        if found is None:
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: unknown connection {name!r} (add it with `nexusflow "
                f"connections add {name} --kind http --url ...`)", retryable=False)
        if found.kind != "http":
            raise NodeExecutionError(f"node {ctx.node_id!r}: connection {name!r} is a "
                                     f"{found.kind} connection, not an http one", retryable=False)
        base = str(found.url)
        if url.startswith("/"):
            url = base.rstrip("/") + url
        root = base if base.endswith("/") else base + "/"
        if url != base and not url.startswith(root):
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: {mask_url(url)} is not under the URL of connection "
                f"{name!r} ({mask_url(base)}); its credentials go nowhere else", retryable=False)
        return url, dict(found.headers)

    @staticmethod
    def _read(response: Any, limit: int, started: float, timeout: float,
              shown: str) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(chunks)[:limit], True
            if time.monotonic() - started > timeout:
                raise NodeExecutionError(f"{shown} timed out after {timeout:.3g} s reading "
                                         "the response", retryable=True)
        return b"".join(chunks), False

"""The public webhook trigger: ``POST /nexusflow/hooks/{hook_id}``.

The only route that Jupyter does not authenticate, so it checks everything itself, cheapest
first: the caller's address rate, the hook, the hook's rate (429 with ``Retry-After``), the
content type (415, strict: the n8n "Ni8mare" lesson), the body size (413, before the body is
read), then the signature — Standard Webhooks HMAC-SHA256 over ``id.timestamp.body`` with a
5-minute tolerance and two secrets during a rotation, or a JWT whose algorithm is pinned per
hook and which must carry ``exp`` and ``aud`` — and finally the delivery id, which PostgreSQL
keeps unique so that a replay starts nothing. The payload becomes the run's inputs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs

from jupyter_server.auth.decorator import allow_unauthenticated
from tornado import web

from nexusflow_kernel.errors import NotFoundError

from .base import BadRequest, PublicHandler

ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
              "PS512", "ES256", "ES384", "ES512", "EdDSA")
"""JWT algorithms a hook may pin (never ``none``)."""

CONTENT_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")

FINAL = ("succeeded", "failed", "canceled")


class Unauthorized(BadRequest):
    """The request's signature or token does not verify."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=401)


class TooManyRequests(BadRequest):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limit reached: retry in {retry_after} s", status=429)


def check_jwt_key(algorithm: str, key: str | None) -> str | None:
    """Validate the verification key for a pinned algorithm (``None``: generate an HS key)."""
    if algorithm.startswith("HS"):
        if key is not None and len(key.encode()) < 32:
            raise BadRequest("an HS* JWT key must be at least 32 bytes", "/jwt_key")
        return key
    if not key:
        raise BadRequest(f"{algorithm} needs 'jwt_key': the signer's public key (PEM)",
                         "/jwt_key")
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(key.encode())
    except (ValueError, TypeError):
        raise BadRequest("'jwt_key' must be a PEM public key (never a private key)",
                         "/jwt_key") from None
    return key


def _hmac_key(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the Standard Webhooks signature header value (``v1,<base64>``)."""
    digest = hmac.new(_hmac_key(secret), f"{msg_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_hmac(secrets: list[str], headers: Any, body: bytes, tolerance_s: int) -> str:
    """Check the ``webhook-id/-timestamp/-signature`` headers; return the delivery id."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not msg_id or not stamp or not given:
        raise Unauthorized("webhook-id, webhook-timestamp and webhook-signature are required")
    if len(msg_id) > 256:
        raise Unauthorized("webhook-id is too long")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise Unauthorized("webhook-timestamp must be UNIX seconds") from None
    if abs(time.time() - timestamp) > tolerance_s:
        raise Unauthorized("webhook-timestamp is outside the accepted tolerance")
    candidates = [part for part in given.split(" ") if part.startswith("v1,")]
    ok = False
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body)
        for candidate in candidates:
            ok |= hmac.compare_digest(expected.encode(), candidate.encode())
    if not ok:
        raise Unauthorized("the signature does not match")
    return msg_id


def verify_jwt(hook: dict[str, Any], headers: Any, body: bytes) -> str:
    """Check the bearer JWT against the hook's pinned algorithm; return the delivery id."""
    import jwt

    auth = headers.get("Authorization") or ""
    if not auth.startswith("Bearer "):
        raise Unauthorized("an 'Authorization: Bearer <JWT>' header is required")
    token = auth[len("Bearer "):].strip()
    options = {"require": ["exp", "aud"] + (["iss"] if hook.get("jwt_issuer") else [])}
    claims = None
    for key in hook["secrets"]:
        try:
            claims = jwt.decode(token, key, algorithms=[hook["jwt_algorithm"]],
                                audience=hook["jwt_audience"], issuer=hook.get("jwt_issuer"),
                                options=options, leeway=5)
            break
        except jwt.PyJWTError:
            continue
    if claims is None:
        raise Unauthorized("the token does not verify (algorithm, signature, exp, aud, iss)")
    digest = claims.get("body_sha256")
    if digest is not None and not hmac.compare_digest(
            str(digest), hashlib.sha256(body).hexdigest()):
        raise Unauthorized("the body does not match the token's body_sha256")
    jti = claims.get("jti")
    return f"jti:{jti}" if jti else "jwt:" + hashlib.sha256(token.encode()).hexdigest()


def payload_inputs(content_type: str, body: bytes) -> dict[str, Any]:
    """Turn a webhook body into run inputs (a JSON object is used as is)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body must be UTF-8") from None
    if content_type == "application/json":
        try:
            value = json.loads(text) if text.strip() else {}
        except (ValueError, RecursionError):
            raise BadRequest("the body is not valid JSON") from None
        return value if isinstance(value, dict) else {"payload": value}
    if content_type == "application/x-www-form-urlencoded":
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(text).items()}
    return {"payload": text}


@web.stream_request_body
class WebhookReceiver(PublicHandler):
    """Receive one webhook delivery and start a run (or answer why not)."""

    hook: dict[str, Any] | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        self._overflow = False
        self._limit = self.nf.webhook_max_body_bytes
        hook_id = self.path_kwargs.get("hook_id") or (self.path_args or [""])[0]
        if self.request.method != "POST":
            return
        await self._admit(hook_id)

    async def _admit(self, hook_id: str) -> None:
        """Run the checks that need no body, so a refused request is not read at all."""
        nf = self.nf
        limiter = nf.rate_limiter()
        try:
            decision = await nf.run_sync(limiter.hit, f"ip:{self.request.remote_ip}",
                                         nf.webhook_ip_rate_limit, 60)
        except Exception as exc:  # Redis down
            decision = self._fail_mode(exc)
        if decision is not None and not decision.allowed:
            raise TooManyRequests(decision.retry_after_s)
        try:
            self.hook = await nf.run_sync(nf.store().webhook, hook_id)
        except NotFoundError:
            self.hook = None
        hook = self.hook
        if hook is None or not hook["enabled"]:
            sign("whsec_" + "A" * 44, "x", 0, b"")  # same work as a real check
            raise NotFoundError("no such webhook")
        try:
            decision = await nf.run_sync(limiter.hit, f"hook:{hook_id}", hook["rate_limit"],
                                         hook["rate_window_s"])
        except Exception as exc:
            decision = self._fail_mode(exc)
        if decision is not None and not decision.allowed:
            raise TooManyRequests(decision.retry_after_s)
        ctype = self.request.headers.get("Content-Type") or ""
        media, _, params = ctype.partition(";")
        media = media.strip().lower()
        charset = params.strip().lower()
        if media not in hook["content_types"] or (
                charset and charset.replace(" ", "") not in ("charset=utf-8", "charset=utf8")):
            raise BadRequest(f"content type {ctype!r} is not accepted by this webhook "
                             f"(accepted: {', '.join(hook['content_types'])})", status=415)
        self._media = media
        self._limit = hook["max_body_bytes"]
        length = self.request.headers.get("Content-Length")
        if length is not None:
            try:
                too_big = int(length) > self._limit
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if too_big:
                raise BadRequest(f"the body is over this webhook's limit of {self._limit} bytes",
                                 status=413)

    def _fail_mode(self, exc: Exception) -> Any:
        if self.nf.webhook_rate_limit_fail_open:
            self.log.warning("rate limit unavailable (%s): accepting (fail-open)", exc)
            return None
        from nexusflow_kernel.errors import BackendUnavailable

        raise BackendUnavailable("the rate limiter is unavailable; retry later") from None

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._limit:
            self._overflow = True
            self._chunks.clear()
        elif not self._overflow:
            self._chunks.append(chunk)

    @allow_unauthenticated
    async def post(self, hook_id: str) -> None:
        hook = self.hook
        assert hook is not None
        if self._overflow:
            raise BadRequest(f"the body is over this webhook's limit of {self._limit} bytes",
                             status=413)
        body = b"".join(self._chunks)
        if hook["auth"] == "jwt":
            delivery = verify_jwt(hook, self.request.headers, body)
        else:
            delivery = verify_hmac(hook["secrets"], self.request.headers, body,
                                   self.nf.webhook_tolerance_s)
        inputs = payload_inputs(self._media, body)
        nf = self.nf
        store = nf.store()
        new, _ = await nf.run_sync(store.claim_delivery, hook_id, delivery)
        if not new:
            raise BadRequest(f"delivery {delivery!r} was already received", status=409)
        try:
            run_id = await nf.run_sync(
                lambda: nf.engine().start_run(
                    workflow_id=hook["workflow_id"], version=hook["version"], inputs=inputs,
                    trigger="webhook", actor=f"webhook:{hook_id}",
                    dedupe_key=f"webhook:{hook_id}:{delivery}", env=hook.get("env")))
        except BaseException:
            await nf.run_sync(store.release_delivery, hook_id, delivery)
            raise
        await nf.run_sync(store.set_delivery_run, hook_id, delivery, run_id)
        nf.metrics().fired("webhook")
        wait_s = self._wait(hook)
        answer: dict[str, Any] = {"run_id": run_id, "status": "running"}
        if wait_s > 0:
            run = await self._wait_for(run_id, wait_s)
            if run["status"] in FINAL:
                answer = {"run_id": run_id, "status": run["status"], "run": run}
                self.set_status(200)
                self._reply(answer)
                return
        self.set_status(202)
        self._reply(answer)

    def _wait(self, hook: dict[str, Any]) -> float:
        raw = self.get_query_argument("wait", None)
        if raw is None:
            return float(hook["wait_s"] or 0)
        try:
            return max(0.0, min(float(raw), self.nf.webhook_max_wait_s))
        except ValueError:
            raise BadRequest("query parameter 'wait' must be seconds", "?wait") from None

    async def _wait_for(self, run_id: str, wait_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        nf = self.nf
        while True:
            run = await nf.run_sync(lambda: nf.engine().get_run(run_id))
            if run["status"] in FINAL or time.monotonic() >= deadline:
                return run
            await asyncio.sleep(0.2)

    def _reply(self, value: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, default=str))


__all__ = ["ALGORITHMS", "CONTENT_TYPES", "WebhookReceiver", "sign",
           "verify_hmac", "verify_jwt"]

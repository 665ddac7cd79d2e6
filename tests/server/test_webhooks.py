"""The public webhook: Standard Webhooks HMAC, JWT, content type, size, rate limit, replay."""

from __future__ import annotations

import json
import threading
import time
import uuid

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nexusflow_server.ratelimit import RateLimiter
from nexusflow_server.webhooks import sign
from nftest import flow, node
from tornado.httpclient import HTTPClientError


@pytest.fixture
def hook_post(jp_fetch):
    async def post(hook_id: str, body: bytes, headers: dict[str, str],
                   params: dict | None = None) -> tuple[int, dict, dict]:
        try:
            resp = await jp_fetch("nexusflow", "hooks", hook_id, method="POST", body=body,
                                  headers={"Authorization": "", **headers}, params=params)
            return resp.code, json.loads(resp.body), dict(resp.headers)
        except HTTPClientError as err:
            text = err.response.body if err.response else b"{}"
            return err.code, json.loads(text or b"{}"), dict(err.response.headers)

    return post


def signed(secret: str, body: bytes, *, msg_id: str | None = None, ts: int | None = None,
           content_type: str = "application/json") -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body), "Content-Type": content_type}


async def _workflow(api) -> str:
    code, wf = await api("POST", "workflows", {"graph": flow(
        node("A", expression="params['n'] * 2"), params={"n": {"default": 0}})})
    assert code == 201, wf
    return wf["workflow_id"]


async def test_hmac_webhook_checks(api, hook_post, engine, workers) -> None:
    wid = await _workflow(api)
    code, hook = await api("POST", f"workflows/{wid}/webhooks",
                           {"rate_limit": 100, "max_body_bytes": 2000})
    assert code == 201 and hook["secret"].startswith("whsec_")
    hid, secret = hook["hook_id"], hook["secret"]
    assert "secret" not in (await api("GET", f"workflows/{wid}/webhooks"))[1]["webhooks"][0]

    body = json.dumps({"n": 21}).encode()
    headers = signed(secret, body)
    code, answer, _ = await hook_post(hid, body, headers)
    assert code == 202, answer
    run = engine.get_run(answer["run_id"])
    assert run["trigger"] == "webhook" and run["inputs"]["n"] == 21

    code, _, _ = await hook_post(hid, body, headers)  # the same delivery again
    assert code == 409
    assert len(engine.list_runs(workflow_id=wid)) == 1
    bad = {**signed(secret, body), "webhook-signature": "v1,AAAA"}
    assert (await hook_post(hid, body, bad))[0] == 401
    h = signed(secret, body)
    assert (await hook_post(hid, body + b" ", h))[0] == 401  # one byte changed
    h = signed(secret, body)
    h["webhook-signature"] = h["webhook-signature"][:-4]
    assert (await hook_post(hid, body, h))[0] == 401  # truncated
    for skew in (-360, 360):
        assert (await hook_post(hid, body, signed(secret, body,
                                                  ts=int(time.time()) + skew)))[0] == 401
    assert (await hook_post(hid, body, {"Content-Type": "application/json"}))[0] == 401
    form = signed(secret, b"files=x", content_type="application/x-www-form-urlencoded")
    assert (await hook_post(hid, b"files=x", form))[0] == 415
    big = json.dumps({"x": "y" * 5000}).encode()
    assert (await hook_post(hid, big, signed(secret, big)))[0] == 413
    assert (await hook_post("wh_unknown", body, signed(secret, body)))[0] == 404

    # rotation: the previous secret stays valid until the next rotation
    code, rotated = await api("POST", f"webhooks/{hid}/rotate")
    assert code == 200 and rotated["secret"] != secret
    for key in (secret, rotated["secret"]):
        assert (await hook_post(hid, body, signed(key, body)))[0] == 202

    workers.start(1)
    code, done, _ = await hook_post(hid, body, signed(rotated["secret"], body),
                                    params={"wait": 20})
    assert code == 200 and done["status"] == "succeeded"
    assert done["run"]["nodes"]["A"]["output"] == 42
    assert (await api("DELETE", f"webhooks/{hid}"))[0] == 204
    assert (await hook_post(hid, body, signed(secret, body)))[0] == 404


async def test_rate_limit_answers_429_per_webhook(api, hook_post) -> None:
    wid = await _workflow(api)
    _, one = await api("POST", f"workflows/{wid}/webhooks", {"rate_limit": 3,
                                                               "rate_window_s": 60})
    _, two = await api("POST", f"workflows/{wid}/webhooks", {"rate_limit": 3})
    codes = []
    for _ in range(5):
        body = b"{}"
        code, _, headers = await hook_post(one["hook_id"], body, signed(one["secret"], body))
        codes.append(code)
    assert codes == [202, 202, 202, 429, 429]
    assert 1 <= int(headers["Retry-After"]) <= 60
    body = b"{}"
    assert (await hook_post(two["hook_id"], body, signed(two["secret"], body)))[0] == 202


def test_rate_limiter_is_atomic_under_a_burst(settings) -> None:
    limiter = RateLimiter(redis.Redis.from_url(settings.redis_url))
    allowed = []

    def hit() -> None:
        for _ in range(20):
            allowed.append(limiter.hit("burst", 25, 60).allowed)

    threads = [threading.Thread(target=hit) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 25 and len(allowed) == 200


async def test_jwt_webhook_pins_algorithm_exp_and_aud(api, hook_post, engine) -> None:
    wid = await _workflow(api)
    code, hook = await api("POST", f"workflows/{wid}/webhooks", {
        "auth": "jwt", "jwt_algorithm": "HS256", "jwt_audience": "nexusflow"})
    assert code == 201, hook
    key, hid = hook["secret"], hook["hook_id"]
    body = b'{"n": 2}'
    ctype = {"Content-Type": "application/json"}

    def bearer(token: str) -> dict[str, str]:
        return {**ctype, "Authorization": f"Bearer {token}"}

    good = jwt.encode({"aud": "nexusflow", "exp": time.time() + 60, "jti": "1"}, key, "HS256")
    code, answer, _ = await hook_post(hid, body, bearer(good))
    assert code == 202, answer
    assert (await hook_post(hid, body, bearer(good)))[0] == 409  # same jti
    for claims in ({"aud": "nexusflow"}, {"aud": "other", "exp": time.time() + 60},
                   {"aud": "nexusflow", "exp": time.time() - 60}):
        assert (await hook_post(hid, body, bearer(jwt.encode(claims, key, "HS256"))))[0] == 401
    none_token = jwt.encode({"aud": "nexusflow", "exp": time.time() + 60}, None, "none")
    assert (await hook_post(hid, body, bearer(none_token)))[0] == 401
    hs512 = jwt.encode({"aud": "nexusflow", "exp": time.time() + 60}, key, "HS512")
    assert (await hook_post(hid, body, bearer(hs512)))[0] == 401
    bound = jwt.encode({"aud": "nexusflow", "exp": time.time() + 60,
                        "body_sha256": "0" * 64}, key, "HS256")
    assert (await hook_post(hid, body, bearer(bound)))[0] == 401

    # RS256 hook: a token HMAC-signed with the public key (alg confusion) is refused
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    code, rs = await api("POST", f"workflows/{wid}/webhooks", {
        "auth": "jwt", "jwt_algorithm": "RS256", "jwt_audience": "nexusflow", "jwt_key": pem})
    assert code == 201 and "secret" not in rs
    claims = {"aud": "nexusflow", "exp": time.time() + 60}
    assert (await hook_post(rs["hook_id"], body, bearer(jwt.encode(claims, private,
                                                                   "RS256"))))[0] == 202
    import base64
    import hashlib
    import hmac as hmac_mod

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({**claims, "jti": "x"}).encode())
    mac = hmac_mod.new(pem.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{head}.{payload}.{b64(mac)}"
    assert (await hook_post(rs["hook_id"], body, bearer(forged)))[0] == 401
    code, err = await api("POST", f"workflows/{wid}/webhooks", {
        "auth": "jwt", "jwt_algorithm": "none", "jwt_audience": "x"})
    assert code == 400 and err["pointer"] == "/jwt_algorithm"

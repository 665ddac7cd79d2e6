"""Authentication, the authorizer on every handler, roles per workflow, execute, XSRF, OpenAPI."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from nexusflow_server.openapi import openapi_document
from nexusflow_server.routes import PUBLIC, ROUTES, WEBSOCKETS, methods
from nftest import flow, node
from tornado.httpclient import HTTPClientError


def registered_routes(serverapp) -> dict[str, type]:
    """Return ``{OpenAPI path: handler}`` of every Nexus-Flow handler the server registered."""
    base = serverapp.base_url.rstrip("/")
    out = {}
    for rule in serverapp.web_app.default_router.rules:
        for sub in getattr(rule.target, "rules", []):
            pattern = sub.matcher.regex.pattern.rstrip("$")
            if "/nexusflow/" not in pattern:
                continue
            path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
            out[path[len(base):] if path.startswith(base) else path] = sub.target
    return out


def sample(path: str) -> str:
    return re.sub(r"\{\w+\}", lambda m: str(uuid.uuid4()) if m.group(0) != "{name}" else "S",
                  path).lstrip("/")


def test_openapi_document_matches_the_registered_handlers(jp_serverapp) -> None:
    doc = openapi_document()
    routes = registered_routes(jp_serverapp)
    assert len(routes) == len(ROUTES)
    assert set(routes) == set(doc["paths"]), set(routes) ^ set(doc["paths"])
    for path, handler in routes.items():
        documented = set(doc["paths"][path])
        assert documented == set(methods(handler)), (path, documented, methods(handler))
        for op in doc["paths"][path].values():
            assert op["responses"] and op["summary"]
            for param in re.findall(r"\{(\w+)\}", path):
                assert param in [p["name"] for p in op.get("parameters", [])], (path, param)


async def test_openapi_is_served(api) -> None:
    code, doc = await api("GET", "openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.") and doc["paths"]


@pytest.mark.parametrize("user", [None, "nobody"])
async def test_every_handler_refuses_unauthenticated_and_unauthorized(
        jp_fetch, jp_ws_fetch, jp_serverapp, user) -> None:
    routes = registered_routes(jp_serverapp)
    checked = 0
    for path, handler in routes.items():
        if handler in PUBLIC:
            continue
        headers = {"Authorization": f"token user:{user}"} if user else {"Authorization": ""}
        for method in methods(handler):
            url = sample(path)
            fetch = jp_ws_fetch if handler in WEBSOCKETS else jp_fetch
            kwargs = {} if handler in WEBSOCKETS else {
                "method": method.upper(), "allow_nonstandard_methods": True,
                "body": b"{}" if method in ("post", "put") else None}
            with pytest.raises(HTTPClientError) as err:
                await fetch(*url.split("/"), headers=dict(headers), **kwargs)
            assert err.value.code in (401, 403), (method, path, err.value.code)
            checked += 1
    assert checked >= 35


@pytest.fixture
def nf_config(nf_config):
    return {**nf_config, "default_role": "none", "admin_users": ["root"]}


async def test_roles_per_workflow(api, jp_ws_fetch) -> None:
    code, wf = await api("POST", "workflows", {"graph": flow(node("A", expression="1"))},
                         user="alice")
    assert code == 201
    wid = wf["workflow_id"]
    code, _ = await api("GET", f"workflows/{wid}", user="bob")
    assert code == 404  # no role: its existence is hidden
    assert (await api("GET", "workflows", user="bob"))[1] == {"workflows": []}
    assert len((await api("GET", "workflows", user="root"))[1]["workflows"]) == 1
    assert (await api("PUT", f"workflows/{wid}/roles/bob", {"role": "owner"},
                      user="bob"))[0] == 404

    steps = [  # (role granted to bob, may run, may edit); only the owner may delete
        ("viewer", False, False), ("runner", True, False), ("editor", True, True)]
    for role, may_run, may_edit in steps:
        code, _ = await api("PUT", f"workflows/{wid}/roles/bob", {"role": role}, user="alice")
        assert code == 200
        code, got = await api("GET", f"workflows/{wid}", user="bob")
        assert code == 200
        code, run = await api("POST", "runs", {"workflow_id": wid}, user="bob")
        assert code == (201 if may_run else 403), (role, run)
        graph = flow(node("A", expression=f"'{role}'"))
        code, _ = await api("PUT", f"workflows/{wid}", {"graph": graph}, user="bob")
        assert code == (200 if may_edit else 403), role
        code, _ = await api("DELETE", f"workflows/{wid}", user="bob")
        assert code == 403
    code, roles = await api("GET", f"workflows/{wid}/roles", user="bob")
    assert {r["principal"]: r["role"] for r in roles["roles"]} == {"alice": "owner",
                                                                   "bob": "editor"}
    code, run = await api("POST", "runs", {"workflow_id": wid}, user="alice")
    assert (await api("GET", f"runs/{run['run_id']}", user="carol"))[0] == 404
    assert (await api("GET", "runs", user="carol"))[1] == {"runs": []}
    with pytest.raises(HTTPClientError) as err:
        await jp_ws_fetch("nexusflow", "api", "runs", run["run_id"], "events",
                          headers={"Authorization": "token user:carol"})
    assert err.value.code == 404
    assert (await api("DELETE", f"workflows/{wid}", user="alice"))[0] == 204


async def test_read_only_user_and_code_nodes_need_execute(api) -> None:
    assert (await api("GET", "workflows", user="reader"))[0] == 200
    code, _ = await api("POST", "workflows", {"graph": flow(node("A", expression="1"))},
                        user="reader")
    assert code == 403
    code_flow = flow(node("A", "code", language="python", source="print(1)"))
    code, wf = await api("POST", "workflows", {"graph": code_flow}, user="root")
    assert code == 201, wf
    await api("PUT", f"workflows/{wf['workflow_id']}/roles/noexec", {"role": "runner"},
              user="root")
    code, body = await api("POST", "runs", {"workflow_id": wf["workflow_id"]}, user="noexec")
    assert code == 403 and "execute" in body["message"]
    code, _ = await api("POST", "runs", {"workflow_id": wf["workflow_id"]}, user="root")
    assert code == 201


async def test_cookie_posts_need_xsrf(api) -> None:
    cookie = {"Cookie": "nf-test-user=alice", "Authorization": ""}
    code, _ = await api("GET", "workflows", headers=cookie)
    assert code == 200
    body = {"graph": flow(node("A", expression="1"))}
    code, err = await api("POST", "workflows", body, headers=cookie)
    assert code == 403 and "_xsrf" in json.dumps(err)
    token = "2|abcdef01|" + "a" * 32 + "|1700000000"
    with_xsrf = {"Cookie": f"nf-test-user=alice; _xsrf={token}", "X-XSRFToken": token,
                 "Authorization": ""}
    code, _ = await api("POST", "workflows", body, headers=with_xsrf)
    assert code == 201

"""Issue #14 item 2: connections over REST, with roles; a runner never reads a password.

Administrators and group members store connections; every route answers metadata only (the
URL without its password); a user who may only run a flow that uses a connection runs it, and
finds the password in no answer of any route, nor in what PostgreSQL keeps of the run.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from nftest import flow, node
from traitlets.config import Config

from tests.server.conftest import hub_users_config

PASSWORD = "Api-Conn-Pw-4411"


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return hub_users_config(nf_config)


@pytest.fixture
def reader(database_url: str):
    role, table = f"nf_api_{uuid.uuid4().hex[:8]}", f"api_items_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"INSERT INTO {table} VALUES (1), (2), (3)")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"GRANT SELECT ON {table} TO {role}")
    parts = urlsplit(database_url)
    try:
        yield table, urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@')[-1]}"))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


async def test_connections_rest_and_roles(api) -> None:
    put = {
        "kind": "postgres",
        "url": "postgresql://app@db.example/sales",
        "password": PASSWORD,
        "groups": ["finance"],
    }
    code, row = await api(
        "PUT", "connections/sales", put, user="alice", headers={"X-Test-Groups": "finance"}
    )
    assert code == 200, row
    assert row["display"] == "postgresql://app:***@db.example/sales" and PASSWORD not in str(row)
    # outsiders neither see nor change a team's connection
    code, body = await api("GET", "connections", user="bob", headers={"X-Test-Groups": "ops"})
    assert code == 200 and body["connections"] == []
    for method, path, payload in (
        ("PUT", "connections/sales", put),
        ("DELETE", "connections/sales", None),
        ("POST", "connections/sales/test", None),
        ("GET", "connections/sales", None),
    ):
        code, err = await api(method, path, payload, user="bob", headers={"X-Test-Groups": "ops"})
        assert code == 403, (method, path, err)
    # only an administrator marks a connection trusted, or writes an environment's own
    code, err = await api(
        "PUT",
        "connections/sales",
        {**put, "trusted": True},
        user="alice",
        headers={"X-Test-Groups": "finance"},
    )
    assert code == 403 and "administrator" in err["message"]
    code, err = await api("PUT", "connections/sales", put, user="root", params={"env": "prod"})
    assert code == 404 and "unknown environment 'prod'" in err["message"], err
    code, _ = await api("POST", "envs", {"name": "prod"}, user="root")
    assert code == 201
    code, err = await api(
        "PUT",
        "connections/sales",
        put,
        user="alice",
        headers={"X-Test-Groups": "finance"},
        params={"env": "prod"},
    )
    assert code == 403 and "deployer" in err["message"], err
    code, row = await api(
        "PUT", "connections/sales", {**put, "trusted": True}, user="root", params={"env": "prod"}
    )
    assert code == 200 and row["env"] == "prod" and row["trusted"] is True
    # bad input names the field
    code, err = await api(
        "PUT", "connections/x", {"kind": "postgres", "url": "ftp://h/"}, user="root"
    )
    assert code == 400 and err["pointer"] == "/url", err
    code, err = await api(
        "PUT", "connections/x", {"url": "postgresql://h/db"}, user="root", params={"env": "Bad Env"}
    )
    assert code == 400 and err["pointer"] == "?env", err
    code, err = await api("GET", "connections/none_here", user="root")
    assert code == 404
    # the test route answers without the password, even when the connection fails
    code, result = await api(
        "POST", "connections/sales/test", user="alice", headers={"X-Test-Groups": "finance"}
    )
    assert code == 200 and result["ok"] is False and PASSWORD not in json.dumps(result)
    code, _ = await api(
        "DELETE", "connections/sales", user="alice", headers={"X-Test-Groups": "finance"}
    )
    assert code == 204


async def test_a_runner_runs_a_flow_with_a_connection_and_reads_its_password_nowhere(
    api, workers, reader, database_url
) -> None:
    import asyncio

    table, url = reader
    code, row = await api(
        "PUT",
        "connections/warehouse",
        {"kind": "postgres", "url": url, "password": PASSWORD},
        user="root",
    )
    assert code == 200, row
    code, result = await api("POST", "connections/warehouse/test", user="root")
    assert code == 200 and result["ok"] is True, result
    graph = flow(
        node("q", "db_query", connection="warehouse", sql=f"SELECT count(*) AS n FROM {table}"),
        name="uses-warehouse",
    )
    code, wf = await api("POST", "workflows", {"graph": graph}, user="root")
    assert code == 201, wf
    wid = wf["workflow_id"]
    code, _ = await api("PUT", f"workflows/{wid}/roles/runner1", {"role": "runner"}, user="root")
    assert code in (200, 204)
    workers.start(1)
    code, started = await api("POST", "runs", {"workflow_id": wid}, user="runner1")
    assert code == 201, started
    run_id = started["run_id"]
    for _ in range(240):
        code, run = await api("GET", f"runs/{run_id}", user="runner1")
        if run["status"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.25)
    assert run["status"] == "succeeded", run
    assert run["nodes"]["q"]["output"]["rows"] == [{"n": 3}]
    seen = [run]
    for method, path in (
        ("GET", "connections"),
        ("GET", "connections/warehouse"),
        ("GET", f"runs/{run_id}/nodes/q/logs"),
        ("GET", f"runs/{run_id}/nodes/q/output"),
        ("GET", f"runs/{run_id}/event-log"),
        ("GET", f"runs/{run_id}/nodes/q/context"),
        ("GET", f"workflows/{wid}"),
        ("GET", "secrets"),
        ("GET", "audit"),
        ("POST", "connections/warehouse/test"),
        ("PUT", "connections/warehouse"),
        ("DELETE", "connections/warehouse"),
    ):
        code, body = await api(
            method, path, {"url": "postgresql://h/db"} if method == "PUT" else None, user="runner1"
        )
        seen.append((path, code, body))
    text = json.dumps(seen, default=str)
    assert PASSWORD not in text
    codes = {path: code for path, code, _ in seen[1:]}
    assert codes["connections"] == 200
    assert codes["connections/warehouse/test"] == 403  # an unscoped one is the admins'
    assert [c for p, c, _ in seen[1:] if p == "connections/warehouse"] == [200, 403, 403]
    with psycopg.connect(database_url) as conn:
        kept = str(
            conn.execute(
                "SELECT to_jsonb(n) FROM node_runs n WHERE execution_id = %s", (run_id,)
            ).fetchall()
        ) + str(
            conn.execute(
                "SELECT to_jsonb(l) FROM node_logs l WHERE execution_id = %s", (run_id,)
            ).fetchall()
        )
    assert PASSWORD not in kept
    code, body = await api("GET", "connections/warehouse", user="root")
    assert code == 200 and body["display"].startswith("postgresql://")

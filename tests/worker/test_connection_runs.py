"""Issue #14 item 2: a flow's ``connection: NAME`` resolves a stored connection in the worker.

End to end on the real test PostgreSQL: a least-privilege role with a password, stored as a
connection; a ``db_query`` node reads through it; the password is nowhere in the run's record;
a group-scoped connection is refused to a run of a user outside the groups; the environment
variable ``NEXUSFLOW_CONNECTION_<NAME>`` stays the fallback; an ``http`` node sends a stored
connection's headers only under its URL.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.connections import ConnectionStore
from nexusflow_kernel.engine import Engine

PASSWORD = "Conn-Pw-8d1f7c"


@pytest.fixture(scope="module")
def reader(database_url: str) -> Iterator[tuple[str, str]]:
    """A least-privilege role with a password and a table it may read: (role, its URL)."""
    role, table = f"nf_conn_{uuid.uuid4().hex[:8]}", f"conn_items_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int, name text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"GRANT SELECT ON {table} TO {role}")
    parts = urlsplit(database_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    try:
        yield table, urlunsplit(parts._replace(netloc=f"{role}@{host}"))
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _record(database_url: str, run_id: str) -> str:
    """Everything PostgreSQL keeps of a run, as text."""
    with psycopg.connect(database_url) as conn:
        parts = [
            str(
                conn.execute(
                    f"SELECT to_jsonb(t) FROM {table} t WHERE {key} = %s", (run_id,)
                ).fetchall()
            )
            for table, key in (
                ("executions", "id"),
                ("node_runs", "execution_id"),
                ("node_logs", "execution_id"),
            )
        ]
    return "\n".join(parts)


def test_db_query_reads_through_a_stored_connection_and_the_password_stays_out(
    settings, workers, reader, database_url
) -> None:
    table, url = reader
    name = f"wh_{uuid.uuid4().hex[:6]}"
    ConnectionStore(settings).add(name, kind="postgres", url=url, password=PASSWORD)
    workers.start(1)
    engine = Engine(settings)
    doc = flow(
        node("q", "db_query", connection=name, sql=f"SELECT id, name FROM {table} ORDER BY id"),
        node("bad", "db_query", connection=name, sql=f"DELETE FROM {table}"),
        node("echo", "transform", expression="inputs['q']"),
        edges=[("q", "echo")],
    )
    run = wait_run(engine, engine.start_run(doc))
    assert run["nodes"]["q"]["state"] == "succeeded", run
    assert run["nodes"]["q"]["output"]["rows"] == [
        {"id": 1, "name": "one"},
        {"id": 2, "name": "two"},
    ]
    # a read-only node cannot write, and says so without the password
    assert run["nodes"]["bad"]["state"] == "failed"
    assert "read_only" in run["nodes"]["bad"]["error"]
    logs = engine.node_attempts(run["run_id"], "q")
    assert "***" in json.dumps(logs)  # the URL in the log lost its password
    everything = json.dumps(run) + json.dumps(logs) + _record(database_url, run["run_id"])
    assert PASSWORD not in everything


def test_a_group_scoped_connection_is_refused_to_a_run_of_an_outsider(
    settings, workers, reader
) -> None:
    table, url = reader
    name = f"fin_{uuid.uuid4().hex[:6]}"
    ConnectionStore(settings).add(
        name, kind="postgres", url=url, password=PASSWORD, groups=["finance"]
    )
    workers.start(1)
    engine = Engine(settings)
    doc = flow(node("q", "db_query", connection=name, sql=f"SELECT count(*) FROM {table}"))
    run = wait_run(engine, engine.start_run(doc, actor="mallory"))
    assert run["status"] == "failed"
    assert "scoped to group(s) finance" in run["nodes"]["q"]["error"]
    assert "mallory" in run["nodes"]["q"]["error"]


def test_the_environment_variable_stays_the_fallback(settings, workers, reader) -> None:
    table, url = reader
    name = f"envwh_{uuid.uuid4().hex[:6]}"
    settings = replace(settings, connections={name: url.replace("@", f":{PASSWORD}@", 1)})
    workers.settings = settings
    workers.start(1)
    engine = Engine(settings)
    run = wait_run(
        engine,
        engine.start_run(
            flow(node("q", "db_query", connection=name, sql=f"SELECT count(*) AS n FROM {table}"))
        ),
    )
    assert run["nodes"]["q"]["output"]["rows"] == [{"n": 2}], run
    # an unknown name says how to add one
    run = wait_run(
        engine,
        engine.start_run(flow(node("q", "db_query", connection="missing_one", sql="SELECT 1"))),
    )
    assert "nexusflow connections add missing_one" in run["nodes"]["q"]["error"]


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(
            {"path": self.path, "auth_seen": self.headers.get("Authorization") is not None}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_node_sends_a_stored_connections_headers_only_under_its_url(
    settings, workers
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/api"
        name = f"crm_{uuid.uuid4().hex[:6]}"
        token = "Bearer crm-token-5521"
        ConnectionStore(settings).add(name, kind="http", url=base, headers={"Authorization": token})
        workers.start(1)
        engine = Engine(settings)
        doc = flow(
            node("get", "http", connection=name, url="/items?x=1"),
            node(
                "away",
                "http",
                connection=name,
                url=f"http://127.0.0.1:{server.server_port}/elsewhere",
            ),
        )
        run = wait_run(engine, engine.start_run(doc))
        got = run["nodes"]["get"]
        assert got["state"] == "succeeded", got
        assert got["output"]["json"] == {"path": "/api/items?x=1", "auth_seen": True}
        assert run["nodes"]["away"]["state"] == "failed"
        assert "is not under the URL of connection" in run["nodes"]["away"]["error"]
        logs = engine.node_attempts(run["run_id"], "get")
        assert "crm-token-5521" not in json.dumps(run) + json.dumps(logs)
    finally:
        server.shutdown()

"""Issue #14 item 2 in the browser: the canvas toolbar's Connections panel adds a PostgreSQL
connection (its password write-only: never shown back), lists it and tests it against the test
PostgreSQL; a connection the server refuses is shown with its message."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from nexusflow_kernel.model.document import dumps_canonical

FLOW = {
    "schema": 1,
    "name": "conn",
    "nodes": [
        {
            "id": "a",
            "type": "transform",
            "position": {"x": 0, "y": 0},
            "config": {"expression": "1"},
        }
    ],
    "edges": [],
}


def test_the_connections_panel_adds_and_tests_a_postgres_connection(
    backend_lab, database_url
) -> None:
    role, password = f"nf_ui_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    name = f"wh_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    (backend_lab.root / "conn.nxflow").write_text(dumps_canonical(FLOW))
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rsplit('@')[-1]}"))
    try:
        result = backend_lab.run_script(
            "add",
            script="connections.mjs",
            FLOW_FILE="conn.nxflow",
            CONN_NAME=name,
            CONN_URL=url,
            CONN_PASSWORD=password,
            timeout=180,
        )
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
            )
            conn.execute(f"DROP ROLE IF EXISTS {role}")
    assert result["errors"] == []
    listed = result["listed"]
    assert listed["kind"] == "postgres" and listed["env"] == "", listed
    assert name in listed["text"] and "every env" in listed["text"] and role in listed["text"]
    assert result["tested"]["ok"] == "true", result["tested"]
    assert result["passwordShown"] is False
    assert "must be http://host" in result["refused"], result
    assert result["stored"] == [name]  # the refused one was not stored

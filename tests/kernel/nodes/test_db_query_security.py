"""Issue #13, finding 3, and reliability-security S11: the Database Query node cannot be abused.

* Templates never reach SQL text: the compiler refuses ``{{ }}`` in ``sql`` (pointing to
  ``params``), the worker never renders ``sql``, and the node refuses a stored one.
* Values are bound: a webhook's crafted value selects nothing more; stacked statements fail;
  ``statement_timeout`` stops ``pg_sleep``.
* A least-privilege role on a read-only node cannot write, run DDL, run programs or read server
  files; a connection that could bypass that (superuser, ``pg_execute_server_program``,
  ``pg_read_server_files``, ``pg_write_server_files``, BYPASSRLS) is refused before any
  statement runs, unless the operator sets ``NEXUSFLOW_CONNECTION_<NAME>_TRUSTED=1``.

Everything runs on the real PostgreSQL test database: a role made here for the allowed cases,
the superuser ``root`` of the test server for the refused ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from nexusflow_kernel.errors import NodeConfigError, NodeExecutionError
from nexusflow_kernel.expressions import render_templates
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import read_flow
from nexusflow_kernel.nodes import NodeContext, get_node_type
from nexusflow_kernel.settings import Settings


def _as(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture(scope="module")
def dbs(database_url: str) -> Iterator[dict[str, str]]:
    """Connection URLs: ``reader`` (least privilege: SELECT on one table), ``program`` (a
    plain role in pg_execute_server_program), ``root`` (the superuser)."""
    reader, program = f"nf_reader_{uuid.uuid4().hex[:8]}", f"nf_prog_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS s11_users")
        conn.execute("CREATE TABLE s11_users (id int PRIMARY KEY, name text, secret text)")
        conn.execute("INSERT INTO s11_users VALUES (1, 'alice', 'a-pw'), (2, 'bob', 'b-pw')")
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute(f"CREATE ROLE {program} LOGIN IN ROLE pg_execute_server_program")
        for role in (reader, program):
            conn.execute(f"GRANT SELECT ON s11_users TO {role}")
    root_user = urlsplit(database_url).username or "root"
    try:
        yield {"reader": _as(database_url, reader), "program": _as(database_url, program),
               "root": _as(database_url, root_user)}
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE usename IN (%s, %s)", (reader, program))
            conn.execute("DROP TABLE IF EXISTS s11_users")
            for role in (reader, program):
                conn.execute(f"DROP OWNED BY {role}")
                conn.execute(f"DROP ROLE IF EXISTS {role}")


def run(config: dict[str, Any], url: str, trusted: bool = False, **names: Any) -> Any:
    """Run a db_query node as the worker does: templates rendered (sql exempt), then run()."""
    node_type = get_node_type("db_query")
    assert node_type is not None
    rendered = render_templates({"connection": "db", **config},
                                {"inputs": {}, "params": names.get("params", {})},
                                exempt=node_type.template_exempt, where="node 'q' /config")
    ctx = NodeContext(run_id="run-1", node_id="q", attempt=1, config=rendered, inputs={},
                      params=names.get("params", {}),
                      settings=Settings(connections={"db": url},
                                        trusted_connections=frozenset({"db"} if trusted else ())))
    return node_type.run(ctx)


def _flow(config: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "name": "t", "edges": [], "params": {"n": {"type": "string"}},
            "nodes": [{"id": "q", "type": "db_query", "config": {"connection": "db", **config}}]}


INJECTED = "SELECT id, name FROM s11_users WHERE name = '{{ params['n'] }}'"
CRAFTED = "nobody' OR '1'='1"


def test_a_template_in_sql_is_refused_at_compile_time_pointing_to_params() -> None:
    with pytest.raises(NodeConfigError) as info:
        compile_flow(read_flow(_flow({"sql": INJECTED})))
    assert info.value.pointer == "/nodes/0/config/sql"
    assert "params" in str(info.value) and "%(" in str(info.value), str(info.value)
    # The same value as a bound parameter compiles.
    compile_flow(read_flow(_flow({"sql": "SELECT id FROM s11_users WHERE name = %(n)s",
                        "params": {"n": "{{ params['n'] }}"}})))
    # Braces that are no template (a JSON literal) are fine.
    compile_flow(read_flow(_flow({"sql": """SELECT '{"a": {"b": 1}}'::jsonb"""})))


def test_a_stored_template_in_sql_is_never_rendered_into_the_statement(dbs) -> None:
    # A version saved before the compiler refused it: the worker leaves sql alone (exempt)
    # and the node refuses it; the crafted value never becomes SQL.
    with pytest.raises(NodeExecutionError, match="template") as info:
        run({"sql": INJECTED}, dbs["reader"], params={"n": CRAFTED})
    assert not info.value.retryable


def test_values_are_bound_not_executed(dbs) -> None:
    sql = "SELECT id, name FROM s11_users WHERE name = %(n)s"
    assert run({"sql": sql, "params": {"n": "{{ params['n'] }}"}}, dbs["reader"],
               params={"n": CRAFTED})["rows"] == []
    assert run({"sql": sql, "params": {"n": "'; DROP TABLE s11_users; --"}},
               dbs["reader"])["rows"] == []
    with pytest.raises(NodeExecutionError, match="22P02"):  # '1 OR 1=1' is no integer
        run({"sql": "SELECT name FROM s11_users WHERE id = %s", "params": ["1 OR 1=1"]},
            dbs["reader"])
    assert run({"sql": "SELECT count(*) AS n FROM s11_users"}, dbs["reader"])["rows"] == [
        {"n": 2}]


@pytest.mark.parametrize("sql", ["SELECT 1; DROP TABLE s11_users",
                                 "SELECT name FROM s11_users; SELECT secret FROM s11_users"])
def test_stacked_statements_are_refused(dbs, sql: str) -> None:
    with pytest.raises(NodeExecutionError, match="42601"):
        run({"sql": sql, "read_only": False}, dbs["reader"])


def test_statement_timeout_stops_pg_sleep(dbs) -> None:
    started = time.monotonic()
    with pytest.raises(NodeExecutionError, match="57014"):
        run({"sql": "SELECT pg_sleep(60)", "timeout_s": 0.3}, dbs["reader"])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("sql", "state"), [
    ("COPY (SELECT 1) TO PROGRAM 'id'", "42501"),
    ("SELECT pg_read_file('/etc/passwd')", "42501"),
    ("CREATE TABLE s11_evil (x int)", "25006"),
    ("DROP TABLE s11_users", "25006"),
    ("UPDATE s11_users SET secret = 'x'", "25006"),
])
def test_a_least_privilege_read_only_connection_holds(dbs, sql: str, state: str) -> None:
    with pytest.raises(NodeExecutionError, match=state):
        run({"sql": sql}, dbs["reader"])


def large_objects(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]


def test_a_read_only_node_never_commits(dbs, database_url) -> None:
    # PostgreSQL lets a READ ONLY transaction create a large object; the node rolls back.
    before = large_objects(database_url)
    out = run({"sql": "SELECT lo_from_bytea(0, 'smuggled'::bytea) AS oid"}, dbs["reader"])
    assert out["rowcount"] == 1
    assert large_objects(database_url) == before


@pytest.mark.parametrize(("who", "reason"), [("root", "superuser"),
                                             ("program", "pg_execute_server_program")])
@pytest.mark.parametrize("sql", ["COPY (SELECT 1) TO PROGRAM 'id'",
                                 "SELECT pg_read_file('/etc/passwd')",
                                 "SELECT lo_from_bytea(0, 'x'::bytea)"])
def test_a_connection_that_can_bypass_read_only_is_refused(dbs, database_url, who: str,
                                                           reason: str, sql: str) -> None:
    before = large_objects(database_url)
    with pytest.raises(NodeExecutionError, match=reason) as info:
        run({"sql": sql, "read_only": False}, dbs[who])
    assert "NEXUSFLOW_CONNECTION_DB_TRUSTED=1" in str(info.value) and not info.value.retryable
    assert large_objects(database_url) == before  # the statement never ran


def test_a_connection_marked_trusted_may_be_privileged(dbs) -> None:
    out = run({"sql": "SELECT current_setting('is_superuser') AS su"}, dbs["root"], trusted=True)
    assert out["rows"] == [{"su": "on"}]
    with pytest.raises(NodeExecutionError, match="25006"):  # read-only still applies
        run({"sql": "CREATE TABLE s11_evil (x int)"}, dbs["root"], trusted=True)


def test_trusted_is_a_variable_of_its_own(monkeypatch) -> None:
    monkeypatch.setenv("NEXUSFLOW_CONNECTION_WAREHOUSE", "postgresql://etl@db/w")
    monkeypatch.setenv("NEXUSFLOW_CONNECTION_WAREHOUSE_TRUSTED", "1")
    monkeypatch.setenv("NEXUSFLOW_CONNECTION_OTHER", "postgresql://x@db/o")
    monkeypatch.setenv("NEXUSFLOW_CONNECTION_OTHER_TRUSTED", "0")
    settings = Settings.from_env()
    assert settings.connections == {"warehouse": "postgresql://etl@db/w",
                                    "other": "postgresql://x@db/o"}
    assert settings.trusted_connections == {"warehouse"}
    monkeypatch.setenv("NEXUSFLOW_CONNECTION_OTHER_TRUSTED", "perhaps")
    with pytest.raises(ValueError, match="NEXUSFLOW_CONNECTION_OTHER_TRUSTED"):
        Settings.from_env()


def test_templates_never_become_code_either() -> None:
    """The siblings of the SQL text: a code node's and a @task's source are never rendered."""
    for type_name in ("python_task", "code"):
        node_type = get_node_type(type_name)
        assert node_type is not None and "source" in node_type.template_exempt, type_name
    task = get_node_type("python_task")
    assert task is not None
    source = "def f(params):\n    return f\"{{ params['x'] }} {params['x']!r}\"\n"
    names = {"inputs": {}, "params": {"x": "__import__('os').system('id')"}}
    config = render_templates({"function": "f", "source": source}, names,
                              exempt=task.template_exempt)
    assert config["source"] == source
    ctx = NodeContext(run_id="run-1", node_id="t", attempt=1, config=config, inputs={},
                      params=names["params"], settings=Settings(code_isolation="process"))
    assert task.run(ctx) == "{ params['x'] } \"__import__('os').system('id')\""

"""The Database Query node: one parameterised SQL statement on a named PostgreSQL connection.

Connections are stored ones (``nexusflow connections add``, encrypted, resolved by the worker in
the run's environment: ``connections.py``), or else, for single-user setups,
``NEXUSFLOW_CONNECTION_<NAME>`` on the workers (``Settings.connections``). Values always travel
as bind parameters, and the statement is sent with the extended query protocol (psycopg pipeline
mode), which the server refuses for more than one statement, so ``'; DROP TABLE ...`` can
neither be injected nor stacked. ``{{ }}`` templates are refused in ``sql`` (they would write
values into the SQL text) and never rendered there.

A read-only node runs in a READ ONLY transaction that is rolled back, never committed (large
objects, which PostgreSQL lets a read-only transaction create, go with it). A connection whose
role could step around that — a superuser, a member of ``pg_execute_server_program``,
``pg_read_server_files`` or ``pg_write_server_files`` (programs and server files, which COPY
reaches even read-only), or a role with BYPASSRLS — is refused before any statement runs,
unless the operator marks it trusted with ``NEXUSFLOW_CONNECTION_<NAME>_TRUSTED=1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import NodeExecutionError
from ..expressions import json_safe, template_errors
from ..settings import mask_url
from .base import NodeContext, NodeType

# SQLSTATEs worth another attempt: connection trouble, serialization failures, deadlocks,
# a server shutting down or out of resources. Everything else is the statement's fault.
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "40001", "40P01", "53", "57P01", "57P02", "57P03")


PRIVILEGED_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
"""Built-in roles that reach the server's programs and files (COPY does even read-only)."""

_PRIVILEGES_SQL = """
SELECT u.name,
       EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolsuper
               AND pg_has_role(u.name, r.oid, 'MEMBER')) AS superuser,
       EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolbypassrls
               AND pg_has_role(u.name, r.oid, 'MEMBER')) AS bypassrls,
       ARRAY(SELECT r.rolname::text FROM pg_roles r WHERE r.rolname = ANY(%s)
             AND pg_has_role(u.name, r.oid, 'MEMBER') ORDER BY r.rolname) AS roles
FROM (SELECT DISTINCT unnest(ARRAY[session_user, current_user]::text[]) AS name) u
"""


def _template_in_sql(sql: Any) -> bool:
    return isinstance(sql, str) and "{{" in sql


TEMPLATE_IN_SQL = (
    "a template ({{ }}) in sql would write its value into the SQL text (SQL injection): write "
    "a placeholder (%(name)s or %s) and give the value, template and all, in this node's params "
    "field (config/params). Braces that are SQL, as in the 2-D array literal '{{1,2},{3,4}}', "
    "go in params too (or write ARRAY[[1,2],[3,4]])")


class DbQueryNode(NodeType):
    """Run one SQL statement and return its rows."""

    name = "db_query"
    title = "Database Query"
    description = "Run one parameterised SQL statement on a configured PostgreSQL connection."
    category = "core"
    icon = "🛢"
    effectful = True
    io_bound = True
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Database Query",
        "description": "One SQL statement; values go in params, never into the SQL text.",
        "type": "object",
        "required": ["connection", "sql"],
        "additionalProperties": False,
        "properties": {
            "connection": {
                "title": "Connection", "type": "string", "minLength": 1, "maxLength": 100,
                "pattern": "^[A-Za-z0-9_]+$",
                "description": "Name of a connection set with NEXUSFLOW_CONNECTION_<NAME>.",
            },
            "sql": {
                "title": "SQL", "type": "string", "minLength": 1, "maxLength": 100000,
                "x-widget": "code",
                "description": "One statement with %s or %(name)s placeholders.",
            },
            "params": {
                "title": "Parameters",
                "description": "Values for the placeholders: a list for %s, an object for "
                               "%(name)s. Strings may hold {{ templates }}.",
                "type": ["array", "object", "null"],
                "default": None,
            },
            "read_only": {
                "title": "Read only", "type": "boolean", "default": True,
                "description": "Run in a READ ONLY transaction; turn off to write.",
            },
            "timeout_s": {
                "title": "Statement timeout (s)", "type": "number", "exclusiveMinimum": 0,
                "maximum": 86400, "default": 30,
                "description": "PostgreSQL statement_timeout for this statement.",
            },
            "max_rows": {
                "title": "Max rows", "type": "integer", "minimum": 1, "maximum": 10000000,
                "default": 10000,
                "description": "Rows kept in the output; more are cut (truncated: true).",
            },
        },
    }

    template_exempt: ClassVar[tuple[str, ...]] = ("sql",)
    """``sql`` is never rendered: values reach the statement only as bind parameters."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        faults = template_errors(config, exempt=self.template_exempt)
        if _template_in_sql(config.get("sql")):
            faults.insert(0, ("/sql", TEMPLATE_IN_SQL))
        return faults

    def _url(self, ctx: NodeContext, name: str) -> tuple[str, bool]:
        """Return the connection's URL and whether it is trusted: the stored connection of the
        run's environment, else the one of every environment, else the worker's variable."""
        stored = ctx.connections(name) if ctx.connections is not None else None
        if stored is not None:
            if stored.kind != "postgres":
                raise NodeExecutionError(
                    f"node {ctx.node_id!r}: connection {name!r} is an {stored.kind} connection, "
                    "not a postgres one", retryable=False)
            return stored.url, bool(stored.trusted)
        connections = ctx.settings.connections or {}
        url = connections.get(name.lower())
        if url:
            return url, name.lower() in ctx.settings.trusted_connections
        known = ", ".join(sorted(connections)) or "none"
        raise NodeExecutionError(
            f"node {ctx.node_id!r}: unknown database connection {name!r} (configured: "
            f"{known}; none stored" + (" for this environment" if ctx.connections is not None
                                       else "")
            + f"): add it with `nexusflow connections add {name} --kind postgres --url ...` "
            f"(or NEXUSFLOW_CONNECTION_{name.upper()} on the workers)",
            retryable=False,
        )

    def run(self, ctx: NodeContext) -> dict[str, Any]:
        import psycopg

        config = ctx.config
        name = str(config["connection"])
        if _template_in_sql(config["sql"]):  # a version saved before the compiler refused it
            raise NodeExecutionError(f"node {ctx.node_id!r}: {TEMPLATE_IN_SQL}", retryable=False)
        url, trusted = self._url(ctx, name)
        sql = str(config["sql"])
        params = config.get("params")
        read_only = bool(config.get("read_only", True))
        timeout_s = ctx.remaining(float(config.get("timeout_s", 30)))
        max_rows = int(config.get("max_rows", 10000))
        place = f"connection {name!r} ({mask_url(url)})"

        try:
            conn = psycopg.connect(url, connect_timeout=max(1, int(min(timeout_s, 30))),
                                   application_name=f"nexusflow {ctx.run_id}:{ctx.node_id}")
        except psycopg.Error as exc:
            raise NodeExecutionError(
                f"cannot connect to {place}: {' '.join(str(exc).split())}", retryable=True
            ) from None
        try:
            if not trusted:
                self._refuse_privileged(conn, name)
            conn.read_only = read_only
            # A read-only node's transaction is rolled back: nothing it did can stay.
            with conn.transaction(force_rollback=read_only):
                with conn.pipeline() as pipeline:
                    conn.execute("SELECT set_config('statement_timeout', %s, true)",
                                 [str(max(1, int(timeout_s * 1000)))])
                    cur = conn.cursor()
                    cur.execute(sql, params if params else None)
                    pipeline.sync()
                columns = [c.name for c in cur.description or ()]
                rows = cur.fetchmany(max_rows + 1) if cur.description is not None else []
                rowcount = cur.rowcount
        except psycopg.Error as exc:
            raise self._sql_error(exc, place, read_only) from None
        finally:
            conn.close()

        truncated = len(rows) > max_rows
        if truncated:
            rows = rows[:max_rows]
            ctx.log("kept the first %d rows (max_rows); the rest were cut", max_rows)
        ctx.log("%s: %d rows", place, rowcount)
        return {
            "rows": [json_safe(dict(zip(columns, row, strict=True))) for row in rows],
            "rowcount": rowcount,
            "columns": columns,
            "truncated": truncated,
        }

    @staticmethod
    def _refuse_privileged(conn: Any, name: str) -> None:
        """Refuse a role that could step around the node's limits (see the module doc)."""
        rows = conn.execute(_PRIVILEGES_SQL, [list(PRIVILEGED_ROLES)]).fetchall()
        conn.rollback()
        for role, superuser, bypassrls, members in rows:
            why = (["superuser"] if superuser else []) + (["BYPASSRLS"] if bypassrls else []) \
                + [f"member of {m}" for m in members]
            if why:
                raise NodeExecutionError(
                    f"connection {name!r} uses the role {role!r}, which is "
                    f"{', '.join(why)}: it could step around read-only and reach the database "
                    "server's files and programs. Use a least-privilege role, or, if every flow "
                    "author may have those powers, store it with `nexusflow connections add "
                    "--trusted` (an administrator) or set "
                    f"NEXUSFLOW_CONNECTION_{name.upper()}_TRUSTED=1 on the workers",
                    retryable=False)

    @staticmethod
    def _sql_error(exc: Any, place: str, read_only: bool) -> NodeExecutionError:
        diag = getattr(exc, "diag", None)
        state = getattr(diag, "sqlstate", None) or getattr(exc, "sqlstate", None)
        message = " ".join(str(getattr(diag, "message_primary", None) or exc).split())
        if state is None:  # no SQLSTATE: the connection broke
            return NodeExecutionError(f"{place} failed: {message}", retryable=True)
        hint = ""
        if state == "25006" and read_only:
            hint = " (the node is read_only; set read_only: false to write)"
        elif state == "57014":
            hint = " (the statement ran past timeout_s)"
        elif state == "42601" and "multiple commands" in message:
            hint = " (one statement per node)"
        return NodeExecutionError(
            f"SQL error {state} on {place}: {message}{hint}",
            retryable=state.startswith(_RETRYABLE_SQLSTATE_PREFIXES),
        )

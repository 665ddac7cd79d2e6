"""The core node types, each through its ``run()`` with a hand-built ``NodeContext``.

HTTP runs against a server this module starts on 127.0.0.1; Database Query runs against the
real PostgreSQL test database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from nexusflow_kernel.errors import ExpressionError, NodeConfigError, NodeExecutionError
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import read_flow
from nexusflow_kernel.nodes import Defer, NodeContext, get_node_type
from nexusflow_kernel.settings import Settings


def make_ctx(config: dict[str, Any], *, settings: Settings | None = None,
             inputs: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
             resume_state: dict[str, Any] | None = None, node_id: str = "N") -> NodeContext:
    return NodeContext(
        run_id="run-1", node_id=node_id, attempt=1, config=config, inputs=inputs or {},
        params=params or {}, settings=settings or Settings(), resume_state=resume_state,
    )


def run(type_name: str, config: dict[str, Any], **kwargs: Any) -> Any:
    node_type = get_node_type(type_name)
    assert node_type is not None
    return node_type.run(make_ctx(config, **kwargs))


# --- transform, condition, delay ------------------------------------------------------------


def test_transform_uses_inputs_and_params() -> None:
    out = run("transform", {"expression": "{'double': params['n'] * 2, 'ids': "
                            "[r['id'] for r in inputs['A']['rows']], 'pair': (1, 2)}"},
              inputs={"A": {"rows": [{"id": 1}, {"id": 2}]}}, params={"n": 21})
    assert out == {"double": 42, "ids": [1, 2], "pair": [1, 2]}
    json.dumps(out)


def test_transform_error_names_the_node() -> None:
    with pytest.raises(ExpressionError, match=r"at node 'C' /config/expression: KeyError"):
        run("transform", {"expression": "inputs['A'] > 10"}, node_id="C")


def test_condition_branches() -> None:
    node_type = get_node_type("condition")
    assert node_type is not None and node_type.output_handles == ("true", "false")
    assert run("condition", {"expression": "inputs['A'] > 10"}, inputs={"A": 11}) is True
    assert run("condition", {"expression": "inputs['A']"}, inputs={"A": []}) is False
    assert node_type.branch(True) == "true" and node_type.branch(False) == "false"


def test_delay_defers_then_finishes() -> None:
    before = time.time()
    first = run("delay", {"seconds": 30})
    assert isinstance(first, Defer)
    assert before + 29 < first.until < time.time() + 31
    out = run("delay", {"seconds": 30}, resume_state=first.state)
    assert set(out) == {"waited_s", "until"} and out["waited_s"] >= 0
    assert datetime.fromisoformat(out["until"]).timestamp() == pytest.approx(first.until, abs=1)


def test_delay_zero_and_past_until_do_not_wait() -> None:
    assert run("delay", {"seconds": 0})["waited_s"] == 0
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert run("delay", {"until": past})["until"] == datetime.fromisoformat(past).isoformat()


def test_delay_until_naive_is_utc() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None, microsecond=0)
    out = run("delay", {"until": future.isoformat()})
    assert isinstance(out, Defer)
    assert out.until == future.replace(tzinfo=UTC).timestamp()


def test_delay_bad_values_fail_without_retry() -> None:
    with pytest.raises(NodeExecutionError) as info:
        run("delay", {"until": "next tuesday"})
    assert not info.value.retryable
    with pytest.raises(NodeExecutionError, match="seconds must be a number"):
        run("delay", {"seconds": "ten"})


# --- http -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json",
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command, "path": parts.path, "query": parse_qs(parts.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(),
        }
        type(self).seen.append(record)
        if parts.path.startswith("/status/"):
            code = int(parts.path.rsplit("/", 1)[1])
            self._reply(code, b"boom: the backend is down " * 20, "text/plain")
        elif parts.path == "/slow":
            time.sleep(2)
            self._reply(200, b"{}")
        elif parts.path == "/redirect":
            self._reply(302, b"", "text/plain", {"Location": "/json"})
        elif parts.path == "/big":
            self._reply(200, b"x" * 5000, "text/plain")
        else:
            self._reply(200, json.dumps(record).encode())

    def _handle_quietly(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle_quietly


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_get_json_with_query_and_headers(http_base: str) -> None:
    out = run("http", {"url": f"{http_base}/json?a=1", "query": {"b": 2, "c": ["x", "y"],
                                                                 "d": True},
                       "headers": {"X-Trace": "t-1"}})
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"]["query"] == {"a": ["1"], "b": ["2"], "c": ["x", "y"], "d": ["true"]}
    assert out["json"]["headers"]["x-trace"] == "t-1"
    assert out["json"]["headers"]["idempotency-key"] == "run-1:N"
    assert out["truncated"] is False and json.loads(out["text"]) == out["json"]


def test_http_post_json_and_raw_body(http_base: str) -> None:
    out = run("http", {"method": "POST", "url": f"{http_base}/echo", "json": {"k": [1, 2]}})
    assert json.loads(out["json"]["body"]) == {"k": [1, 2]}
    assert out["json"]["headers"]["content-type"] == "application/json"
    out = run("http", {"method": "PUT", "url": f"{http_base}/echo", "body": "plain text",
                       "headers": {"Content-Type": "text/plain", "Idempotency-Key": "mine"}})
    assert out["json"]["body"] == "plain text"
    assert out["json"]["headers"]["idempotency-key"] == "mine"


def test_http_5xx_fails_retryable_and_4xx_not(http_base: str) -> None:
    with pytest.raises(NodeExecutionError) as info:
        run("http", {"url": f"{http_base}/status/503"})
    assert info.value.retryable
    message = str(info.value)
    assert message.startswith(f"HTTP 503 from GET {http_base}/status/503: boom")
    assert len(message) < 300
    with pytest.raises(NodeExecutionError) as info:
        run("http", {"url": f"{http_base}/status/404"})
    assert not info.value.retryable
    with pytest.raises(NodeExecutionError) as info:
        run("http", {"url": f"{http_base}/status/429"})
    assert info.value.retryable


def test_http_fail_on_status_false_returns_the_response(http_base: str) -> None:
    out = run("http", {"url": f"{http_base}/status/500", "fail_on_status": False})
    assert out["status"] == 500 and out["json"] is None and out["text"].startswith("boom")


def test_http_timeout_is_retryable(http_base: str) -> None:
    started = time.monotonic()
    with pytest.raises(NodeExecutionError, match="timed out") as info:
        run("http", {"url": f"{http_base}/slow", "timeout_s": 0.3})
    assert info.value.retryable and time.monotonic() - started < 1.8


def test_http_timeout_respects_the_node_deadline(http_base: str) -> None:
    ctx = make_ctx({"url": f"{http_base}/slow", "timeout_s": 30})
    ctx.deadline = time.time() + 0.3
    started = time.monotonic()
    with pytest.raises(NodeExecutionError, match="timed out"):
        get_node_type("http").run(ctx)  # type: ignore[union-attr]
    assert time.monotonic() - started < 1.8


def test_http_truncates_big_bodies(http_base: str) -> None:
    out = run("http", {"url": f"{http_base}/big", "max_response_bytes": 100})
    assert out["truncated"] is True and out["text"] == "x" * 100


def test_http_redirects_only_when_asked(http_base: str) -> None:
    out = run("http", {"url": f"{http_base}/redirect", "fail_on_status": False})
    assert out["status"] == 302
    out = run("http", {"url": f"{http_base}/redirect", "follow_redirects": True})
    assert out["status"] == 200 and out["json"]["path"] == "/json"


def test_http_connection_refused_is_retryable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeExecutionError, match=rf"GET http://127.0.0.1:{port}/ failed") as info:
        run("http", {"url": f"http://127.0.0.1:{port}/"})
    assert info.value.retryable


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0x7f.1/",
        "http://2130706433/",
        "http://10.0.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
    ],
)
def test_http_ssrf_guard_refuses_private_addresses(url: str) -> None:
    with pytest.raises(NodeExecutionError, match="refused") as info:
        run("http", {"url": url}, settings=Settings(allow_private_http=False))
    assert not info.value.retryable


def test_http_ssrf_refusal_sends_nothing(http_base: str) -> None:
    _Handler.seen.clear()
    with pytest.raises(NodeExecutionError, match="refused"):
        run("http", {"url": f"{http_base}/redirect", "follow_redirects": True},
            settings=Settings(allow_private_http=False))
    assert _Handler.seen == []  # refused before anything was sent


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/"])
def test_http_refuses_other_schemes(url: str) -> None:
    with pytest.raises(NodeExecutionError, match="only http and https") as info:
        run("http", {"url": url})
    assert not info.value.retryable


# --- db_query -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db(database_url: str) -> Iterator[Settings]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS nt_items")
        conn.execute(
            "CREATE TABLE nt_items (id serial PRIMARY KEY, name text NOT NULL, "
            "price numeric(10, 2), made timestamptz DEFAULT '2024-01-02T03:04:05Z', "
            "ref uuid DEFAULT '00000000-0000-0000-0000-000000000001', blob bytea)"
        )
        conn.execute("INSERT INTO nt_items (name, price, blob) VALUES "
                     "('apple', 1.50, '\\x0001'), ('pear', 2, NULL)")
    # The test server's superuser: trusted, as only an operator may mark it (issue #13).
    yield Settings(connections={"main": database_url}, trusted_connections=frozenset({"main"}))


def test_db_select_with_params_converts_values(db: Settings) -> None:
    out = run("db_query", {"connection": "main", "sql": "SELECT * FROM nt_items "
                           "WHERE price > %s ORDER BY id", "params": [1]}, settings=db)
    assert out["rowcount"] == 2 and out["truncated"] is False
    assert out["columns"] == ["id", "name", "price", "made", "ref", "blob"]
    first = out["rows"][0]
    assert first["name"] == "apple" and first["price"] == 1.5
    assert out["rows"][1]["price"] == 2
    assert first["made"].startswith("2024-01-02T03:04:05")
    assert first["ref"] == "00000000-0000-0000-0000-000000000001" and first["blob"] == "AAE="
    json.dumps(out)
    named = run("db_query", {"connection": "MAIN", "sql": "SELECT name FROM nt_items "
                             "WHERE name = %(n)s", "params": {"n": "pear"}}, settings=db)
    assert named["rows"] == [{"name": "pear"}]


def test_db_insert_needs_read_only_false(db: Settings) -> None:
    sql = "INSERT INTO nt_items (name, price) VALUES (%s, %s) RETURNING name"
    with pytest.raises(NodeExecutionError, match="25006.*read_only: false") as info:
        run("db_query", {"connection": "main", "sql": sql, "params": ["fig", 3]}, settings=db)
    assert not info.value.retryable
    out = run("db_query", {"connection": "main", "sql": sql, "params": ["fig", 3],
                           "read_only": False}, settings=db)
    assert out == {"rows": [{"name": "fig"}], "rowcount": 1, "columns": ["name"],
                   "truncated": False}
    out = run("db_query", {"connection": "main", "read_only": False,
                           "sql": "UPDATE nt_items SET price = price WHERE name = 'fig'"},
              settings=db)
    assert out["rows"] == [] and out["rowcount"] == 1


def test_db_injection_value_is_bound_not_executed(db: Settings) -> None:
    evil = "x'; DROP TABLE nt_items; --"
    out = run("db_query", {"connection": "main", "sql": "SELECT count(*) AS n FROM nt_items "
                           "WHERE name = %s", "params": [evil], "read_only": False}, settings=db)
    assert out["rows"] == [{"n": 0}]
    assert run("db_query", {"connection": "main", "sql": "SELECT count(*) AS n FROM nt_items"},
               settings=db)["rows"][0]["n"] >= 2


@pytest.mark.parametrize("params", [None, [1]])
def test_db_stacked_statements_are_refused(db: Settings, params: Any) -> None:
    sql = "SELECT 1; DELETE FROM nt_items" if params is None else \
        "SELECT %s; DELETE FROM nt_items"
    with pytest.raises(NodeExecutionError, match="42601") as info:
        run("db_query", {"connection": "main", "sql": sql, "params": params,
                         "read_only": False}, settings=db)
    assert not info.value.retryable
    left = run("db_query", {"connection": "main", "sql": "SELECT count(*) AS n FROM nt_items"},
               settings=db)
    assert left["rows"][0]["n"] >= 2


def test_db_statement_timeout(db: Settings) -> None:
    started = time.monotonic()
    with pytest.raises(NodeExecutionError, match="57014") as info:
        run("db_query", {"connection": "main", "sql": "SELECT pg_sleep(5)", "timeout_s": 0.2},
            settings=db)
    assert time.monotonic() - started < 3
    assert not info.value.retryable


def test_db_max_rows_truncates(db: Settings) -> None:
    out = run("db_query", {"connection": "main", "max_rows": 3,
                           "sql": "SELECT g FROM generate_series(1, 10) g"}, settings=db)
    assert out["rows"] == [{"g": 1}, {"g": 2}, {"g": 3}] and out["truncated"] is True


def test_db_unknown_connection_lists_names_not_urls(db: Settings, database_url: str) -> None:
    with pytest.raises(NodeExecutionError) as info:
        run("db_query", {"connection": "other", "sql": "SELECT 1"}, settings=db)
    assert "'other'" in str(info.value) and "configured: main" in str(info.value)
    assert database_url not in str(info.value) and not info.value.retryable


def test_db_connection_failure_is_retryable_and_masked() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://user:hunter2@127.0.0.1:{port}/db"
    with pytest.raises(NodeExecutionError, match="cannot connect") as info:
        run("db_query", {"connection": "gone", "sql": "SELECT 1"},
            settings=Settings(connections={"gone": url}))
    assert info.value.retryable and "hunter2" not in str(info.value)


# --- compile-time config checks -------------------------------------------------------------


def _flow(node_type: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "name": "t", "edges": [],
            "nodes": [{"id": "A", "type": node_type, "position": {"x": 0, "y": 0},
                       "config": config}]}


@pytest.mark.parametrize(
    ("node_type", "config", "pointer"),
    [
        ("transform", {}, "/nodes/0/config"),
        ("transform", {"expression": "1 +"}, "/nodes/0/config/expression"),
        ("transform", {"expression": "x.__class__"}, "/nodes/0/config/expression"),
        ("transform", {"expression": "1", "extra": 1}, "/nodes/0/config"),
        ("condition", {"expression": "inputs['A'] >"}, "/nodes/0/config/expression"),
        ("delay", {}, "/nodes/0/config"),
        ("delay", {"seconds": -1}, "/nodes/0/config/seconds"),
        ("delay", {"seconds": 1, "until": "2030-01-01T00:00:00Z"}, "/nodes/0/config/until"),
        ("delay", {"until": "soon"}, "/nodes/0/config/until"),
        ("http", {}, "/nodes/0/config"),
        ("http", {"url": "http://x/", "method": "FETCH"}, "/nodes/0/config/method"),
        ("http", {"url": "http://x/", "json": {}, "body": "b"}, "/nodes/0/config/body"),
        ("http", {"url": "file:///etc/passwd"}, "/nodes/0/config/url"),
        ("http", {"url": "http://x/{{ params[ }}"}, "/nodes/0/config/url"),
        ("http", {"url": "http://x/", "headers": {"A": 1}}, "/nodes/0/config/headers/A"),
        ("db_query", {"sql": "SELECT 1"}, "/nodes/0/config"),
        ("db_query", {"connection": "main", "sql": "SELECT 1", "max_rows": 0},
         "/nodes/0/config/max_rows"),
        ("db_query", {"connection": "main", "sql": "SELECT %s", "params": ["{{ ( }}"]},
         "/nodes/0/config/params/0"),
    ],
)
def test_compile_rejects_bad_config(node_type: str, config: dict[str, Any], pointer: str) -> None:
    with pytest.raises(NodeConfigError) as info:
        compile_flow(read_flow(_flow(node_type, config)))
    assert info.value.pointer == pointer, str(info.value)
    assert "'A'" in str(info.value)


@pytest.mark.parametrize(
    ("node_type", "config"),
    [
        ("transform", {"expression": "params['n'] * 2"}),
        ("condition", {"expression": "inputs['A'] > 10"}),
        ("delay", {"seconds": "{{ params['wait'] }}"}),
        ("delay", {"until": "2030-01-01T09:00:00+01:00"}),
        ("http", {"url": "https://api.example.com/{{ params['id'] }}",
                  "headers": {"Authorization": {"$secret": "TOKEN"}}, "json": {"a": 1}}),
        ("db_query", {"connection": "main", "sql": "SELECT %s", "params": ["{{ inputs.A }}"]}),
    ],
)
def test_compile_accepts_good_config(node_type: str, config: dict[str, Any]) -> None:
    compile_flow(read_flow(_flow(node_type, config)))


def test_catalog_schemas_are_complete() -> None:
    import jsonschema

    from nexusflow_kernel.nodes import catalog

    entries = {e["type"]: e for e in catalog()}
    for name in ("transform", "condition", "delay", "http", "db_query"):
        schema = entries[name]["config_schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False and schema["title"]
        for prop in schema["properties"].values():
            assert prop.get("title") and prop.get("description")

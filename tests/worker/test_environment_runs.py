"""Issue #17 item 1: one flow, written once, runs in dev and in prod and sees each one's own
variables, secrets and connections (a real ``db_query`` against the test PostgreSQL: the two
environments' connections read two schemas), falling back to the values of every environment;
a named environment that lacks something the flow needs is refused before anything starts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from nftest import AuthDigestEcho, flow, node, wait_run

from nexusflow_kernel.connections import ConnectionStore
from nexusflow_kernel.engine import Engine
from nexusflow_kernel.environments import EnvironmentError, UnknownEnvironment
from nexusflow_kernel.secrets import SecretStore


@pytest.fixture(scope="module")
def schemas(database_url: str) -> Iterator[tuple[str, str]]:
    """A least-privilege role reading ``items`` in two schemas: one connection URL each."""
    tag = uuid.uuid4().hex[:6]
    role = f"nf_env_{tag}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'env-pw-{tag}'")
        for schema, rows in ((f"dev_{tag}", "('dev row')"), (f"prod_{tag}", "('prod row')")):
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.items (name text)")
            conn.execute(f"INSERT INTO {schema}.items VALUES {rows}")
            conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
            conn.execute(f"GRANT SELECT ON {schema}.items TO {role}")
    parts = urlsplit(database_url)
    host = parts.netloc.rsplit("@", 1)[-1]

    def url(schema: str) -> str:
        return urlunsplit(parts._replace(netloc=f"{role}@{host}",
                                         query="options=" + quote(f"-csearch_path={schema}")))

    try:
        yield url(f"dev_{tag}"), url(f"prod_{tag}")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE usename = %s", (role,))
            for schema in (f"dev_{tag}", f"prod_{tag}"):
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_one_flow_in_dev_and_prod(settings, workers, schemas, database_url) -> None:
    dev_url, prod_url = schemas
    tag = uuid.uuid4().hex[:6]
    prod, bare = f"prod_{tag}", f"bare_{tag}"
    engine = Engine(settings)
    envs = engine.environments
    envs.create(prod, description="production")
    envs.create(bare)
    envs.set_var("dev", "GREETING", "hello from dev")
    envs.set_var(prod, "GREETING", "hello from prod")
    envs.set_var("dev", "REGION", "eu-dev")
    envs.set_var(prod, "REGION", "eu-prod")
    secrets = SecretStore(settings)
    key = f"api_key_{tag}"
    secrets.set(key, "Bearer dev-key-1111", env="dev")
    secrets.set(key, "Bearer prod-key-2222", env=prod)
    conn_name = f"warehouse_{tag}"
    conns = ConnectionStore(settings)
    conns.add(conn_name, kind="postgres", url=dev_url, password="pw-dev-555", env="dev")
    conns.add(conn_name, kind="postgres", url=prod_url, password="pw-prod-666", env=prod)

    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthDigestEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _in_dev_and_prod(engine, workers, server, key, conn_name, prod, bare, database_url,
                         dev_url)
    finally:
        server.shutdown()


def _in_dev_and_prod(engine, workers, server, key, conn_name, prod, bare, database_url,
                     dev_url) -> None:
    envs = engine.environments
    secrets = SecretStore(engine.settings)
    conns = ConnectionStore(engine.settings)
    doc = flow(
        node("greet", "transform", expression="env['GREETING'] + ', ' + params['who']"),
        node("region", "noop", value="region {{ env['REGION'] }}"),
        node("q", "db_query", connection=conn_name, sql="SELECT name FROM items"),
        node("key", "http", url=f"http://127.0.0.1:{server.server_port}/",
             headers={"Authorization": {"$secret": key}}),
        params={"who": {"type": "string", "default": "team"}})
    workers.start(1)
    dev_run = wait_run(engine, engine.start_run(doc, env="dev"))
    prod_run = wait_run(engine, engine.start_run(doc, env=prod))
    default_run = wait_run(engine, engine.start_run(doc))  # dev, unchecked
    for run in (dev_run, prod_run, default_run):
        assert run["status"] == "succeeded", run
    out = {r["env"]: {n: v["output"] for n, v in r["nodes"].items()}
           for r in (dev_run, prod_run)}
    assert default_run["env"] == "dev" and dev_run["env"] == "dev" and prod_run["env"] == prod
    assert out["dev"]["greet"] == "hello from dev, team"
    assert out[prod]["greet"] == "hello from prod, team"
    assert out["dev"]["region"] == "region eu-dev" and out[prod]["region"] == "region eu-prod"
    assert out["dev"]["q"]["rows"] == [{"name": "dev row"}]
    assert out[prod]["q"]["rows"] == [{"name": "prod row"}]
    assert out["dev"]["key"]["json"] == {"sha": _sha("Bearer dev-key-1111")}
    assert out[prod]["key"]["json"] == {"sha": _sha("Bearer prod-key-2222")}
    assert default_run["nodes"]["greet"]["output"] == "hello from dev, team"
    assert prod_run["env_vars"]["REGION"] == "eu-prod"
    assert {r["run_id"]: r["env"] for r in engine.list_runs(limit=5)}[prod_run["run_id"]] == prod
    # a replay runs in the same environment, with the same variables
    replay = wait_run(engine, engine.replay_run(prod_run["run_id"]))
    assert replay["env"] == prod and replay["nodes"]["q"]["output"]["rows"] == [
        {"name": "prod row"}]
    # the prod password is masked in everything the prod run keeps
    text = json.dumps(prod_run) + json.dumps(engine.node_attempts(prod_run["run_id"], "q"))
    assert "pw-prod-666" not in text and "prod-key-2222" not in text

    # an environment that lacks what the flow needs: one error naming each, nothing stored
    with psycopg.connect(database_url) as db:
        before = db.execute("SELECT count(*) FROM executions").fetchone()[0]
    with pytest.raises(EnvironmentError) as info:
        engine.start_run(doc, env=bare)
    message = str(info.value)
    assert f"cannot run in environment {bare!r}" in message
    for part in ("node 'greet' reads variable env['GREETING']",
                 "node 'region' reads variable env['REGION']",
                 f"node 'key' needs secret {key!r}", f"node 'q' needs connection {conn_name!r}"):
        assert part in message, message
    with pytest.raises(UnknownEnvironment, match="unknown environment 'nowhere'"):
        engine.start_run(doc, env="nowhere")
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT count(*) FROM executions").fetchone()[0] == before
    # values of every environment fill in: bare gets the shared ones and runs
    envs.set_var(bare, "GREETING", "hi")
    envs.set_var(bare, "REGION", "none")
    secrets.set(key, "Bearer shared-3333")
    conns.add(conn_name, kind="postgres", url=dev_url)
    run = wait_run(engine, engine.start_run(doc, env=bare))
    assert run["status"] == "succeeded", run
    assert run["nodes"]["key"]["output"]["json"] == {"sha": _sha("Bearer shared-3333")}
    assert run["nodes"]["q"]["output"]["rows"] == [{"name": "dev row"}]


def test_code_node_reads_the_run_environment(settings, workers) -> None:
    """A code node run by a worker in ``prod`` sees prod's variables as the dict ``env`` (and
    bash on stdin), like an expression's ``env['NAME']``, and so does a @task's ``env``
    parameter; in dev, dev's."""
    from dataclasses import replace

    engine = Engine(settings)
    prod = f"prod_{uuid.uuid4().hex[:6]}"
    engine.environments.create(prod)
    engine.environments.set_var("dev", "REGION", "eu-dev")
    engine.environments.set_var(prod, "REGION", "eu-prod")
    engine.environments.set_var(prod, "LIMIT", 7)
    workers.settings = replace(settings, code_isolation="process")  # docker: test_sandbox.py
    workers.start(1, "--queues", "default,sandbox")
    doc = flow(
        node("py", "code", language="python",
             source="def main(inputs, params):\n"
                    "    return {'region': env['REGION'], 'limit': env.get('LIMIT')}\n"),
        node("sh", "code", language="bash",
             source="python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)"
                    "[\"env\"][\"REGION\"]))'\n"),
        node("task", "python_task", function="where",
             source="def where(env):\n    return [env['REGION'], sorted(globals()['env'])]\n"),
        name="code-env")
    runs = {name: wait_run(engine, engine.start_run(doc, env=name), timeout=90)
            for name in ("dev", prod)}
    for run in runs.values():
        assert run["status"] == "succeeded", run
    assert runs[prod]["nodes"]["py"]["output"] == {"region": "eu-prod", "limit": 7}
    assert runs[prod]["nodes"]["sh"]["output"] == "eu-prod"
    assert runs["dev"]["nodes"]["py"]["output"] == {"region": "eu-dev", "limit": None}
    assert runs["dev"]["nodes"]["sh"]["output"] == "eu-dev"
    # a notebook @task's parameter called env gets them too (and its program's global env)
    assert runs[prod]["nodes"]["task"]["output"] == ["eu-prod", ["LIMIT", "REGION"]]
    dev_task = runs["dev"]["nodes"]["task"]["output"]  # dev is shared by the session's tests
    assert dev_task[0] == "eu-dev" and "REGION" in dev_task[1] and "LIMIT" not in dev_task[1]
    # the code's env['REGION'] is checked before a run starts, as an expression's is
    bare = f"bare_{uuid.uuid4().hex[:6]}"
    engine.environments.create(bare)
    with pytest.raises(EnvironmentError, match="node 'py' reads variable env\\['REGION'\\]"):
        engine.start_run(doc, env=bare)


def test_a_node_test_resolves_the_environment_as_a_run(settings, workers, schemas) -> None:
    """"Test node" runs a node in an environment (default dev) as a run there would: its
    variables, its secrets and connections, with the scope checks a run of the test's user
    gets; what an environment lacks is named before anything is queued."""
    dev_url, prod_url = schemas
    tag = uuid.uuid4().hex[:6]
    prod, bare = f"prod_{tag}", f"bare_{tag}"
    engine = Engine(settings)
    envs = engine.environments
    envs.create(prod)
    envs.create(bare)
    envs.set_var("dev", "REGION", "eu-dev")
    envs.set_var(prod, "REGION", "eu-prod")
    secrets, conns = SecretStore(settings), ConnectionStore(settings)
    key, scoped, conn_name = f"key_{tag}", f"scoped_{tag}", f"wh_{tag}"
    secrets.set(key, "Bearer dev-key-1111", env="dev")
    secrets.set(key, "Bearer prod-key-2222", env=prod)
    secrets.set(scoped, "Bearer ops-only-3333", env=prod, groups=["ops"])
    conns.add(conn_name, kind="postgres", url=dev_url, password="pw-dev-555", env="dev")
    conns.add(conn_name, kind="postgres", url=prod_url, password="pw-prod-666", env=prod)
    with psycopg.connect(settings.database_url, autocommit=True) as db:  # as the server does
        for user, groups in (("olga", ["ops"]), ("dan", ["dev"])):
            db.execute("INSERT INTO nexusflow_principals (name, groups, source) VALUES"
                       " (%s, %s, 'hub') ON CONFLICT (name) DO UPDATE SET groups ="
                       " EXCLUDED.groups", (user, groups))
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthDigestEcho)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    workers.start(1)
    try:
        def test(node_doc: dict, **kw: object) -> dict:
            return engine.wait_test(engine.start_test(node_doc, inputs={}, params={}, **kw))

        region = node("region", "transform", expression="env['REGION'] + '!'")
        query = node("q", "db_query", connection=conn_name, sql="SELECT name FROM items")
        call = node("call", "http", url=url, headers={"Authorization": {"$secret": key}})
        got = {env: [test(n, env=env, actor="dan") for n in (region, query, call)]
               for env in (None, prod)}
        for env, (r, q, c) in got.items():
            assert [t["status"] for t in (r, q, c)] == ["succeeded"] * 3, (env, r, q, c)
            assert r["env"] == (env or "dev")
        dev, in_prod = got[None], got[prod]
        assert (dev[0]["output"], in_prod[0]["output"]) == ("eu-dev!", "eu-prod!")
        assert dev[1]["output"]["rows"] == [{"name": "dev row"}]
        assert in_prod[1]["output"]["rows"] == [{"name": "prod row"}]
        assert in_prod[2]["output"]["json"] == {"sha": _sha("Bearer prod-key-2222")}
        assert dev[2]["output"]["json"] == {"sha": _sha("Bearer dev-key-1111")}
        # a group-scoped secret: read by a user of the group, as their run would; not by others
        ops_call = node("call", "http", url=url, headers={"Authorization": {"$secret": scoped}})
        ok = test(ops_call, env=prod, actor="olga")
        assert ok["status"] == "succeeded", ok
        assert ok["output"]["json"] == {"sha": _sha("Bearer ops-only-3333")}
        for actor in ("dan", None):
            refused = test(ops_call, env=prod, actor=actor)
            assert refused["status"] == "failed" and "scoped to group(s) ops" in refused["error"]
        # what the environment lacks is named before anything is queued, like a run's
        with pytest.raises(EnvironmentError, match=f"node 'q' needs connection '{conn_name}'"):
            engine.start_test(query, inputs={}, params={}, env=bare)
        with pytest.raises(UnknownEnvironment, match="unknown environment 'nowhere'"):
            engine.start_test(region, inputs={}, params={}, env="nowhere")
    finally:
        server.shutdown()

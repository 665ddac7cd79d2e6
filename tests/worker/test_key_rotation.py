"""``nexusflow secrets rotate-key`` (issue #14, item 4): every encrypted value (secrets, webhook
secrets, and any table registered with ``register_encrypted``) is sealed again under the new key
in one transaction; afterwards the new key decrypts them and the old one does not, and a run on
workers holding only the new key reads its secret."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from nftest import flow, node, settings_env, wait_run

from nexusflow_kernel.runstate.db import get_pool
from nexusflow_kernel.secrets import SecretKeyError, SecretStore, generate_key

SEEN: list[str] = []


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        SEEN.append(self.headers.get("Authorization") or "")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def _rotate(settings, key_env: str, *args: str) -> subprocess.CompletedProcess:
    env = settings_env(settings)
    env["NEXUSFLOW_SECRET_KEY"] = key_env
    return subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", "secrets", "rotate-key", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _store(settings, key: str) -> SecretStore:
    return SecretStore(get_pool(settings.database_url), settings=replace(settings, secret_key=key))


def _webhook(settings, key: str) -> None:
    """A webhook row as the server stores it (its secret sealed with the same cipher)."""
    from nexusflow_server.store import ServerStore

    ServerStore(get_pool(settings.database_url), _store(settings, key)).create_webhook(
        "00000000-0000-0000-0000-00000000abcd",
        version=None,
        auth="hmac",
        key="whsec_rotated",
        jwt_algorithm=None,
        jwt_audience=None,
        jwt_issuer=None,
        content_types=["application/json"],
        max_body_bytes=1024,
        rate_limit=10,
        rate_window_s=60,
        wait_s=0,
        actor="ops",
    )


def _hook_secret(settings, key: str) -> str:
    with psycopg.connect(settings.database_url) as conn:
        hook_id, blob = conn.execute("SELECT hook_id, secret FROM nexusflow_webhooks").fetchone()
    return _store(settings, key).cipher.decrypt(blob, f"webhook:{hook_id}")


def _conns(settings, key: str):
    from nexusflow_kernel.connections import ConnectionStore

    return ConnectionStore(get_pool(settings.database_url), secrets=_store(settings, key))


def _clean(settings) -> None:
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("DELETE FROM nexusflow_secrets")
        conn.execute("DELETE FROM nexusflow_webhooks")
        conn.execute("DELETE FROM nexusflow_connections")


def test_rotate_key_reencrypts_everything_and_runs_use_the_new_key(
    settings, engine, workers, echo
) -> None:
    old, new = generate_key(), generate_key()
    _clean(settings)
    _store(settings, old).set("API_TOKEN", "tok-before-rotation-123")
    _store(settings, old).set("SCOPED", "scoped-value-456", groups=["finance"])
    _store(settings, old).set("API_TOKEN", "tok-prod-only-789", env="prod")
    _conns(settings, old).add("warehouse", kind="postgres",
                              url="postgresql://reader:wh-pass-123@db.internal/wh")
    _webhook(settings, old)

    one_key = _rotate(settings, old)
    assert one_key.returncode != 0 and "NEW,OLD" in one_key.stderr

    done = _rotate(settings, f"{new},{old}")
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 5 value(s)" in done.stderr, done.stderr
    assert "nexusflow_secrets: 3" in done.stderr and "nexusflow_webhooks: 1" in done.stderr
    assert "nexusflow_connections: 1" in done.stderr
    assert "tok-before" not in done.stdout + done.stderr

    # The new key alone decrypts every value; the old key alone decrypts none.
    assert _store(settings, new).get("API_TOKEN") == "tok-before-rotation-123"
    assert _hook_secret(settings, new) == "whsec_rotated"
    assert _store(settings, new).get("API_TOKEN", env="prod") == "tok-prod-only-789"
    assert "wh-pass-123" in _conns(settings, new).resolve("warehouse", run_id=None, env="").url
    with pytest.raises(SecretKeyError):
        _store(settings, old).get("API_TOKEN")
    with pytest.raises(SecretKeyError):
        _conns(settings, old).resolve("warehouse", run_id=None, env="")
    with pytest.raises(SecretKeyError):
        _hook_secret(settings, old)
    with psycopg.connect(settings.database_url) as conn:
        scoped = conn.execute(
            "SELECT ciphertext, scope_groups FROM nexusflow_secrets WHERE name = 'SCOPED'"
        ).fetchone()
    assert _store(settings, new).cipher.decrypt(scoped[0], "SCOPED") == "scoped-value-456"
    assert scoped[1] == ["finance"]  # the scope is untouched

    # A run on workers that hold only the new key resolves the secret.
    new_only = replace(settings, secret_key=new)
    workers.settings = new_only
    workers.start(1)
    run_id = engine.start_run(
        flow(
            node("A", "http", url=f"{echo}/x", headers={"Authorization": {"$secret": "API_TOKEN"}})
        )
    )
    run = wait_run(engine, run_id, timeout=60)
    assert run["status"] == "succeeded", run
    assert "tok-before-rotation-123" in SEEN


def test_rotate_key_is_all_or_nothing(settings) -> None:
    old, new, stranger = generate_key(), generate_key(), generate_key()
    _clean(settings)
    _store(settings, old).set("A_FIRST", "value-a-123456")
    _store(settings, stranger).set("B_OTHER", "value-b-123456")  # no key given decrypts it
    _store(settings, old).set("C_LAST", "value-c-123456")
    with psycopg.connect(settings.database_url) as conn:
        before = conn.execute(
            "SELECT name, ciphertext FROM nexusflow_secrets ORDER BY name"
        ).fetchall()
    failed = _rotate(settings, f"{new},{old}")
    assert failed.returncode != 0
    assert "nexusflow_secrets 'B_OTHER' cannot be decrypted" in failed.stderr
    with psycopg.connect(settings.database_url) as conn:
        after = conn.execute(
            "SELECT name, ciphertext FROM nexusflow_secrets ORDER BY name"
        ).fetchall()
    assert after == before  # rolled back: A_FIRST is still under the old key
    assert _store(settings, old).get("A_FIRST") == "value-a-123456"


def test_rotate_key_generate_prints_the_new_key(settings) -> None:
    old = generate_key()
    _clean(settings)
    _store(settings, old).set("GEN", "generated-rotation-789")
    out = _rotate(settings, old, "--generate")
    assert out.returncode == 0, out.stderr
    new = out.stdout.strip()
    assert len(new) == 44 and new != old
    assert _store(settings, new).get("GEN") == "generated-rotation-789"
    with pytest.raises(SecretKeyError):
        _store(settings, old).get("GEN")

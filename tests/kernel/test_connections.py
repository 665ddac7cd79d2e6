"""Issue #14 item 2: connections stored encrypted like secrets, listed without their passwords.

On the real test PostgreSQL: what is stored is ciphertext bound to the connection's name and
environment, lists and errors never hold the password, bad input is named by its field, and
the run masker learns a connection's values (``connection:NAME``).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from nexusflow_kernel.connections import ConnectionStore, check_config, run_values
from nexusflow_kernel.errors import NexusFlowError, NotFoundError
from nexusflow_kernel.masking import RunSecrets
from nexusflow_kernel.secrets import ENCRYPTED_COLUMNS, SecretKeyError, SecretStore


@pytest.fixture
def store(settings) -> ConnectionStore:
    return ConnectionStore(settings)


def _name() -> str:
    return f"wh_{uuid.uuid4().hex[:8]}"


def test_a_connection_is_stored_encrypted_and_listed_without_its_password(store, settings):
    name = _name()
    row = store.add(
        name,
        kind="postgres",
        url="postgresql://reporter@db.example:5432/sales",
        password="pa:ss/w@rd-7781",
        actor="alice",
    )
    assert row["display"] == "postgresql://reporter:***@db.example:5432/sales"
    assert row["kind"] == "postgres" and row["env"] == "" and row["created_by"] == "alice"
    listed = {r["name"]: r for r in store.list()}
    assert name in listed and "pa:ss" not in str(listed)
    with psycopg.connect(settings.database_url) as conn:
        blob, display = conn.execute(
            "SELECT ciphertext, display FROM nexusflow_connections WHERE name = %s", (name,)
        ).fetchone()
    assert b"pa:ss" not in bytes(blob) and b"reporter" not in bytes(blob)
    assert "pa:ss" not in display
    found = store.resolve(name, run_id=None)
    assert found.url == "postgresql://reporter:pa%3Ass%2Fw%40rd-7781@db.example:5432/sales"
    assert "pa:ss/w@rd-7781" in found.values and found.url in found.values
    # psycopg reads the quoted password back as it was
    assert psycopg.conninfo.conninfo_to_dict(found.url)["password"] == "pa:ss/w@rd-7781"


def test_a_ciphertext_copied_onto_another_name_does_not_decrypt(store, settings):
    a, b = _name(), _name()
    store.add(a, kind="postgres", url="postgresql://u:one-password@h/db")
    store.add(b, kind="postgres", url="postgresql://u:two-password@h/db")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE nexusflow_connections SET ciphertext = (SELECT ciphertext FROM"
            " nexusflow_connections WHERE name = %s) WHERE name = %s",
            (a, b),
        )
    with pytest.raises(SecretKeyError):
        store.resolve(b, run_id=None)


def test_an_environment_has_its_own_connection_and_falls_back_to_every_environments(store):
    name = _name()
    store.add(name, kind="postgres", url="postgresql://u:shared-pw@shared/db")
    store.add(name, kind="postgres", url="postgresql://u:prod-pw@prod/db", env="prod")
    assert "prod/db" in store.resolve(name, run_id=None, env="prod").url
    assert "shared/db" in store.resolve(name, run_id=None, env="staging").url
    assert "shared/db" in store.resolve(name, run_id=None, env="").url
    assert {(r["env"]) for r in store.list(env="prod") if r["name"] == name} == {"", "prod"}
    store.remove(name, "prod")
    assert "shared/db" in store.resolve(name, run_id=None, env="prod").url
    with pytest.raises(NotFoundError, match="in environment 'prod'"):
        store.remove(name, "prod")


def test_http_connections_keep_their_headers_secret(store):
    name = _name()
    row = store.add(
        name,
        kind="http",
        url="https://api.example.com/v1",
        headers={"Authorization": "Bearer tok-123456"},
    )
    assert row["display"] == "https://api.example.com/v1 (headers: Authorization)"
    found = store.resolve(name, run_id=None)
    assert found.headers == {"Authorization": "Bearer tok-123456"}
    assert "Bearer tok-123456" in found.values


@pytest.mark.parametrize(
    ("kind", "url", "extra", "pointer"),
    [
        ("mysql", "mysql://h/db", {}, "/kind"),
        ("postgres", "https://h/db", {}, "/url"),
        ("http", "ftp://h/", {}, "/url"),
        ("postgres", "postgresql://h:99999/db", {}, "/url"),
        ("postgres", "postgresql://h/db", {"password": "pw"}, "/url"),
        ("http", "https://h/", {"password": "pw"}, "/password"),
        ("postgres", "postgresql://u@h/db", {"headers": {"A": "b"}}, "/headers"),
        ("http", "https://h/", {"headers": {"X-A": "b\r\nInjected: 1"}}, "/headers/X-A"),
    ],
)
def test_bad_connections_are_refused_naming_the_field(kind, url, extra, pointer) -> None:
    with pytest.raises(NexusFlowError) as info:
        check_config(kind, url, extra.get("password"), extra.get("headers"))
    assert info.value.pointer == pointer, str(info.value)  # type: ignore[attr-defined]


def test_bad_names_and_missing_connections(store) -> None:
    with pytest.raises(NexusFlowError, match="invalid"):
        store.add("1bad name", kind="postgres", url="postgresql://h/db")
    with pytest.raises(NexusFlowError, match="environment name"):
        store.add("ok", kind="postgres", url="postgresql://h/db", env="Prod!")
    with pytest.raises(NotFoundError, match="no connection named 'nope'"):
        store.resolve("nope", run_id=None)


def test_a_run_masker_masks_a_connections_password(store, settings) -> None:
    name = _name()
    store.add(name, kind="postgres", url="postgresql://u:masked-pw-991@h/db")
    masker = RunSecrets(run_values(SecretStore(settings), store)).masker(
        str(uuid.uuid4()), {f"connection:{name}"}
    )
    assert masker.text("error: password masked-pw-991 refused") == "error: password *** refused"


def test_the_encrypted_columns_are_listed_for_key_rotation(settings, store) -> None:
    """``nexusflow secrets rotate-key`` re-encrypts what ENCRYPTED_COLUMNS lists: every entry
    names a real table and column, and its associated data decrypts what is stored there."""
    name = _name()
    store.add(name, kind="postgres", url="postgresql://u:rot-pw@h/db", env="prod")
    SecretStore(settings).set(name, "secret-value", env="prod")
    cipher = store.secrets.cipher
    with psycopg.connect(settings.database_url) as conn:
        for col in ENCRYPTED_COLUMNS:
            rows = conn.execute(
                f"SELECT {', '.join(col.key)}, {col.column} FROM {col.table}"
                f" WHERE {col.column} IS NOT NULL"
            ).fetchall()
            for row in rows:
                if col.table != "nexusflow_webhooks" and name not in row:
                    continue
                cipher.decrypt(row[-1], col.associated(*row[:-1]))

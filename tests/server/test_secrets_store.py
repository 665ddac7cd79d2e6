"""SecretStore: encryption at rest, generated key file, rotation, masking, the CLI."""

from __future__ import annotations

import json
import stat
from dataclasses import replace

import psycopg
import pytest
from click.testing import CliRunner

from nexusflow_kernel.cli.secrets import secrets_cli
from nexusflow_kernel.errors import NotFoundError
from nexusflow_kernel.secrets import (
    SecretKeyError,
    SecretStore,
    generate_key,
    mask,
    mask_value,
)


def test_values_are_encrypted_bound_to_their_name_and_rotatable(settings, database_url) -> None:
    store = SecretStore(settings)
    store.set("DB_PASSWORD", "hunter2-very-secret", actor="alice")
    key_file = settings.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert store.get("DB_PASSWORD") == "hunter2-very-secret"
    assert [r["name"] for r in store.list()] == ["DB_PASSWORD"]
    assert "hunter2" not in json.dumps(store.list())
    with psycopg.connect(database_url) as conn:
        blob = conn.execute("SELECT ciphertext FROM nexusflow_secrets"
                            " WHERE name='DB_PASSWORD'").fetchone()[0]
        assert b"hunter2" not in bytes(blob)
        # a ciphertext copied onto another name does not decrypt
        conn.execute("INSERT INTO nexusflow_secrets (name, ciphertext) VALUES ('OTHER', %s)",
                     (blob,))
    with pytest.raises(SecretKeyError):
        store.get("OTHER")
    old_key = key_file.read_text().strip()
    rotated = SecretStore(replace(settings, secret_key=f"{generate_key()},{old_key}"))
    assert rotated.get("DB_PASSWORD") == "hunter2-very-secret"
    rotated.set("NEW", "v" * 10)
    with pytest.raises(SecretKeyError):
        SecretStore(replace(settings, secret_key=generate_key())).get("DB_PASSWORD")
    with pytest.raises(NotFoundError):
        store.get("MISSING")
    store.delete("DB_PASSWORD")
    with pytest.raises(NotFoundError):
        store.delete("DB_PASSWORD")


def test_mask_replaces_every_known_value() -> None:
    text = 'token=abc123 and "quote\\"d" abc123 and a'
    assert mask(text, ["abc123", 'quote"d', "a"]) == 'token=*** and "***" *** and a'
    assert mask_value({"k": ["xx abc123"], "abc123": 1}, ["abc123"]) == {"k": ["xx ***"],
                                                                        "***": 1}
    assert mask("", ["abc"]) == ""


def test_cli_set_list_delete(settings, monkeypatch) -> None:
    for key, value in {"NEXUSFLOW_DATABASE_URL": settings.database_url,
                       "NEXUSFLOW_REDIS_URL": settings.redis_url,
                       "NEXUSFLOW_DATA_DIR": str(settings.data_dir)}.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    out = runner.invoke(secrets_cli, ["set", "CLI_TOKEN"], input="from-stdin-value\n")
    assert out.exit_code == 0, out.output
    listed = runner.invoke(secrets_cli, ["list", "--json"])
    assert json.loads(listed.output)["secrets"][0]["name"] == "CLI_TOKEN"
    assert "from-stdin-value" not in listed.output
    assert SecretStore(settings).get("CLI_TOKEN") == "from-stdin-value"
    assert runner.invoke(secrets_cli, ["delete", "CLI_TOKEN"]).exit_code == 0
    assert runner.invoke(secrets_cli, ["set", "bad name", "--value", "x"]).exit_code != 0

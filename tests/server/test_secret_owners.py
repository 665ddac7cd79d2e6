"""Issue #13/#14 follow-up: an unscoped secret is its creator's.

On a shared JupyterHub every run reads an unscoped secret (``DB_URL``, ``API_TOKEN``). Before,
any user with the ``nexusflow:secrets`` permission could replace or delete one: bob put a URL of
his own under alice's ``DB_URL`` and received what alice's runs sent there. Now only the user
who created it, or an administrator, replaces or deletes it; a group-scoped secret stays its
groups' members', an environment's own its deployers', and a new name anyone's. Connections
every run may use were already the administrators' alone: the same attack is tried on them.
The rule is applied in the transaction that writes, to the locked row (a secret created by
someone else between the check and the write is refused too).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nftest import settings_env
from traitlets.config import Config

from tests.server.conftest import hub_users_config

ROOT = Path(__file__).resolve().parents[2]
ALICE_URL = "postgresql://app:alice-pw-5521@db.alice.example/sales"
BOB_URL = "postgresql://app:bob-pw-7730@harvest.bob.example/take"
ALICE = {"X-Test-Groups": "finance,staff"}
BOB = {"X-Test-Groups": "staff"}


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return hub_users_config(nf_config)


def stored(nf_app, name: str, env: str = "") -> dict[str, Any]:
    """The secret as PostgreSQL keeps it: its ciphertext decrypted, who created and updated
    it, its groups."""
    from psycopg.rows import tuple_row

    from nexusflow_kernel.secrets import secret_associated

    store = nf_app.secrets()
    with store._pool.connection() as conn:
        blob, created_by, updated_by, groups = conn.cursor(row_factory=tuple_row).execute(
            "SELECT ciphertext, created_by, updated_by, scope_groups FROM nexusflow_secrets"
            " WHERE name = %s AND env = %s", (name, env)).fetchone()
        conn.commit()
    return {"value": store.cipher.decrypt(blob, secret_associated(env, name)),
            "created_by": created_by, "updated_by": updated_by, "groups": list(groups)}


async def test_another_user_cannot_replace_or_delete_an_unscoped_secret(api, nf_app) -> None:
    code, body = await api("PUT", "secrets/DB_URL", {"value": ALICE_URL}, user="alice",
                           headers=ALICE)
    assert code == 204, body
    assert stored(nf_app, "DB_URL")["created_by"] == "alice"

    # bob points alice's DB_URL at his server: refused, whichever way he asks
    for payload in ({"value": BOB_URL}, {"value": BOB_URL, "groups": ["staff"]},
                    {"value": BOB_URL, "groups": []}):
        code, err = await api("PUT", "secrets/DB_URL", payload, user="bob", headers=BOB)
        assert code == 403, (payload, err)
        assert "'DB_URL'" in err["message"] and "'alice'" in err["message"], err
        assert "administrator" in err["message"], err
    code, err = await api("DELETE", "secrets/DB_URL", user="bob", headers=BOB)
    assert code == 403 and "'alice'" in err["message"], err
    assert stored(nf_app, "DB_URL") == {"value": ALICE_URL, "created_by": "alice",
                                        "updated_by": "alice", "groups": []}

    # bob creates a name of his own, and alice cannot touch his
    code, _ = await api("PUT", "secrets/BOB_TOKEN", {"value": "bob-1"}, user="bob", headers=BOB)
    assert code == 204
    code, err = await api("PUT", "secrets/BOB_TOKEN", {"value": "x"}, user="alice",
                          headers=ALICE)
    assert code == 403 and "'bob'" in err["message"], err
    code, _ = await api("PUT", "secrets/BOB_TOKEN", {"value": "bob-2"}, user="bob", headers=BOB)
    assert code == 204 and stored(nf_app, "BOB_TOKEN")["value"] == "bob-2"

    # the creator replaces hers; an administrator replaces it too, and it stays alice's
    code, _ = await api("PUT", "secrets/DB_URL", {"value": ALICE_URL + "2"}, user="alice",
                        headers=ALICE)
    assert code == 204 and stored(nf_app, "DB_URL")["value"] == ALICE_URL + "2"
    code, _ = await api("PUT", "secrets/DB_URL", {"value": ALICE_URL + "3"}, user="root")
    assert code == 204
    assert stored(nf_app, "DB_URL") == {"value": ALICE_URL + "3", "created_by": "alice",
                                        "updated_by": "root", "groups": []}
    code, err = await api("PUT", "secrets/DB_URL", {"value": BOB_URL}, user="bob", headers=BOB)
    assert code == 403, err
    # an administrator deletes bob's, alice deletes hers
    assert (await api("DELETE", "secrets/BOB_TOKEN", user="root"))[0] == 204
    assert (await api("DELETE", "secrets/DB_URL", user="alice", headers=ALICE))[0] == 204
    assert nf_app.secrets().list() == []
    code, err = await api("DELETE", "secrets/DB_URL", user="bob", headers=BOB)
    assert code == 404, err

    # a secret with no recorded creator (written straight to the database without an actor):
    # the administrators'
    nf_app.secrets().set("LEGACY", "old-value")
    code, err = await api("PUT", "secrets/LEGACY", {"value": BOB_URL}, user="bob", headers=BOB)
    assert code == 403 and "no recorded creator" in err["message"], err
    assert stored(nf_app, "LEGACY")["value"] == "old-value"
    assert (await api("DELETE", "secrets/LEGACY", user="root"))[0] == 204


async def test_group_and_environment_secrets_keep_their_rules(api, nf_app) -> None:
    # a team's secret: any member of its groups changes it, not only its creator
    code, _ = await api("PUT", "secrets/FIN_TOKEN", {"value": "fin-1", "groups": ["finance"]},
                        user="alice", headers=ALICE)
    assert code == 204
    code, _ = await api("PUT", "secrets/FIN_TOKEN", {"value": "fin-2"}, user="carol",
                        headers={"X-Test-Groups": "finance"})
    assert code == 204
    code, err = await api("PUT", "secrets/FIN_TOKEN", {"value": BOB_URL}, user="bob",
                          headers=BOB)
    assert code == 403 and "finance" in err["message"], err
    assert stored(nf_app, "FIN_TOKEN")["value"] == "fin-2"
    # a member does not hand the team's secret to every run (groups []): administrators do
    code, err = await api("PUT", "secrets/FIN_TOKEN", {"value": "fin-3", "groups": []},
                          user="carol", headers={"X-Test-Groups": "finance"})
    assert code == 403 and "only an administrator may make it readable" in err["message"], err
    assert stored(nf_app, "FIN_TOKEN")["value"] == "fin-2"
    assert nf_app.secrets().groups_of("FIN_TOKEN") == ["finance"]
    code, _ = await api("PUT", "secrets/FIN_TOKEN", {"value": "fin-4", "groups": []},
                        user="root")
    assert code == 204 and nf_app.secrets().groups_of("FIN_TOKEN") == []
    # an environment's own secret: its deployers', whoever created it
    assert (await api("POST", "envs", {"name": "prod"}, user="root"))[0] == 201
    code, _ = await api("PUT", "envs/prod/roles/group:ops", {"role": "deployer"}, user="root")
    assert code == 200
    ops = {"X-Test-Groups": "ops"}
    code, _ = await api("PUT", "secrets/token", {"value": "prod-1"}, user="dave", headers=ops,
                        params={"env": "prod"})
    assert code == 204
    code, _ = await api("PUT", "secrets/token", {"value": "prod-2"}, user="erin", headers=ops,
                        params={"env": "prod"})
    assert code == 204 and stored(nf_app, "token", "prod")["value"] == "prod-2"
    code, err = await api("PUT", "secrets/token", {"value": BOB_URL}, user="bob", headers=BOB,
                          params={"env": "prod"})
    assert code == 403 and "deployer" in err["message"], err
    assert stored(nf_app, "token", "prod")["value"] == "prod-2"


def test_a_secret_created_between_the_check_and_the_write_is_checked(settings,
                                                                      database_url) -> None:
    """The rule sees the row the write replaces: bob's request finds no DB_URL, alice creates
    it before bob's insert, and bob's write is checked against alice's secret and refused."""
    from nexusflow_kernel.errors import NexusFlowError
    from nexusflow_kernel.secrets import SecretStore

    store = SecretStore(settings)
    seen: list[Any] = []

    def bobs_rule(current: dict[str, Any] | None) -> None:
        seen.append(current)
        if current is None:  # alice's request commits while bob's is between check and write
            SecretStore(settings).set("DB_URL", ALICE_URL, actor="alice")
        elif current["created_by"] != "bob":
            raise NexusFlowError(f"secret {current['name']!r} is {current['created_by']}'s")

    with pytest.raises(NexusFlowError, match="alice's"):
        store.set("DB_URL", BOB_URL, actor="bob", authorize=bobs_rule)
    assert seen == [None, {"name": "DB_URL", "env": "", "created_by": "alice", "groups": []}]
    assert store.get("DB_URL") == ALICE_URL
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT created_by, updated_by FROM nexusflow_secrets"
                            " WHERE name = 'DB_URL'").fetchall() == [("alice", "alice")]
    # a refused delete leaves it too
    with pytest.raises(NexusFlowError):
        store.delete("DB_URL", authorize=bobs_rule)
    assert store.get("DB_URL") == ALICE_URL


def test_the_cli_records_who_set_a_secret(settings, database_url) -> None:
    """The operator's ``nexusflow secrets set`` on the database records its actor (the Hub
    user of a Hub terminal, else the OS user), so the secret has an owner."""
    env = {**settings_env(settings), "JUPYTERHUB_USER": "alice"}
    done = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "secrets", "set",
                           "CLI_URL"], input=ALICE_URL + "\n", env=env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT created_by, updated_by FROM nexusflow_secrets"
                            " WHERE name = 'CLI_URL'").fetchall() == [("alice", "alice")]


async def test_another_user_cannot_replace_or_delete_an_unscoped_connection(api,
                                                                            nf_app) -> None:
    put = {"kind": "postgres", "url": ALICE_URL}
    code, row = await api("PUT", "connections/warehouse", put, user="root")
    assert code == 200 and row["created_by"] == "root", row

    def url(name: str) -> str:
        return nf_app.connections()._load(name, "", exact=True).url

    for payload in ({"kind": "postgres", "url": BOB_URL},
                    {"kind": "postgres", "url": BOB_URL, "groups": ["staff"]}):
        code, err = await api("PUT", "connections/warehouse", payload, user="bob", headers=BOB)
        assert code == 403, (payload, err)
        assert "'warehouse'" in err["message"] and "administrator" in err["message"], err
    code, err = await api("DELETE", "connections/warehouse", user="bob", headers=BOB)
    assert code == 403 and "administrator" in err["message"], err
    assert url("warehouse") == ALICE_URL
    # an administrator replaces it; bob adds one of his own for his group, and changes it
    code, row = await api("PUT", "connections/warehouse", {**put, "url": ALICE_URL + "2"},
                          user="root")
    assert code == 200 and url("warehouse") == ALICE_URL + "2"
    code, row = await api("PUT", "connections/bobs", {**put, "groups": ["staff"]}, user="bob",
                          headers=BOB)
    assert code == 200 and row["created_by"] == "bob", row
    code, err = await api("PUT", "connections/bobs", {**put, "url": BOB_URL, "groups": ["finance"]},
                          user="alice", headers={"X-Test-Groups": "finance"})
    assert code == 403 and "staff" in err["message"], err
    assert url("bobs") == ALICE_URL
    code, err = await api("PUT", "connections/mine", put, user="bob", headers=BOB)
    assert code == 403 and "administrator" in err["message"], err
    assert (await api("DELETE", "connections/bobs", user="bob", headers=BOB))[0] == 204
    assert (await api("DELETE", "connections/warehouse", user="root"))[0] == 204
    assert nf_app.connections().list() == []

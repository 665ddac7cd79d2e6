"""Hub identity and group-scoped secrets without a Hub: principals, scopes, the worker's check."""

from __future__ import annotations

import pytest

from tests.conftest import flow, node


def test_identity_from_a_hub_user_model() -> None:
    from nexusflow_server.hub import Identity, identity_of

    class HubUser:
        username = "alice"
        hub_user = {"name": "alice", "groups": ["staff", "finance"],
                    "scopes": ["access:servers!server=alice/", "custom:nexusflow:runner",
                               "custom:nexusflow:viewer", "custom:nexusflow:owner!user=bob"]}

    ident = identity_of(HubUser())
    assert ident.hub and ident.groups == ("finance", "staff")
    assert ident.principals == ("alice", "*", "group:finance", "group:staff")
    assert ident.scope_role == "runner"  # the filtered owner scope does not count
    assert not ident.admin
    assert Identity("x", scopes=frozenset({"custom:nexusflow:admin"})).scope_role == "owner"

    class Plain:
        username = "bob"

    assert identity_of(Plain()) == Identity("bob")


def test_group_scoped_secret_is_checked_against_the_runs_user(settings, engine) -> None:
    from nexusflow_server.hub import Identity, record_principal

    from nexusflow_kernel.secrets import SecretScopeError, SecretStore

    store = SecretStore(engine.pool, settings=settings)
    store.set("TEAM", "s3cr3t-team", groups=["finance"])
    store.set("OPEN", "s3cr3t-open")
    store.set("TEAM", "s3cr3t-team2")  # groups=None keeps the scope
    scopes = {r["name"]: r["groups"] for r in store.list() if r["name"] in ("OPEN", "TEAM")}
    assert scopes == {"OPEN": [], "TEAM": ["finance"]}

    graph = flow(node("A", "noop"))
    record_principal(engine.pool, Identity("alice", ("finance",), hub=True))
    record_principal(engine.pool, Identity("bob", ("staff",), hub=True))
    alice_run = engine.start_run(graph, actor="alice")
    bob_run = engine.start_run(graph, actor="bob")
    hook_run = engine.start_run(graph, actor="webhook:wh_x")

    assert store.get("TEAM", run_id=alice_run) == "s3cr3t-team2"
    assert store.get("OPEN", run_id=bob_run) == "s3cr3t-open"
    for run_id, who in ((bob_run, "'bob'"), (hook_run, "'webhook:wh_x'")):
        with pytest.raises(SecretScopeError, match=who):
            store.get("TEAM", run_id=run_id)
    with pytest.raises(SecretScopeError, match="only a run"):
        store.get("TEAM")  # outside a worker's job there is no run to check
    # Leaving the group takes effect with the next record (the next run start).
    record_principal(engine.pool, Identity("alice", (), hub=True))
    with pytest.raises(SecretScopeError):
        store.get("TEAM", run_id=alice_run)

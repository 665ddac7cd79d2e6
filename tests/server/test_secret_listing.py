"""Issue #13, finding 7: a user lists only the secrets their runs may use.

Group-scoped secrets (a Hub team's) are listed to members of one of their groups and to
administrators; unscoped secrets, which every run may read, to everyone. Before, every user saw
every secret's name, groups and creator.
"""

from __future__ import annotations

import pytest
from traitlets.config import Config

from tests.server.conftest import hub_users_config


@pytest.fixture
def jp_server_config(nf_config) -> Config:
    return hub_users_config(nf_config)


async def listed(api, user: str, groups: str) -> dict[str, dict]:
    code, body = await api("GET", "secrets", user=user, headers={"X-Test-Groups": groups})
    assert code == 200, body
    return {s["name"]: s for s in body["secrets"]}


async def test_users_list_only_the_secrets_their_runs_may_use(api) -> None:
    for name, groups, user, member in (("FIN_TOKEN", ["finance"], "alice", "finance,staff"),
                                       ("OPS_KEY", ["ops"], "carol", "ops"),
                                       ("SHARED_URL", [], "alice", "finance,staff")):
        code, body = await api("PUT", f"secrets/{name}", {"value": f"v-{name}", "groups": groups},
                               user=user, headers={"X-Test-Groups": member})
        assert code == 204, body

    bob = await listed(api, "bob", "staff")
    assert set(bob) == {"SHARED_URL"}  # was: FIN_TOKEN and OPS_KEY too, with their creators
    alice = await listed(api, "alice", "finance,staff")
    assert set(alice) == {"FIN_TOKEN", "SHARED_URL"}
    assert alice["FIN_TOKEN"]["groups"] == ["finance"]
    assert set(await listed(api, "carol", "ops")) == {"OPS_KEY", "SHARED_URL"}
    assert set(await listed(api, "root", "")) == {"FIN_TOKEN", "OPS_KEY", "SHARED_URL"}
    # Changing a team's secret stays refused to outsiders (they cannot see its name either).
    code, err = await api("PUT", "secrets/FIN_TOKEN", {"value": "x"}, user="bob",
                          headers={"X-Test-Groups": "staff"})
    assert code == 403, err

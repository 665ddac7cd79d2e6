"""Issue #17 item 1: the environment store on the real PostgreSQL (variables, roles, checks)."""

from __future__ import annotations

import uuid

import pytest

from nexusflow_kernel.engine import Engine
from nexusflow_kernel.environments import (
    EnvironmentError,
    UnknownEnvironment,
    variable_refs,
)
from nexusflow_kernel.errors import NexusFlowError, NotFoundError


def test_variable_refs_are_found_in_expressions_and_templates() -> None:
    config = {"expression": "env['A'] + env[\"B\"]", "url": "https://{{ env[ 'HOST' ] }}/x",
              "nested": [{"v": "{{ params['env'] }}"}, "envelope['C']", "my_env['D']"]}
    assert variable_refs(config) == {"A", "B", "HOST"}


def test_environments_variables_and_roles(settings) -> None:
    envs = Engine(settings).environments
    name = f"qa_{uuid.uuid4().hex[:6]}"
    row = envs.create(name, description="quality", actor="root")
    assert row["restricted"] is True and row["vars"] == {} and row["created_by"] == "root"
    with pytest.raises(EnvironmentError, match="exists already"):
        envs.create(name)
    with pytest.raises(NexusFlowError, match="environment name"):
        envs.create("QA!")
    envs.set_var(name, "LIMIT", 5)
    envs.set_var(name, "HOSTS", ["a", "b"])
    envs.set_var(name, "LIMIT", 6)
    assert envs.get(name)["vars"] == {"LIMIT": 6, "HOSTS": ["a", "b"]}
    envs.unset_var(name, "HOSTS")
    with pytest.raises(NotFoundError, match="no variable 'HOSTS'"):
        envs.unset_var(name, "HOSTS")
    with pytest.raises(EnvironmentError, match="variable name"):
        envs.set_var(name, "9lives", 1)
    with pytest.raises(UnknownEnvironment, match=f"unknown environment 'nope'.*{name}"):
        envs.set_var("nope", "A", 1)
    envs.grant(name, "group:ops", "deployer", actor="root")
    envs.grant(name, "alice", "runner")
    assert envs.role_of(name, ["bob", "*", "group:ops"]) == "deployer"
    assert envs.role_of(name, ["alice", "*"]) == "runner"
    assert envs.role_of(name, ["carol", "*"]) is None
    with pytest.raises(EnvironmentError, match="not an environment role"):
        envs.grant(name, "alice", "owner")
    envs.revoke(name, "alice")
    assert envs.role_of(name, ["alice"]) is None
    listed = {e["name"]: e for e in envs.list()}
    assert "dev" in listed and listed["dev"]["restricted"] is False
    assert listed[name]["roles"] == [{"principal": "group:ops", "role": "deployer"}]
    with pytest.raises(EnvironmentError, match="cannot be deleted"):
        envs.delete("dev")
    envs.delete(name)
    with pytest.raises(UnknownEnvironment):
        envs.get(name)

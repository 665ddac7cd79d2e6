"""Issue #17 item 2 in the engine: promotion decides which version an environment runs.

Versions 1, 2 and a newer draft 3 of one workflow; promoting, previewing (dry run), rolling
back; runs of the environment started without a version run the promoted one; a version that
does not compile, or that needs what the environment lacks, is refused with one error.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from nftest import flow, node, wait_run

from nexusflow_kernel.engine import Engine
from nexusflow_kernel.environments import EnvironmentError, UnknownEnvironment
from nexusflow_kernel.errors import FlowError, NotFoundError


def _doc(label: str, **extra) -> dict:
    return flow(node("A", expression=f"'{label}'"), name="promoted", **extra)


def test_promote_preview_rollback_and_runs(settings, workers, database_url) -> None:
    engine = Engine(settings)
    prod, stage = f"prod_{uuid.uuid4().hex[:6]}", f"stage_{uuid.uuid4().hex[:6]}"
    engine.environments.create(prod)
    engine.environments.create(stage)
    v1 = engine.save_workflow(_doc("v1"))
    wid = v1["workflow_id"]
    engine.save_workflow(_doc("v2"), workflow_id=wid)
    engine.save_workflow(_doc("draft"), workflow_id=wid)  # the latest: never run by prod

    first = engine.promote(wid, 1, prod, actor="ops", note="first release")
    assert first["from_version"] is None and first["promotion"]["promoted_by"] == "ops"
    workers.start(1)
    run = wait_run(engine, engine.start_run(workflow_id=wid, env=prod))
    assert run["version"] == 1 and run["nodes"]["A"]["output"] == "v1" and run["env"] == prod

    preview = engine.promote(wid, 2, prod, actor="ops", dry_run=True)
    assert preview["dry_run"] and preview["from_version"] == 1 and preview["version"] == 2
    assert preview["nodes"]["changed"] == ["A"] and "'v2'" in preview["text"]
    assert "promotion" not in preview
    assert engine.promotions(wid)["current"] == {prod: 1}  # nothing recorded
    engine.promote(wid, 2, prod, actor="ops")
    run = wait_run(engine, engine.start_run(workflow_id=wid, env=prod))
    assert run["version"] == 2 and run["nodes"]["A"]["output"] == "v2"
    again = engine.promote(wid, 2, prod, actor="ops")
    assert again["unchanged"] and "promotion" not in again
    # rollback = promoting an earlier version
    engine.promote(wid, 1, prod, actor="alice", note="rollback")
    run = wait_run(engine, engine.start_run(workflow_id=wid, env=prod))
    assert run["nodes"]["A"]["output"] == "v1"
    history = engine.promotions(wid, prod)["history"]
    assert [(h["version"], h["previous_version"], h["promoted_by"]) for h in history] == [
        (1, 2, "alice"), (2, 1, "ops"), (1, None, "ops")]
    assert history[0]["note"] == "rollback" and history[0]["promoted_at"]
    # dev without a promotion runs the latest; a named environment without one refuses
    run = wait_run(engine, engine.start_run(workflow_id=wid, env="dev"))
    assert run["nodes"]["A"]["output"] == "draft"
    with pytest.raises(EnvironmentError, match=f"no version of workflow {wid} is promoted "
                                               f"to '{stage}'"):
        engine.start_run(workflow_id=wid, env=stage)

    # bad input: one clear error each
    with pytest.raises(UnknownEnvironment, match="unknown environment 'nowhere'"):
        engine.promote(wid, 1, "nowhere")
    with pytest.raises(NotFoundError):
        engine.promote(wid, 99, prod)
    needs = engine.save_workflow(_doc("x", params={}) | {"nodes": [
        node("A", expression="env['LIMIT'] * 2")]}, workflow_id=wid)
    with pytest.raises(EnvironmentError, match="node 'A' reads variable env\\['LIMIT'\\]"):
        engine.promote(wid, needs["version"], prod)
    engine.environments.set_var(prod, "LIMIT", 21)
    engine.promote(wid, needs["version"], prod)
    run = wait_run(engine, engine.start_run(workflow_id=wid, env=prod))
    assert run["nodes"]["A"]["output"] == 42
    # a stored version that no longer compiles (its node type is gone from this install)
    broken = engine.save_workflow(_doc("broken"), workflow_id=wid)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE workflow_versions SET graph_json = jsonb_set(graph_json,"
                     " '{nodes,0,type}', '\"gone_type\"') WHERE workflow_id = %s"
                     " AND version = %s", (wid, broken["version"]))
    with pytest.raises(FlowError) as info:
        engine.promote(wid, broken["version"], prod)
    assert "does not compile" in str(info.value) and info.value.pointer == "/nodes/0/type"
    assert engine.promotions(wid)["current"][prod] == needs["version"]

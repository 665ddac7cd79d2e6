"""Starting a run from a path reads the live collaborative document when the file is open."""

from __future__ import annotations

import json

import pytest
from nftest import flow, node
from traitlets.config import Config


@pytest.fixture
def jp_server_config(jp_server_config, jp_data_dir) -> Config:
    config = Config(jp_server_config)
    config.ServerApp.jpserver_extensions = {
        "nexusflow_server": True, "jupyter_server_ydoc": True, "jupyter_server_fileid": True,
        "jupyter_server_terminals": False}
    config.BaseFileIdManager.db_path = str(jp_data_dir / "file_id.db")
    return config


async def test_path_run_uses_the_open_collaborative_document(api, jp_serverapp, jp_root_dir,
                                                             engine) -> None:
    saved = flow(node("A", expression="'saved'"), name="live")
    (jp_root_dir / "live.nxflow").write_text(json.dumps(saved))
    ydoc_ext = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_server_ydoc"]))
    live = await ydoc_ext.get_document(path="live.nxflow", content_type="nxflow",
                                       file_format="text", copy=False, create=True)
    assert live is not None
    edited = flow(node("A", expression="'live edit'"), name="live")
    live.set(json.dumps(edited))
    code, started = await api("POST", "runs", {"path": "live.nxflow"})
    assert code == 201, started
    run = engine.get_run(started["run_id"])
    graph = engine.get_workflow(run["workflow_id"], run["version"])["graph"]
    assert graph["nodes"][0]["config"]["expression"] == "'live edit'"

"""The live collaborative document of a path, as runs and the kernel's live link reach it.

Starting a run from a path reads the open room's document. The document API never writes the
file while a room for it exists in any state (loading the file, in its grace period after the
last canvas closed, opened as plain text): with a room the patch goes to the room, and the file
is written only by the room itself. The rooms below are built as jupyter_server_ydoc's
websocket handler builds them, so a test can stop where a canvas's connection would be.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyter_server_ydoc.rooms import DocumentRoom
from jupyter_server_ydoc.utils import encode_file_path, room_id_from_encoded_path
from nftest import flow, node
from traitlets.config import Config

from nexusflow_kernel.model.document import dumps_canonical


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


SAVED = flow(node("A", expression="1"), node("B", expression="2"), name="saved")
NEW_NODE = {"id": "Z", "type": "transform", "position": {"x": 0, "y": 300},
            "config": {"expression": "3"}}
PATCH = {"ops": [{"op": "put_node", "node": NEW_NODE}]}


def ydoc_extension(serverapp):
    return next(iter(serverapp.extension_manager.extension_apps["jupyter_server_ydoc"]))


async def listed_room(serverapp, path: str, file_type: str = "nxflow") -> DocumentRoom:
    """Create, start and list the room of ``path`` as the websocket handler's ``prepare`` does
    when a canvas connects; its ``open`` initializes it (loads the file) only afterwards."""
    ext = ydoc_extension(serverapp)
    server = ext.ywebsocket_server
    if not server.started.is_set():
        asyncio.create_task(server.start())
        await server.started.wait()
    file_id = serverapp.web_app.settings["file_id_manager"].index(path)
    room_id = room_id_from_encoded_path(encode_file_path("text", file_type, file_id))
    room = DocumentRoom(room_id, "text", file_type, ext.file_loaders[file_id],
                        serverapp.event_logger,
                        ext.ystore_class(path=f".{file_type}:{file_id}.y", log=ext.log), ext.log,
                        save_delay=ext.document_save_delay)
    async with ext._room_locks[room_id]:
        await server.start_room(room)
        server.add_room(room_id, room)
    return room


async def initialize(serverapp, room: DocumentRoom) -> None:
    """What the handler's ``open`` does once the websocket is accepted."""
    async with ydoc_extension(serverapp)._room_locks[room.room_id]:
        await room.initialize()


async def test_a_patch_waits_for_a_room_still_loading_the_file(api, jp_serverapp,
                                                               jp_root_dir) -> None:
    path = jp_root_dir / "opening.nxflow"
    path.write_text(dumps_canonical(SAVED))
    saved = path.read_text()
    room = await listed_room(jp_serverapp, "opening.nxflow")
    patch = asyncio.create_task(api("POST", "documents/patch", {"path": "opening.nxflow",
                                                                 **PATCH}))
    read = asyncio.create_task(api("GET", "documents/live", params={"path": "opening.nxflow"}))
    await asyncio.sleep(0.8)
    # Neither answers from the room's empty document, and the file is not written under it.
    assert not patch.done() and not read.done()
    assert path.read_text() == saved
    await initialize(jp_serverapp, room)
    code, got = await asyncio.wait_for(read, 10)
    assert code == 200 and got["live"] is True
    code, got = await asyncio.wait_for(patch, 10)
    assert code == 200, got
    assert got["live"] is True
    assert {n["id"] for n in got["document"]["nodes"]} == {"A", "B", "Z"}
    assert {n["id"] for n in room._document.to_dict()["nodes"]} == {"A", "B", "Z"}


async def test_a_room_that_never_finishes_loading_is_a_409_not_a_file_write(
        api, jp_serverapp, jp_root_dir, monkeypatch) -> None:
    from nexusflow_server import live

    monkeypatch.setattr(live, "ROOM_READY_S", 0.5)
    path = jp_root_dir / "stuck.nxflow"
    path.write_text(dumps_canonical(SAVED))
    saved = path.read_text()
    await listed_room(jp_serverapp, "stuck.nxflow")
    code, got = await api("POST", "documents/patch", {"path": "stuck.nxflow", **PATCH})
    assert code == 409, got
    assert got["pointer"] == "/path" and "still loading" in got["message"]
    assert path.read_text() == saved


async def test_a_patch_in_the_rooms_grace_period_is_saved_before_the_room_goes(
        api, jp_serverapp, jp_root_dir) -> None:
    """The last canvas closed: the handler deletes the room after a delay, cancelling its
    pending autosave. A patch landing in between must reach the file all the same."""
    path = jp_root_dir / "closing.nxflow"
    path.write_text(dumps_canonical(SAVED))
    room = await listed_room(jp_serverapp, "closing.nxflow")
    await initialize(jp_serverapp, room)
    ext = ydoc_extension(jp_serverapp)

    async def clean_room() -> None:  # the handler's _clean_room, with a short delay
        await asyncio.sleep(0.2)
        async with ext._room_locks[room.room_id]:
            await ext.ywebsocket_server.delete_room(room=room)
            del ext._room_locks[room.room_id]

    room.cleaner = asyncio.create_task(clean_room())
    code, got = await api("POST", "documents/patch", {"path": "closing.nxflow", **PATCH})
    assert code == 200, got
    assert got["live"] is True
    await asyncio.wait_for(room.cleaner, 10)
    assert not ext.ywebsocket_server.room_exists(room.room_id)
    await asyncio.sleep(ext.document_save_delay + 0.5)  # an autosave would have run by now
    saved = json.loads(path.read_text())
    assert {n["id"] for n in saved["nodes"]} == {"A", "B", "Z"}
    assert path.read_text() == dumps_canonical(saved)


async def test_a_flow_open_as_plain_text_is_patched_in_its_room(api, jp_serverapp,
                                                               jp_root_dir) -> None:
    path = jp_root_dir / "text.nxflow"
    path.write_text(dumps_canonical(SAVED))
    saved = path.read_text()
    room = await listed_room(jp_serverapp, "text.nxflow", file_type="file")
    await initialize(jp_serverapp, room)
    code, got = await api("POST", "documents/patch", {"path": "text.nxflow", **PATCH})
    assert code == 200, got
    assert got["live"] is True
    text = room._document.get()
    assert {n["id"] for n in json.loads(text)["nodes"]} == {"A", "B", "Z"}
    assert text == dumps_canonical(json.loads(text))
    assert path.read_text() in (saved, text)  # only the room's own autosave writes it


async def test_a_room_whose_file_id_is_lost_is_still_found(api, jp_serverapp,
                                                           jp_root_dir) -> None:
    path = jp_root_dir / "lost.nxflow"
    path.write_text(dumps_canonical(SAVED))
    saved = path.read_text()
    room = await listed_room(jp_serverapp, "lost.nxflow")
    await initialize(jp_serverapp, room)
    ids = jp_serverapp.web_app.settings["file_id_manager"]
    with ids.con:
        ids.con.execute("DELETE FROM Files")  # the path no longer maps to the room's file id
    assert ids.get_id("lost.nxflow") is None
    code, got = await api("POST", "documents/patch", {"path": "lost.nxflow", **PATCH})
    assert code == 200, got
    assert got["live"] is True
    assert {n["id"] for n in room._document.to_dict()["nodes"]} == {"A", "B", "Z"}
    assert path.read_text() in (saved, room._document.get())

"""The document API of the kernel's live link: read and patch a .nxflow file, live when open.

A room opened with ``get_document(..., copy=False, create=True)`` stands for a canvas that has
the file open: the patch must land in that shared document at once (what every canvas renders)
and reach the disk only through the room's own autosave, canonically.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pycrdt import Map
from traitlets.config import Config

import nexusflow_kernel as nf
from nexusflow_kernel.model.document import dumps_canonical
from nexusflow_kernel.notebook.live import LiveLink, ServerInfo

FLOW = {
    "schema": 1,
    "name": "live",
    "nodes": [
        {"id": "A", "type": "transform", "position": {"x": 0, "y": 0},
         "config": {"expression": "1"}},
        {"id": "B", "type": "transform", "position": {"x": 0, "y": 120},
         "config": {"expression": "inputs['A'] + 1"}},
    ],
    "edges": [{"id": "A-B", "source": "A", "target": "B"}],
}
NEW_NODE = {"id": "C", "type": "transform", "position": {"x": 200, "y": 120},
            "config": {"expression": "2"}}


@pytest.fixture
def jp_server_config(jp_server_config, jp_data_dir) -> Config:
    config = Config(jp_server_config)
    config.ServerApp.jpserver_extensions = {
        "nexusflow_server": True, "jupyter_server_ydoc": True, "jupyter_server_fileid": True,
        "jupyter_server_terminals": False}
    config.BaseFileIdManager.db_path = str(jp_data_dir / "file_id.db")
    config.YDocExtension.document_save_delay = 0.3
    return config


@pytest.fixture
def write(jp_root_dir):
    def write(name: str, flow: dict | str = FLOW) -> str:
        path = jp_root_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(flow if isinstance(flow, str) else dumps_canonical(flow))
        return path.read_text()

    return write


async def open_room(serverapp, path: str):
    """Open the collaborative room of ``path`` as a canvas would; return its live document."""
    ext = next(iter(serverapp.extension_manager.extension_apps["jupyter_server_ydoc"]))
    doc = await ext.get_document(path=path, content_type="nxflow", file_format="text",
                                 copy=False, create=True)
    assert doc is not None
    return doc


async def wait_until(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_without_a_room_the_file_is_read_and_patched_canonically(api, jp_root_dir,
                                                                       write) -> None:
    write("flows/f.nxflow")
    code, got = await api("GET", "documents/live", params={"path": "flows/f.nxflow"})
    assert code == 200, got
    assert got["live"] is False and got["document"] == json.loads(dumps_canonical(FLOW))

    ops = [{"op": "put_node", "node": {**NEW_NODE, "position": {"x": 200.0, "y": 120.0}}},
           {"op": "put_edge", "edge": {"id": "A-C", "source": "A", "target": "C"}},
           {"op": "set", "key": "description", "value": "patched"}]
    code, got = await api("POST", "documents/patch", {"path": "flows/f.nxflow", "ops": ops})
    assert code == 200, got
    assert got["live"] is False and got["applied"] == 3
    expected = {**FLOW, "description": "patched", "nodes": FLOW["nodes"] + [NEW_NODE],
                "edges": FLOW["edges"] + [{"id": "A-C", "source": "A", "target": "C"}]}
    assert (jp_root_dir / "flows/f.nxflow").read_text() == dumps_canonical(expected)
    assert got["document"] == json.loads(dumps_canonical(expected))

    # deleting a node deletes its edges; null removes a field
    code, got = await api("POST", "documents/patch", {"path": "flows/f.nxflow", "ops": [
        {"op": "delete_node", "id": "A"}, {"op": "set", "key": "description", "value": None}]})
    assert code == 200, got
    assert [n["id"] for n in got["document"]["nodes"]] == ["B", "C"]
    assert got["document"]["edges"] == [] and "description" not in got["document"]
    assert (jp_root_dir / "flows/f.nxflow").read_text() == dumps_canonical(got["document"])


async def test_missing_files_404_unless_created(api, jp_root_dir) -> None:
    code, got = await api("GET", "documents/live", params={"path": "nope.nxflow"})
    assert code == 404 and got["error"] == "NotFoundError"
    body = {"path": "new.nxflow", "ops": [{"op": "set", "key": "name", "value": "new"}]}
    code, got = await api("POST", "documents/patch", body)
    assert code == 404 and got["error"] == "NotFoundError"
    assert not (jp_root_dir / "new.nxflow").exists()
    code, got = await api("POST", "documents/patch", {**body, "create": True})
    assert code == 200, got
    assert (jp_root_dir / "new.nxflow").read_text() == dumps_canonical(
        {"schema": 1, "name": "new", "nodes": [], "edges": []})
    code, got = await api("POST", "documents/patch", {**body, "path": "no/such/dir.nxflow",
                                                      "create": True})
    assert code in (400, 404) and got["message"], got


async def test_an_open_room_is_patched_live_and_saved_by_its_autosave(
        api, jp_serverapp, jp_root_dir, write) -> None:
    saved = write("open.nxflow")
    doc = await open_room(jp_serverapp, "open.nxflow")
    # A collaborator's unsaved edit of another node must survive the kernel's patch.
    nodes = doc.ydoc.get("nodes", type=Map)
    nodes["B"]["label"] = "edited on the canvas"
    code, got = await api("GET", "documents/live", params={"path": "open.nxflow"})
    assert code == 200 and got["live"] is True
    assert got["document"]["nodes"][1]["label"] == "edited on the canvas"

    code, got = await api("POST", "documents/patch", {"path": "open.nxflow", "ops": [
        {"op": "put_node", "node": NEW_NODE},
        {"op": "put_edge", "edge": {"id": "B-C", "source": "B", "target": "C"}}]})
    assert code == 200, got
    assert got["live"] is True and got["applied"] == 2
    live = doc.to_dict()  # what every open canvas renders, right now
    assert {n["id"] for n in live["nodes"]} == {"A", "B", "C"}
    assert {e["id"] for e in live["edges"]} == {"A-B", "B-C"}
    assert next(n for n in live["nodes"] if n["id"] == "B")["label"] == "edited on the canvas"
    assert got["document"] == json.loads(doc.get())

    # The handler never wrote the file itself; the room's autosave does, canonically.
    path = jp_root_dir / "open.nxflow"
    assert path.read_text() == saved
    assert await wait_until(lambda: path.read_text() == doc.get())
    text = path.read_text()
    assert text == dumps_canonical(json.loads(text))
    assert '"C"' in text and ".0," not in text

    # Replacing a node keeps it one node; deleting it drops its edges, live.
    code, got = await api("POST", "documents/patch", {"path": "open.nxflow", "ops": [
        {"op": "put_node", "node": {**NEW_NODE, "label": "renamed"}}]})
    assert code == 200
    assert [n.get("label") for n in doc.to_dict()["nodes"] if n["id"] == "C"] == ["renamed"]
    code, got = await api("POST", "documents/patch", {"path": "open.nxflow", "ops": [
        {"op": "delete_node", "id": "C"}]})
    assert code == 200
    assert {e["id"] for e in doc.to_dict()["edges"]} == {"A-B"}


BAD_BODIES = [
    ({"ops": []}, "/path"),
    ({"path": "../up.nxflow", "ops": []}, "/path"),
    ({"path": "/etc/abs.nxflow", "ops": []}, "/path"),
    ({"path": "flows/x.json", "ops": []}, "/path"),
    ({"path": "f.nxflow"}, "/ops"),
    ({"path": "f.nxflow", "ops": {"op": "set"}}, "/ops"),
    ({"path": "f.nxflow", "ops": ["put_node"]}, "/ops/0"),
    ({"path": "f.nxflow", "ops": [{"op": "explode"}]}, "/ops/0/op"),
    ({"path": "f.nxflow", "ops": [{"op": "put_node"}]}, "/ops/0/node"),
    ({"path": "f.nxflow", "ops": [{"op": "put_node", "node": {"id": "bad id!", "type": "x"}}]},
     "/ops/0/node/id"),
    ({"path": "f.nxflow", "ops": [{"op": "set", "key": "name", "value": "ok"},
                                  {"op": "put_node", "node": {"id": "N"}}]}, "/ops/1/node"),
    ({"path": "f.nxflow", "ops": [{"op": "put_edge", "edge": {"id": "e", "source": "A"}}]},
     "/ops/0/edge"),
    ({"path": "f.nxflow", "ops": [{"op": "delete_node", "id": 3}]}, "/ops/0/id"),
    ({"path": "f.nxflow", "ops": [{"op": "set", "key": "nodes", "value": []}]}, "/ops/0/key"),
    ({"path": "f.nxflow", "ops": [{"op": "set", "key": "name", "value": 5}]}, "/ops/0/value"),
    ({"path": "f.nxflow", "ops": [{"op": "set", "key": "name"}]}, "/ops/0/value"),
    ({"path": "f.nxflow", "ops": [{"op": "put_node", "node": NEW_NODE},
                                  {"op": "put_edge", "edge": {"id": "C-Z", "source": "C",
                                                              "target": "Z"}}]},
     "/ops/1/edge/target"),
    ({"path": "f.nxflow", "ops": [], "create": "yes"}, "/create"),
]


@pytest.mark.parametrize("live", [False, True])
async def test_bad_requests_are_400_with_a_pointer_and_change_nothing(
        api, jp_serverapp, jp_root_dir, write, live) -> None:
    before = write("f.nxflow")
    doc = await open_room(jp_serverapp, "f.nxflow") if live else None
    live_before = doc.get() if doc else None
    for body, pointer in BAD_BODIES:
        code, got = await api("POST", "documents/patch", body)
        assert code == 400, (body, got)
        assert got["pointer"] == pointer, (body, got)
        assert got["message"]
    code, got = await api("POST", "documents/patch", raw=b"[1, 2]")
    assert code == 400 and "object" in got["message"]
    code, got = await api("POST", "documents/patch", raw=b"{nope")
    assert code == 400
    for path in ("../x.nxflow", "", "a/../../x.nxflow", "x.txt"):
        code, got = await api("GET", "documents/live", params={"path": path})
        assert code == 400 and got["pointer"] == "?path", (path, got)
    code, got = await api("GET", "documents/live")
    assert code == 400 and got["pointer"] == "?path"
    await asyncio.sleep(0.5)  # past the autosave delay: nothing was saved either
    assert (jp_root_dir / "f.nxflow").read_text() == before
    if doc is not None:
        assert doc.get() == live_before
    assert not (jp_root_dir / "etc").exists() and not (jp_root_dir.parent / "up.nxflow").exists()


async def test_a_broken_file_is_reported_and_never_rewritten(api, jp_serverapp, jp_root_dir,
                                                              write) -> None:
    write("broken.nxflow", '{"schema": 1, "nodes": [}\n')
    code, got = await api("GET", "documents/live", params={"path": "broken.nxflow"})
    assert code == 422 and "malformed JSON" in got["message"]
    body = {"path": "broken.nxflow", "ops": [{"op": "put_node", "node": NEW_NODE}]}
    code, got = await api("POST", "documents/patch", body)
    assert code == 409 and "not a valid flow" in got["message"], got
    await open_room(jp_serverapp, "broken.nxflow")
    code, got = await api("POST", "documents/patch", body)
    assert code == 409 and "canvas" in got["message"], got
    await asyncio.sleep(0.5)
    assert (jp_root_dir / "broken.nxflow").read_text() == '{"schema": 1, "nodes": [}\n'


async def test_read_for_get_write_for_patch(api, write) -> None:
    write("f.nxflow")
    body = {"path": "f.nxflow", "ops": [{"op": "put_node", "node": NEW_NODE}]}
    code, got = await api("GET", "documents/live", params={"path": "f.nxflow"}, user="reader")
    assert code == 200 and got["document"]["name"] == "live"
    code, got = await api("POST", "documents/patch", body, user="reader")
    assert code == 403
    for method, route in (("GET", "documents/live"), ("POST", "documents/patch")):
        code, _ = await api(method, route, body if method == "POST" else None, user="nobody",
                            params={"path": "f.nxflow"} if method == "GET" else None)
        assert code == 403, (method, route)
    code, got = await api("POST", "documents/patch", body, user="writer")
    assert code == 200 and got["applied"] == 1


async def test_the_kernel_client_round_trip(jp_serverapp, jp_fetch, jp_base_url, jp_http_port,
                                            jp_root_dir) -> None:
    """``Flow.link`` / ``push`` / ``pull`` of nexusflow_kernel against these routes."""
    doc = None
    server = ServerInfo(url=f"http://127.0.0.1:{jp_http_port}{jp_base_url}",
                        token=jp_serverapp.identity_provider.token)
    f = nf.Flow("kernel")
    a = f.transform("A", "1")

    def link() -> LiveLink:
        return f.link("k.nxflow", server=server)

    link_ = await asyncio.to_thread(link)
    assert link_.live is False  # no room: the file was created canonically
    path = jp_root_dir / "k.nxflow"
    assert path.read_text() == dumps_canonical(f.to_dict())
    doc = await open_room(jp_serverapp, "k.nxflow")

    def grow() -> None:
        b = f.transform("B", "inputs['A'] + 1")
        a >> b

    await asyncio.to_thread(grow)
    assert link_.live is True
    assert {n["id"] for n in doc.to_dict()["nodes"]} == {"A", "B"}
    assert [e["source"] + ">" + e["target"] for e in doc.to_dict()["edges"]] == ["A>B"]
    doc.ydoc.get("nodes", type=Map)["B"]["label"] = "from the canvas"
    await asyncio.to_thread(f.pull)
    assert f["B"].node["label"] == "from the canvas"
    assert await wait_until(lambda: path.read_text() == doc.get())

"""The live link's client side, against a stand-in for the server extension's document API.

The stand-in implements the documented contract (``nexusflow_kernel.notebook.live``) over an
in-memory document and records every request, so these tests pin what the kernel sends. The
end-to-end check through JupyterLab's collaborative document belongs with the server routes.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.errors import BackendUnavailable, NotFoundError
from nexusflow_kernel.notebook.live import (
    LinkConflict,
    LiveLinkError,
    diff_ops,
    find_server,
    merge3,
)

TOKEN = "secret-token"


class DocumentAPI(BaseHTTPRequestHandler):
    docs: dict = {}
    requests: list = []

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"token {TOKEN}":
            self._send(403, {"message": "Forbidden"})
            return False
        return True

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/lab/nexusflow/api/documents/live":
            return self._send(404, {"message": "Not Found"})  # not the document API
        if not self._authorized():
            return None
        path = parse_qs(url.query)["path"][0]
        self.requests.append(("GET", path, None))
        if path not in self.docs:
            return self._send(404, {"error": "NotFoundError", "message": f"no file {path}"})
        self._send(200, {"path": path, "live": True, "document": self.docs[path]})

    def do_POST(self):
        if self.path != "/lab/nexusflow/api/documents/patch":
            return self._send(404, {"message": "Not Found"})
        if not self._authorized():
            return None
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", body["path"], body["ops"]))
        doc = self.docs.setdefault(body["path"], {"schema": 1, "name": "new", "nodes": [],
                                                  "edges": []})
        for op in body["ops"]:
            if op["op"] == "set":
                doc[op["key"]] = op["value"]
            elif op["op"] in ("put_node", "put_edge"):
                key, item = ("nodes", op["node"]) if op["op"] == "put_node" else ("edges",
                                                                                  op["edge"])
                doc[key] = [x for x in doc[key] if x["id"] != item["id"]] + [item]
            elif op["op"] == "delete_node":
                doc["nodes"] = [n for n in doc["nodes"] if n["id"] != op["id"]]
                doc["edges"] = [e for e in doc["edges"] if op["id"] not in (e["source"],
                                                                            e["target"])]
            elif op["op"] == "delete_edge":
                doc["edges"] = [e for e in doc["edges"] if e["id"] != op["id"]]
        self._send(200, {"path": body["path"], "live": True, "applied": len(body["ops"]),
                         "document": doc})

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    DocumentAPI.docs, DocumentAPI.requests = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DocumentAPI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    root = tmp_path / "root"
    (root / "flows").mkdir(parents=True)
    info = {"url": f"http://127.0.0.1:{httpd.server_port}/lab/", "token": TOKEN,
            "root_dir": str(root), "pid": os.getpid()}
    (runtime / "jpserver-1.json").write_text(json.dumps(info))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("NEXUSFLOW_SERVER_URL", raising=False)
    monkeypatch.chdir(root)
    yield DocumentAPI
    httpd.shutdown()


def test_find_server_from_runtime_files(server):
    info = find_server()
    assert info.token == TOKEN and info.url.endswith("/lab/")


def test_link_push_each_change_and_pull(server):
    f = nf.Flow("etl")
    a = f.transform("A", "1")
    link = f.link("flows/etl.nxflow")
    assert link.path == "flows/etl.nxflow"
    doc = server.docs["flows/etl.nxflow"]
    assert [n["id"] for n in doc["nodes"]] == ["A"] and doc["name"] == "etl"
    b = f.transform("B", "inputs['A'] + 1")  # every change goes out at once
    a >> b
    ops = [op["op"] for _m, _p, ops in server.requests if ops for op in ops]
    assert ops.count("put_node") >= 2 and "put_edge" in ops
    assert {n["id"] for n in server.docs["flows/etl.nxflow"]["nodes"]} == {"A", "B"}
    # only what changed is sent: untouched nodes are left to the collaborators
    server.requests.clear()
    b.set(label="plus one")
    (_m, _p, last), = [r for r in server.requests if r[0] == "POST"]
    assert last == [{"op": "put_node", "node": next(
        n for n in f.to_dict()["nodes"] if n["id"] == "B")}]
    # a collaborator adds a node on the canvas; pull brings it into the kernel
    server.docs["flows/etl.nxflow"]["nodes"].append(
        {"id": "C", "type": "transform", "position": {"x": 0, "y": 300},
         "config": {"expression": "2"}})
    f.pull()
    assert "C" in f and f["C"].config == {"expression": "2"}
    f.remove("C")
    assert "C" not in {n["id"] for n in server.docs["flows/etl.nxflow"]["nodes"]}


def test_absolute_paths_become_contents_paths(server, tmp_path):
    f = nf.Flow("abs")
    f.transform("A", "1")
    link = f.link(tmp_path / "root" / "flows" / "abs.nxflow")
    assert link.path == "flows/abs.nxflow"
    with pytest.raises(NotFoundError, match="outside"):
        f.link(tmp_path / "elsewhere.nxflow")


def test_errors_are_clear(server, monkeypatch):
    f = nf.Flow("x")
    with pytest.raises(NotFoundError, match="not linked"):
        f.push()
    monkeypatch.setenv("NEXUSFLOW_SERVER_URL", server and "http://127.0.0.1:9/")
    with pytest.raises(BackendUnavailable, match="did not answer"):
        f.link("a.nxflow")
    monkeypatch.setenv("NEXUSFLOW_SERVER_URL", find_server_url(server))
    monkeypatch.setenv("NEXUSFLOW_SERVER_TOKEN", "wrong")
    with pytest.raises(LiveLinkError, match="403"):
        f.link("a.nxflow")


def find_server_url(server) -> str:
    import glob

    (path,) = glob.glob(os.path.join(os.environ["JUPYTER_RUNTIME_DIR"], "jpserver-*.json"))
    return json.load(open(path))["url"]


def test_missing_route_names_the_extension(server, monkeypatch):
    url = find_server_url(server).replace("/lab/", "/other/")
    monkeypatch.setenv("NEXUSFLOW_SERVER_URL", url)
    monkeypatch.setenv("NEXUSFLOW_SERVER_TOKEN", TOKEN)
    with pytest.raises(LiveLinkError, match="server extension"):
        nf.Flow("x").link("a.nxflow")


def test_diff_ops():
    old = {"name": "a", "nodes": [{"id": "A"}, {"id": "B"}], "edges": [{"id": "A-B"}]}
    new = {"name": "b", "nodes": [{"id": "A", "label": "x"}], "edges": []}
    assert diff_ops(old, new) == [
        {"op": "set", "key": "name", "value": "b"},
        {"op": "delete_edge", "id": "A-B"},
        {"op": "delete_node", "id": "B"},
        {"op": "put_node", "node": {"id": "A", "label": "x"}},
    ]


# ---------------------------------------------------------------- merging with collaborators
def _node(node_id: str, x: float = 0, **extra) -> dict:
    return {"id": node_id, "type": "transform", "position": {"x": x, "y": 0},
            "config": {"expression": "1"}, **extra}


def _doc(*nodes: dict, edges=()) -> dict:
    return {"schema": 1, "name": "m", "nodes": list(nodes),
            "edges": [{"id": f"{s}-{t}", "source": s, "target": t} for s, t in edges]}


def test_merge3_keeps_each_sides_changes_and_lists_clashes():
    base = _doc(_node("A"), _node("B"), _node("C"), edges=[("A", "B")])
    ours = _doc(_node("A", label="mine"), _node("B", x=5), _node("D"), edges=[("A", "B")])
    theirs = _doc(_node("A", x=100), _node("B", x=9), _node("C"), _node("E"),
                  edges=[("A", "B"), ("A", "E")])
    merged, conflicts = merge3(base, ours, theirs)
    nodes = {n["id"]: n for n in merged["nodes"]}
    assert nodes["A"]["position"] == {"x": 100, "y": 0} and nodes["A"]["label"] == "mine"
    assert nodes["B"]["position"] == {"x": 9, "y": 0}  # both moved B: theirs kept
    assert "C" not in nodes  # we deleted C, they did not touch it
    assert {"D", "E"} <= set(nodes)  # each side's new node
    assert {e["id"] for e in merged["edges"]} == {"A-B", "A-E"}
    assert conflicts == [{"what": "node", "id": "B", "field": "position",
                          "ours": {"x": 5, "y": 0}, "theirs": {"x": 9, "y": 0}}]
    forced, _ = merge3(base, ours, theirs, force=True)
    assert next(n for n in forced["nodes"] if n["id"] == "B")["position"] == {"x": 5, "y": 0}


def test_merge3_edits_against_a_deletion_keep_the_deletion_and_say_so():
    base = _doc(_node("A"), _node("B"), edges=[("A", "B")])
    ours = _doc(_node("A"), _node("B", label="edited"), edges=[("A", "B")])
    theirs = _doc(_node("A"))
    merged, conflicts = merge3(base, ours, theirs)
    assert [n["id"] for n in merged["nodes"]] == ["A"] and merged["edges"] == []
    assert conflicts == [{"what": "node", "id": "B", "field": None,
                          "ours": _node("B", label="edited"), "theirs": None}]


def test_a_stale_link_keeps_a_collaborators_move(server, tmp_path):
    """Load, a collaborator moves a node on the canvas, then link: the node stays moved."""
    path = tmp_path / "root" / "flows" / "m.nxflow"
    nf.Flow.from_dict(_doc(_node("A"), _node("B"), edges=[("A", "B")])).save(path)
    server.docs["flows/m.nxflow"] = _doc(_node("A"), _node("B"), edges=[("A", "B")])
    f = nf.Flow.load("flows/m.nxflow")  # read from the file
    server.docs["flows/m.nxflow"]["nodes"][1]["position"] = {"x": 300, "y": 40}  # moved
    f["A"].set(expression="2")  # our own change, before linking
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clash: no warning
        link = f.link("flows/m.nxflow")
    live = {n["id"]: n for n in server.docs["flows/m.nxflow"]["nodes"]}
    assert live["B"]["position"] == {"x": 300, "y": 40}  # the collaborator's move survived
    assert live["A"]["config"] == {"expression": "2"}  # ours arrived
    assert f["B"].node["position"] == {"x": 300, "y": 40}  # and the kernel has theirs now
    assert link.conflicts == []
    posts = [ops for method, _p, ops in server.requests if method == "POST"]
    assert posts[-1] == [{"op": "put_node", "node": live["A"]}]  # nothing else was sent


def test_a_clash_is_reported_not_applied_unless_forced(server):
    server.docs["flows/c.nxflow"] = _doc(_node("A"), _node("B"))
    f = nf.Flow("c")
    f.link("flows/c.nxflow", push=False)
    f.pull()
    f.unlink()  # edited offline for a while
    f["B"].set(label="ours")
    server.docs["flows/c.nxflow"]["nodes"][1]["label"] = "theirs"  # a collaborator, meanwhile
    link = f.link("flows/c.nxflow", push=False)
    link.last = {"schema": 1, "name": "m", "nodes": [_node("A"), _node("B")], "edges": []}
    with pytest.warns(LinkConflict, match=r"1 change made here clashes .* node 'B' label: "
                      r"here \"ours\", on the canvas \"theirs\". Kept the canvas's: "
                      r"flow.push\(force=True\) sends yours"):
        answer = f.push()
    assert answer["conflicts"][0]["field"] == "label"
    assert server.docs["flows/c.nxflow"]["nodes"][1]["label"] == "theirs"
    assert f["B"].node["label"] == "theirs"  # the kernel took the canvas's
    f["B"].set(label="ours again")  # a new change of ours is ours alone: it goes out
    assert server.docs["flows/c.nxflow"]["nodes"][1]["label"] == "ours again"
    server.docs["flows/c.nxflow"]["nodes"][1]["label"] = "theirs again"
    f.unlink()
    f["B"].set(label="forced")
    f._live = link
    with pytest.warns(LinkConflict, match="Yours overwrote theirs"):
        f.push(force=True)
    assert server.docs["flows/c.nxflow"]["nodes"][1]["label"] == "forced"

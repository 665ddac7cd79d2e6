"""One canvas, two hosts: the Lab panel and the notebook widget draw the same node element.

Both tests run a real JupyterLab whose kernels use the test backends, and real workers. The
first shows one finished run in both hosts and compares every node element (classes, data
attributes, inner structure, text, computed glow) and edge; the second clicks nodes in the
widget and reads their output, error and log, which the kernel sends over the widget comm.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nexusflow_kernel as nf
from nexusflow_kernel.secrets import SecretStore
from tests.ui.conftest import write_notebook
from tests.ui.test_live_link import BrowserScenario

SAME = {
    "schema": 1,
    "name": "same",
    "nodes": [
        {"id": "A", "type": "transform", "position": {"x": 0, "y": 0},
         "config": {"expression": "21"}},
        {"id": "C", "type": "condition", "label": "big?", "position": {"x": -160, "y": 140},
         "config": {"expression": "inputs['A'] > 100"}},
        {"id": "D", "type": "transform", "position": {"x": -160, "y": 280},
         "config": {"expression": "1"}},
        {"id": "E", "type": "transform", "position": {"x": 160, "y": 140},
         "config": {"expression": "inputs['nowhere'] + 1"}},
    ],
    "edges": [
        {"id": "A-C", "source": "A", "target": "C"},
        {"id": "C-D", "source": "C", "target": "D", "source_handle": "true"},
        {"id": "A-E", "source": "A", "target": "E"},
    ],
}


def test_the_lab_panel_and_the_notebook_widget_draw_the_same_node(backend_lab, workers,
                                                                  settings) -> None:
    path = nf.Flow.from_dict(SAME).save(backend_lab.root / "same.nxflow")
    workers.start(2)
    run = nf.Flow.load(path).run(wait=False, settings=settings)
    run.wait(timeout=60, progress=False, raise_on_failure=False)
    assert run.status == "failed"
    write_notebook(backend_lab.root / "same.ipynb", [
        "import nexusflow_kernel as nf\nfrom IPython.display import display",
        f"display(nf.Run.attach({run.id!r}).widget())",
    ])

    page = BrowserScenario(backend_lab.url, backend_lab.token, "same", backend_lab.log,
                           NOTEBOOK="same.ipynb", FLOW_FILE="same.nxflow", RUN_ID=run.id,
                           EXPECT_NODES="4")
    try:
        result = page.result(timeout=150)
    finally:
        page.stop()
    lab, widget = result["lab"], result["widget"]
    assert {k: v["phase"] for k, v in lab.items()} == {
        "A": "succeeded", "C": "succeeded", "D": "skipped", "E": "failed"}
    for node_id, drawn in lab.items():
        assert f"nf-phase-{drawn['phase']}" in drawn["className"].split(), drawn
        assert drawn["glow"]["boxShadow"] not in ("", "none") or drawn["phase"] == "skipped"
        assert widget[node_id] == drawn, (node_id, drawn, widget[node_id])
    assert sorted(widget) == sorted(lab)
    # The Condition's named handles are drawn in both.
    assert "div.nf-handle-true[handle true source]" in lab["C"]["skeleton"]
    assert result["widgetEdges"] == result["labEdges"]
    assert sorted(result["labEdges"]) == ["A-C", "A-E", "C-D"]
    assert result["errors"] == []


class _EchoToken(BaseHTTPRequestHandler):
    """Answer 500 with the Authorization header it was sent (a node error that holds it)."""

    def do_GET(self) -> None:  # noqa: N802
        text = f"denied token {self.headers.get('Authorization')}".encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args) -> None:
        pass


def test_clicking_a_node_in_the_widget_shows_its_output_error_and_log(backend_lab, workers,
                                                                      settings) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    SecretStore(settings).set("NF_UI_TOKEN", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoToken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x"
    workers.start(2)
    write_notebook(backend_lab.root / "details.ipynb", [
        "import nexusflow_kernel as nf\nfrom IPython.display import display",
        "f = nf.Flow('details')\n"
        "a = f.transform('A', '21 * 2')\n"
        "b = f.node('sleep', 'B', seconds=0.2, message='hello from B')\n"
        f"c = f.node('http', 'C', method='GET', url={url!r},\n"
        "           headers={'Authorization': {'$secret': 'NF_UI_TOKEN'}})\n"
        "a >> [b, c]\n"
        "run = f.run(wait=False)\n"
        "run.wait(timeout=60, progress=False, raise_on_failure=False)\n"
        "display(run.widget())",
        "import time\nprint('SLEEPING')\ntime.sleep(4)",  # busy while a node is clicked
    ])

    page = BrowserScenario(backend_lab.url, backend_lab.token, "details", backend_lab.log,
                           NOTEBOOK="details.ipynb", EXPECT_NODES="3", WAIT_CELL="2",
                           CLICK="A,B,C", LATE="B")
    try:
        result = page.result(timeout=150)
    finally:
        page.stop()
        server.shutdown()
    shown = result["shown"]
    assert shown["A"]["status"] == "succeeded" and shown["A"]["output"] == "42", shown["A"]
    assert json.loads(shown["A"]["input"])["config"] == {"expression": "21 * 2"}
    assert shown["B"]["status"] == "succeeded" and "hello from B" in shown["B"]["log"]
    assert json.loads(shown["B"]["output"])["slept_s"] >= 0.2
    assert shown["C"]["status"] == "failed", shown["C"]
    assert "denied token ***" in shown["C"]["error"], shown["C"]
    # The secret went out to the server, and came back masked, as the REST API shows it.
    assert secret not in json.dumps(result)
    assert json.loads(shown["C"]["input"])["config"]["headers"] == {
        "Authorization": {"$secret": "NF_UI_TOKEN"}}
    assert result["selected"] == ["C"]  # the node whose details are open
    assert result["tall"] >= result["short"] + 200  # the details open under the canvas
    # Clicked while a cell ran: the kernel (ipykernel 7) answered before the cell ended.
    assert "hello from B" in result["lateLog"]
    assert result["arrivedAt"] < result["doneAt"], result
    assert result["errors"] == []


def test_the_widget_answers_node_details_for_its_own_run_only(settings, workers) -> None:
    """The kernel half of the details (no browser): what ``_node_attempts`` sends back."""
    workers.start(1)
    f = nf.Flow("answers")
    f.transform("A", "21 * 2") >> f.transform("B", "inputs['nowhere']")
    run = f.run(wait=False, settings=settings)
    run.wait(timeout=60, progress=False, raise_on_failure=False)
    widget = run.widget()

    reply, buffers = widget._node_attempts({"run_id": run.id, "node": "A"}, [])
    assert buffers == []
    assert [(a["attempt"], a["status"], a["output"]) for a in reply["attempts"]] == [
        (1, "succeeded", 42)]
    failed = widget.node_attempts({"run_id": run.id, "node": "B"})["attempts"][0]
    assert failed["status"] == "failed" and "nowhere" in failed["error"]
    assert json.loads(json.dumps(reply)) == reply  # plain JSON for the comm

    assert "no node 'Z'" in widget.node_attempts({"run_id": run.id, "node": "Z"})["error"]
    other = str(uuid.uuid4())
    assert widget.node_attempts({"run_id": other, "node": "A"}) == {
        "error": f"this canvas shows run {run.id}, not run {other}"}
    for bad in (None, "A", {"node": "A"}, {"run_id": run.id, "node": 3}):
        assert "needs the strings run_id and node" in widget.node_attempts(bad)["error"]
    assert "shows no run" in f.widget().node_attempts({"run_id": run.id, "node": "A"})["error"]

"""The runs a canvas shows, in a real browser (issue #19, items 1, 6 and 7): a run started
anywhere glows on every open canvas of its flow, a node no live worker serves says so on the
node, and the run history grid shows runs x nodes with filters and a cell's details."""

from __future__ import annotations

import json
import urllib.request

from tests.ui.test_canvas import write_flow

GLOW = {
    "schema": 1,
    "name": "follow",
    "nodes": [
        {"id": "first", "type": "transform", "position": {"x": 0, "y": 0},
         "config": {"expression": "21"}},
        {"id": "pause", "type": "sleep", "position": {"x": 0, "y": 120},
         "config": {"seconds": 4}},
        {"id": "double", "type": "transform", "position": {"x": 0, "y": 240},
         "config": {"expression": "inputs['first'] * 2"}},
    ],
    "edges": [
        {"id": "first-pause", "source": "first", "target": "pause"},
        {"id": "pause-double", "source": "pause", "target": "double"},
        {"id": "first-double", "source": "first", "target": "double"},
    ],
}


def test_a_run_started_over_rest_glows_on_every_open_canvas(lab) -> None:
    write_flow(lab.root, "follow.nxflow", GLOW)
    result = lab.run_script("rest", script="follow.mjs", FLOW_FILE="follow.nxflow", timeout=200)
    print(f"the open canvas showed the REST run after {result['followMs']} ms")
    assert result["followMs"] < 10000
    done = {"first": "succeeded", "pause": "succeeded", "double": "succeeded"}
    assert result["final1"] == done
    # It glowed live on the canvas: the sleeping node was seen running before it succeeded.
    assert result["seen"]["pause"][0] == "idle" and "running" in result["seen"]["pause"]
    # A canvas opened afterwards shows the newest run.
    assert result["openedShows"] == result["run1"] and result["finalB"] == done
    # A run pinned in the history stays while newer runs start; Follow newest goes back.
    assert result["pinned"] == result["run1"] == result["pinnedShows"]
    assert result["afterFollow"] == result["run2"] != result["run1"]
    assert result["errors"] == []


def test_a_node_no_worker_serves_shows_a_banner_on_the_canvas(backend_lab, workers) -> None:
    workers.start(1)  # the default queue only: nobody serves 'sandbox'
    write_flow(backend_lab.root, "stuck.nxflow", {
        "schema": 1, "name": "stuck",
        "nodes": [
            {"id": "A", "type": "transform", "position": {"x": 0, "y": 0},
             "config": {"expression": "1"}},
            {"id": "B", "type": "code", "position": {"x": 0, "y": 140},
             "config": {"language": "python", "source": "output = 2"}},
        ],
        "edges": [{"id": "A-B", "source": "A", "target": "B"}],
    })
    result = backend_lab.run_script("waiting", script="follow.mjs", FLOW_FILE="stuck.nxflow",
                                    WAITING_NODE="B", timeout=200)
    print(f"the banner showed {result['shownMs']} ms after the run started")
    assert result["text"] == ("waiting: no live worker serves queue 'sandbox' "
                              "(start `nexusflow worker --queues sandbox`)")
    assert result["nodeStates"] == {"A": "succeeded", "B": "queued"}
    assert result["shownMs"] < 30000
    assert result["errors"] == []


GRID = {
    "schema": 1,
    "name": "grid",
    "params": {"ok": {"type": "boolean", "default": True}},
    "nodes": [
        {"id": "first", "type": "transform", "position": {"x": 0, "y": 0},
         "config": {"expression": "21"}},
        {"id": "gate", "type": "transform", "position": {"x": 0, "y": 120},
         "config": {"expression": "inputs['first'] if params['ok'] else 1 / 0"}},
        {"id": "last", "type": "transform", "position": {"x": 0, "y": 240},
         "config": {"expression": "inputs['gate'] + 1"}},
    ],
    "edges": [
        {"id": "first-gate", "source": "first", "target": "gate"},
        {"id": "gate-last", "source": "gate", "target": "last"},
    ],
}


def _rest(lab, method: str, route: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{lab.url}nexusflow/api/{route}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def _wait_final(lab, run_id: str) -> str:
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = _rest(lab, "GET", f"runs/{run_id}")["status"]
        if status in ("succeeded", "failed", "canceled"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish")


def test_the_run_history_grid_shows_runs_by_nodes_with_filters(lab) -> None:
    write_flow(lab.root, "grid.nxflow", GRID)
    runs = []
    for trigger, ok in (("manual", True), ("notebook", False), ("manual", True)):
        run_id = _rest(lab, "POST", "runs", {"path": "grid.nxflow", "trigger": trigger,
                                             "inputs": {"ok": ok}})["run_id"]
        runs.append({"run_id": run_id, "status": _wait_final(lab, run_id), "trigger": trigger})
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    result = lab.run_script("grid", script="follow.mjs", FLOW_FILE="grid.nxflow",
                            EXPECT_RUNS=json.dumps(runs), FAILING_NODE="gate", timeout=200)
    # a column per run, oldest on the left
    assert result["order"] == [r["run_id"] for r in runs]
    cells = {(run, node): state for run, node, state, _ in result["cells"]}
    ok_cells = {"first": "succeeded", "gate": "succeeded", "last": "succeeded"}
    bad_cells = {"first": "succeeded", "gate": "failed", "last": "skipped"}
    for r in runs:
        want = ok_cells if r["status"] == "succeeded" else bad_cells
        assert {n: cells[(r["run_id"], n)] for n in want} == want
    colours = {state: colour for _, _, state, colour in result["cells"]}
    assert len({colours["succeeded"], colours["failed"], colours["skipped"]}) == 3
    assert result["failedOnly"] == [runs[1]["run_id"]]
    assert result["notebookOnly"] == [runs[1]["run_id"]]
    # the cell opened that node's details in that run, and the canvas shows that run
    assert "ZeroDivisionError" in result["error"] or "division" in result["error"], result
    assert result["canvasStates"] == bad_cells
    assert result["errors"] == []

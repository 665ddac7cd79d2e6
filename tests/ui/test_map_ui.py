"""The map node on the canvas in a real browser (issue #20, item 1): done/total and the
failed count while it runs, and the paged items list (state, output, error) when clicked."""

from __future__ import annotations

from nexusflow_kernel.model.document import dumps_canonical


def node(id: str, type: str, x: float, y: float, **config) -> dict:
    return {"id": id, "type": type, "position": {"x": x, "y": y}, "config": config}


MAP_FLOW = {
    "schema": 1, "name": "map-progress",
    "nodes": [
        node("seconds", "transform", 0, 0,
             expression="[0.15 if i % 10 != 3 else 'x' for i in range(40)]"),
        # Each item sleeps 0.15 s; items 3, 13, 23, 33 fail (not a number); two at a time.
        node("M", "map", 0, 130, items="inputs['seconds']", concurrency=2,
             on_item_failure="continue",
             node={"type": "sleep", "config": {"seconds": "{{ item }}"}}),
        node("after", "transform", 0, 260,
             expression="len([o for o in inputs['M'] if 'error' in o])"),
    ],
    "edges": [{"id": "seconds-M", "source": "seconds", "target": "M"},
              {"id": "M-after", "source": "M", "target": "after"}],
}


def test_map_progress_and_its_items_on_the_canvas(lab) -> None:
    (lab.root / "map.nxflow").write_text(dumps_canonical(MAP_FLOW))
    result = lab.run_script("progress", script="maps.mjs", FLOW_FILE="map.nxflow", timeout=200)
    # While it ran, the node counted its items up.
    midway = result["midway"]
    assert midway is not None, result["seen"]
    assert midway["total"] == 40 and 0 < midway["done"] < 40
    assert f"{midway['done']}/40" in midway["text"]
    dones = [b["done"] for b in result["seen"]]
    assert dones == sorted(dones) and len(set(dones)) >= 3
    assert result["final"]["done"] == 40 and result["final"]["failed"] == 4
    assert "40/40" in result["final"]["text"] and "4 failed" in result["final"]["text"]
    # The items list: 20 a page, in item order, with state, output and error.
    first = result["firstPage"]
    assert [r["index"] for r in first] == list(range(20))
    assert first[0]["state"] == "succeeded" and "slept_s" in first[0]["text"]
    assert first[3]["state"] == "failed" and "seconds must be a number" in first[3]["text"]
    assert result["range"].replace("\u2013", "-") == "1-20 of 40"
    assert [r["index"] for r in result["secondPage"]] == list(range(20, 40))
    assert [r["index"] for r in result["failedRows"]] == [3, 13, 23, 33]
    assert result["errors"] == []


CHILD = {
    "schema": 1, "name": "doubler", "params": {"item": {"type": "integer", "default": 0}},
    "nodes": [node("double", "transform", 0, 0, expression="params['item'] * 2")],
    "edges": [],
}

FLOW_MAP = {
    "schema": 1, "name": "map-of-flows",
    "nodes": [node("F", "map", 0, 0, items="[10, 20, 30]", flow="lib/doubler.nxflow")],
    "edges": [],
}


def test_open_the_child_run_of_a_map_item(lab) -> None:
    (lab.root / "lib").mkdir(exist_ok=True)
    (lab.root / "lib" / "doubler.nxflow").write_text(dumps_canonical(CHILD))
    (lab.root / "flowmap.nxflow").write_text(dumps_canonical(FLOW_MAP))
    result = lab.run_script("flowItems", script="maps.mjs", FLOW_FILE="flowmap.nxflow",
                            timeout=200)
    assert result["final"]["done"] == result["final"]["total"] == 3
    assert [(r["index"], r["state"]) for r in result["listed"]] == [
        (0, "succeeded"), (1, "succeeded"), (2, "succeeded")]
    assert '{"double":40}' in result["listed"][1]["text"]
    assert result["childStates"] == {"double": "succeeded"}
    assert "F[1]" in result["trail"]
    assert result["output"].strip() == "40"
    assert result["errors"] == []

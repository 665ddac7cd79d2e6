"""Presence and layout on the canvas in a real browser (issue #19, items 8, 9 and 10)."""

from __future__ import annotations

import re

from tests.ui.test_canvas import DIAMOND, write_flow


def test_two_users_see_exactly_each_other_at_once(lab) -> None:
    write_flow(lab.root, "presence.nxflow", DIAMOND)
    result = lab.run_script("presence", script="layout.mjs", FLOW_FILE="presence.nxflow")
    print(f"B saw A after {result['bSeesAMs']} ms, A saw B after {result['aSeesBMs']} ms")
    assert result["aAlone"] == 0  # no phantom collaborator
    assert result["seenByA"]["count"] == 1 and result["seenByB"]["count"] == 1
    assert "?" not in result["seenByA"]["avatars"] + result["seenByB"]["avatars"]
    assert all(a.strip() for a in result["seenByA"]["avatars"] + result["seenByB"]["avatars"])
    # at once (from B's canvas showing), not at the next awareness renewal (every 15 s)
    assert result["bSeesAMs"] < 5000 and result["aSeesBMs"] < 5000
    assert result["toast"] is False  # the Jupyter news question is off (./dev lab's settings)
    assert result["errors"] == []


LAYOUT = {
    "schema": 1,
    "name": "layout",
    "params": {
        "times": {"type": "integer", "default": 2, "description": "how many"},
        "loud": {"type": "boolean", "default": False},
        "who": {"type": "string", "description": "no default: required"},
        "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
    },
    "nodes": [
        {"id": "first", "type": "transform", "label": "First", "position": {"x": 0, "y": 0},
         "config": {"expression": "params['times'] * 2"}},
        {"id": "second", "type": "transform", "position": {"x": 260, "y": 0},
         "config": {"expression": "params['who'] + ('!' if params['loud'] else '')"}},
        {"id": "third", "type": "transform", "position": {"x": 520, "y": 0},
         "config": {"expression": "inputs['first'] + 1"}},
        {"id": "bad", "type": "transform", "position": {"x": 260, "y": 140}, "config": {}},
    ],
    "edges": [{"id": "first-third", "source": "first", "target": "third"}],
}


def test_layout_keeps_nodes_in_view_apart_and_uncovered(lab) -> None:
    write_flow(lab.root, "layout.nxflow", LAYOUT)
    result = lab.run_script("layout", script="layout.mjs", FLOW_FILE="layout.nxflow",
                            INVALID_NODE="bad", KEEP_NODES='["first", "second", "third"]',
                            timeout=200)
    assert result["invalidMarked"] == "expression is required"
    assert result["outOfViewBeforeFit"] > 0 and result["outOfViewAfterFit"] == 0
    assert result["farInView"] is True  # added elsewhere, far off: brought into view
    assert result["overlapping"] == []  # double-clicked palette items land apart
    assert result["droppedInView"] is True and result["droppedLeftGap"] >= 0
    # The run inputs: a form from the params (a number field, a choice, an enum's select),
    # beside the palette.
    assert result["inputsCoverPalette"] is False
    assert sorted(result["inputFields"]) == [
        ["loud", "input", "checkbox"], ["size", "select", None], ["times", "input", None],
        ["who", "input", None]]
    assert result["runBlockedWithoutWho"] is True  # a param without a default is required
    assert result["final"] == {"first": "succeeded", "second": "succeeded", "third": "succeeded"}
    assert result["widthsAfter"] == result["widthsBefore"]  # a state badge widens nothing
    assert result["underInspector"] == []
    assert result["minimapShown"] and result["minimapOverCanvas"] is False
    assert result["minimapOverNodes"] == []
    assert "8" in result["output"]  # times=4 from the form reached the run: 4 * 2
    assert result["secondOutput"] == '"ada!"'
    # A node at the bottom-left: neither Fit nor its details opening leave it under the zoom
    # controls or the minimap; it stays whole in view.
    assert result["cornerUnderControlsAfterFit"] is False
    assert result["cornerUnderControlsWithDetails"] is False
    assert result["cornerUnderMinimapWithDetails"] is False
    assert result["cornerInViewWithDetails"] is True
    # The history names the run: id prefix, status, when, how long, trigger (dev: no env).
    assert re.fullmatch(
        rf"{result['runId'][:8]} · succeeded · (just now|\d+ min ago) · (\d+ ms|\d+s) · manual",
        result["historyLabel"]), result["historyLabel"]
    assert result["errors"] == []

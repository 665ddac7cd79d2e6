"""The collaborative document type: canonical, stable get/set, and the entry point."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pycrdt
import pytest
from nexusflow_server.ydoc import INVALID_KEY, YNxFlow

from nexusflow_kernel.model.document import dumps_canonical

DIAMOND = {
    "schema": 1,
    "name": "diamond",
    "params": {"n": {"type": "integer", "default": 3}},
    "nodes": [
        {"id": "A", "type": "transform", "label": "A", "position": {"x": 0, "y": 0},
         "config": {"expression": "params['n'] * 2"}},
        {"id": "B", "type": "http", "position": {"x": -150, "y": 120},
         "config": {"method": "GET", "url": "http://127.0.0.1:8000/items"},
         "retry": {"max_attempts": 3, "backoff_s": 1, "factor": 2}, "timeout_s": 30},
        {"id": "C", "type": "condition", "position": {"x": 150.5, "y": 120},
         "config": {"expression": "inputs['A'] > 10"}},
        {"id": "D", "type": "transform", "position": {"x": 0, "y": 240},
         "config": {"expression": "inputs['B']['status']"}, "trigger_rule": "none_failed"},
    ],
    "edges": [
        {"id": "A-B", "source": "A", "target": "B"},
        {"id": "A-C", "source": "A", "target": "C"},
        {"id": "B-D", "source": "B", "target": "D"},
        {"id": "C-D", "source": "C", "target": "D", "source_handle": "true"},
    ],
}


def loaded(text: str) -> YNxFlow:
    doc = YNxFlow()
    doc.set(text)
    return doc


def test_round_trip_is_canonical() -> None:
    # A shuffled, compact, non-canonical spelling of the same flow.
    messy = dict(DIAMOND, nodes=list(reversed(DIAMOND["nodes"])))
    doc = loaded(json.dumps(messy))
    assert doc.get() == dumps_canonical(DIAMOND)


def test_integral_numbers_stay_integers() -> None:
    text = loaded(dumps_canonical(DIAMOND)).get()
    assert '"x": 0,' in text and '"timeout_s": 30' in text and '"max_attempts": 3' in text
    assert '"x": 150.5' in text
    assert ".0," not in text and ".0\n" not in text


def test_set_of_get_is_idempotent_and_writes_nothing() -> None:
    doc = loaded(dumps_canonical(DIAMOND))
    first = doc.get()
    updates: list[bytes] = []
    doc.ydoc.observe(lambda event: updates.append(event.update))
    doc.set(first)
    assert doc.get() == first
    assert updates == []  # nothing changed, so no Yjs update to send to collaborators


def test_set_changes_only_what_differs() -> None:
    doc = loaded(dumps_canonical(DIAMOND))
    node_b = doc.ydoc.get("nodes", type=pycrdt.Map)["B"]
    changed = json.loads(doc.get())
    changed["nodes"][0]["position"] = {"x": 10, "y": 5}  # node A
    changed["edges"] = changed["edges"][:3]
    doc.set(json.dumps(changed))
    nodes = doc.ydoc.get("nodes", type=pycrdt.Map)
    assert nodes["B"] is node_b or nodes["B"].to_py() == node_b.to_py()
    assert doc.get() == dumps_canonical(changed)


def test_root_types_match_the_frontend() -> None:
    doc = loaded(dumps_canonical(DIAMOND))
    ydoc = doc.ydoc
    assert isinstance(ydoc.get("nodes", type=pycrdt.Map)["A"], pycrdt.Map)
    assert ydoc.get("edges", type=pycrdt.Map)["A-B"] == {"id": "A-B", "source": "A", "target": "B"}
    assert ydoc.get("meta", type=pycrdt.Map)["name"] == "diamond"
    assert doc.version == "1.0.0"


def test_remote_update_reaches_a_second_document() -> None:
    a = loaded(dumps_canonical(DIAMOND))
    b = YNxFlow()
    b.ydoc.apply_update(a.ydoc.get_update())
    assert b.get() == a.get()
    with a.ydoc.transaction():
        a.ydoc.get("nodes", type=pycrdt.Map)["A"]["position"] = {"x": 7.0, "y": 8.0}
    b.ydoc.apply_update(a.ydoc.get_update(b.ydoc.get_state()))
    assert '"x": 7,' in b.get()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"nodes": {}}', '{"nodes": [{"id": 1}]}',
                                  '{"nodes": [{"id": "a"}, {"id": "a"}], "edges": []}'])
def test_invalid_text_is_kept_verbatim(text: str) -> None:
    doc = loaded(text)
    assert doc.get() == text
    assert doc.invalid is not None and doc.invalid["error"]
    doc.set(dumps_canonical(DIAMOND))  # fixing the file on disk recovers the document
    assert doc.invalid is None
    assert INVALID_KEY not in doc.ydoc.get("meta", type=pycrdt.Map)
    assert doc.get() == dumps_canonical(DIAMOND)


def test_empty_file_becomes_an_empty_flow() -> None:
    assert json.loads(loaded("").get()) == {"schema": 1, "nodes": [], "edges": []}


def test_observe_reports_root_names() -> None:
    doc = loaded(dumps_canonical(DIAMOND))
    seen: list[str] = []
    doc.observe(lambda name, event: seen.append(name))
    with doc.ydoc.transaction():
        doc.ydoc.get("nodes", type=pycrdt.Map)["A"]["label"] = "renamed"
    doc.run_id = "r1"
    doc.unobserve()
    assert "nodes" in seen and "state" in seen
    assert doc.run_id == "r1"


def test_registered_as_the_nxflow_document_type() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="jupyter_ydoc")}
    assert names.get("nxflow") == "nexusflow_server.ydoc:YNxFlow"

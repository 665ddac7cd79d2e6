"""The notebook API of the map node (issue #20, item 1): ``f.map(...)`` with a function, an
expression, an inline node or a flow; ``run.items(...)`` page by page; the CLI's view."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import nexusflow_kernel as nf


@pytest.fixture
def env(settings, monkeypatch):
    from tests.conftest import settings_env

    for key, value in settings_env(settings).items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    return settings


def started(workers, settings, n: int) -> None:
    from nexusflow_kernel.workers import worker_count

    workers.start(n)
    deadline = time.monotonic() + 60
    while worker_count(settings) < n:
        assert time.monotonic() < deadline, "the workers never came up"
        time.sleep(0.2)


@nf.task
def price(item, index, rate):
    """Price one order (a task: item and index bind to the map's item)."""
    return {"n": index, "total": item["qty"] * rate}


def test_the_builder_writes_a_map_node() -> None:
    f = nf.Flow("shop", params={"rate": {"type": "number", "default": 2}})
    orders = f.transform("orders", "[{'qty': q} for q in range(5)]")
    m = f.map("price", over=orders, do=price, concurrency=4, item_retry=3)
    f.map("double", over="inputs['orders']", do="item['qty'] * 2",
          on_item_failure="continue", item_timeout=5)
    f.map("fetch", over="params['ids']",
          do={"type": "http", "config": {"url": "https://example.org/{{ item }}"}})
    f.map("sub", over="params['ids']", do="lib/one.nxflow", inputs={"id": "{{ item }}"})
    doc = f.to_dict()
    nodes = {n["id"]: n for n in doc["nodes"]}
    assert m.type == "map"
    assert nodes["price"]["config"]["items"] == "inputs['orders']"
    assert nodes["price"]["config"]["concurrency"] == 4
    spec = nodes["price"]["config"]["node"]
    assert spec["type"] == "python_task" and spec["config"]["function"] == "price"
    assert spec["retry"] == {"max_attempts": 3}
    assert ("orders", "price") in {(e["source"], e["target"]) for e in doc["edges"]}
    assert nodes["double"]["config"] == {
        "items": "inputs['orders']", "on_item_failure": "continue",
        "node": {"type": "transform", "config": {"expression": "item['qty'] * 2"},
                 "timeout_s": 5}}
    assert nodes["fetch"]["config"]["node"]["type"] == "http"
    assert nodes["sub"]["config"] == {"items": "params['ids']", "flow": "lib/one.nxflow",
                                      "inputs": {"id": "{{ item }}"}}
    with pytest.raises(TypeError, match="has no 'type'"):
        f.map("x", over="[1]", do={"config": {}})
    with pytest.raises(TypeError, match="over= takes an expression"):
        f.map("x", over=[1, 2], do="item")
    with pytest.raises(TypeError, match="inputs= go with a flow"):
        f.map("x", over="[1]", do="item", inputs={"a": 1})


def test_a_map_in_a_notebook_and_its_items(env, workers, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    f = nf.Flow("shop", params={"rate": {"type": "number", "default": 3}})
    orders = f.transform("orders", "[{'qty': q} for q in range(30)]")
    priced = f.map("price", over=orders, do=price)
    priced >> f.transform("sum", "sum(p['total'] for p in inputs['price'])")
    f.map("ratio", over=orders, do="10 // item['qty']", on_item_failure="continue")
    child = nf.Flow("one", params={"item": {"type": "object"}, "index": {"type": "integer"}})
    child.transform("twice", "params['item']['qty'] * 2 + params['index']")
    child.save(tmp_path / "one.nxflow")
    f.map("sub", over=orders, do=child)
    started(workers, env, 2)
    run = f.run(timeout=120, progress=False)
    assert run.outputs["sum"] == sum(q * 3 for q in range(30))
    assert run.outputs["price"][7] == {"n": 7, "total": 21}
    assert run.outputs["sub"][5] == {"twice": 15}

    page = run.items("price", limit=10)
    assert [i["index"] for i in page] == list(range(10))
    assert page.total == 30 and page.counts["done"] == 30 and page.counts["failed"] == 0
    assert page[3]["state"] == "succeeded" and page[3]["attempts"] == 1
    assert page[3]["output"] == {"n": 3, "total": 9}
    following = page.next()
    assert following is not None and following[0]["index"] == 10
    assert "items 0..9 of 30" in repr(page)

    failed = run.items("ratio", state="failed")
    assert [i["index"] for i in failed] == [0] and "ZeroDivisionError" in failed[0]["error"]
    assert failed.next() is None
    assert run.outputs["ratio"][0] == {"error": failed[0]["error"]}
    one = run.item("ratio", 0)
    assert one["history"][0]["status"] == "failed"
    assert run.items("sub", limit=1)[0]["child_run"]

    # The notebook's canvas: the map's counts in its node states, its items from the kernel.
    widget = run.widget()
    try:
        assert widget.states["ratio"]["items"]["failed"] == 1
        reply, buffers = widget._map_items({"run_id": run.id, "node": "ratio", "offset": 0,
                                            "limit": 2, "state": "failed"}, [])
        assert buffers == [] and reply["total"] == 1 and reply["items"][0]["index"] == 0
        assert json.loads(json.dumps(reply)) == reply
        assert "not a map" in widget.map_items({"run_id": run.id, "node": "orders"})["error"]
        assert "limit 1..1000" in widget.map_items({"run_id": run.id, "node": "ratio",
                                                    "limit": 0})["error"]
        assert "this canvas shows run" in widget.map_items({"run_id": "x", "node": "ratio"})[
            "error"]
    finally:
        widget.stop()

    # The CLI shows the map's counts and lists its items.
    show = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "show", run.id],
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    assert "ratio: items 30/30 done, 1 failed" in show.stdout
    assert f"(nexusflow items {run.id} ratio)" in show.stdout
    listed = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "items", run.id,
                             "ratio", "--state", "failed", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert shown["total"] == 1 and shown["items"][0]["index"] == 0
    table = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "items", run.id,
                            "price", "--limit", "3"], capture_output=True, text=True,
                           timeout=120)
    assert table.returncode == 0, table.stderr
    assert "price: items 30/30 done" in table.stdout and "succeeded" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", "items", run.id,
                          "orders"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "not a map" in bad.stderr

"""REST API of the debug loop (issue #15): a node's context, retry with the flow's current
version (409 naming the node when it does not fit), one-node tests on workers, the debug
notebook, and runs started with pins or without the cache."""

from __future__ import annotations

import json

import nbformat
from nftest import flow, node, wait_run


def broken(divisor: str = "0") -> dict:
    return flow(node("A", expression="21"), node("B", expression=f"inputs['A'] // {divisor}"),
                node("S", expression="'side'"), edges=[("A", "B")], name="broken")


async def test_context_retry_update_and_the_notebook(api, jp_root_dir, engine, workers):
    workers.start(1)
    (jp_root_dir / "flows").mkdir()
    path = "flows/broken.nxflow"
    file = jp_root_dir / path
    file.write_text(json.dumps(broken()))
    code, started = await api("POST", "runs", {"path": path})
    assert code == 201, started
    run_id = started["run_id"]
    assert wait_run(engine, run_id)["status"] == "failed"

    code, ctx = await api("GET", f"runs/{run_id}/nodes/B/context")
    assert code == 200 and ctx["inputs"] == {"A": 21} and ctx["recorded"], ctx
    assert ctx["config"] == {"expression": "inputs['A'] // 0"} and "division" in ctx["error"]
    code, ctx = await api("GET", f"runs/{run_id}/nodes/nope/context")
    assert code == 404
    code, _ = await api("GET", f"runs/{run_id}/nodes/B/context", user="nobody")
    assert code == 403

    # The debug notebook: written next to the flow, found again the second time.
    code, made = await api("POST", f"runs/{run_id}/nodes/B/notebook", {"path": path})
    assert code == 201 and made == {"path": "flows/broken-B-debug.ipynb", "created": True}
    nb = nbformat.read(jp_root_dir / made["path"], as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert f"nf.Run.attach({run_id!r})" in nb.cells[1].source
    assert "f.link('broken.nxflow', push=False)" in nb.cells[1].source
    code, again = await api("POST", f"runs/{run_id}/nodes/B/notebook", {"path": path})
    assert code == 200 and again["created"] is False
    code, err = await api("POST", f"runs/{run_id}/nodes/B/notebook", {"path": "../x.nxflow"})
    assert code == 400 and err["pointer"] == "/path"
    code, _ = await api("POST", f"runs/{run_id}/nodes/B/notebook", {"path": path},
                        user="reader")
    assert code == 403

    # Removing the succeeded S does not fit what ran: 409, naming S; nothing changes.
    gone = broken("1")
    gone["nodes"] = [n for n in gone["nodes"] if n["id"] != "S"]
    file.write_text(json.dumps(gone))
    code, err = await api("POST", f"runs/{run_id}/retry", {"update": True, "path": path})
    assert code == 409 and "node 'S' succeeded" in err["message"], err
    assert engine.get_run(run_id)["status"] == "failed"
    # The fix, from the file as it is now: the same run succeeds; A and S did not run again.
    file.write_text(json.dumps(broken("2")))
    code, done = await api("POST", f"runs/{run_id}/retry", {"update": True, "path": path})
    assert code == 202 and done["run_id"] == run_id and done["rerun"] == ["B"], done
    run = wait_run(engine, run_id)
    assert run["status"] == "succeeded" and run["nodes"]["B"]["output"] == 10
    assert [len(engine.node_attempts(run_id, n)) for n in ("A", "B", "S")] == [1, 2, 1]
    assert run["nodes"]["B"]["version"] == done["version"] == done["previous_version"] + 1
    # With neither path nor graph: the latest stored version.
    code, done = await api("POST", f"runs/{run_id}/retry", {"update": True, "from_node": "A"})
    assert code == 202 and done["rerun"] == ["A", "B"] and done["stale"] == []
    code, err = await api("POST", f"runs/{run_id}/retry", {"update": "yes"})
    assert code == 400 and err["pointer"] == "/update"


async def test_node_tests_from_the_inspector(api, jp_root_dir, engine, workers):
    workers.start(1)
    (jp_root_dir / "t.nxflow").write_text(json.dumps(broken()))
    # Never run: a root tests as it is; a child needs inputs.
    code, test = await api("POST", "tests", {"path": "t.nxflow", "node_id": "A"})
    assert code == 201 and test["status"] == "succeeded" and test["output"] == 21, test
    code, err = await api("POST", "tests", {"path": "t.nxflow", "node_id": "B"})
    assert code == 404 and "give its inputs" in err["message"]
    code, test = await api("POST", "tests", {"path": "t.nxflow", "node_id": "B",
                                             "inputs": {"A": 8}, "node": {
                                                 "id": "B", "type": "transform",
                                                 "config": {"expression": "inputs['A'] + 1"}}})
    assert code == 201 and test["output"] == 9 and test["inputs"] == {"A": 8}
    # After a run: the node's recorded inputs (and its error, shown in place).
    code, started = await api("POST", "runs", {"path": "t.nxflow"})
    wait_run(engine, started["run_id"])
    code, test = await api("POST", "tests", {"path": "t.nxflow", "node_id": "B"})
    assert code == 201 and test["status"] == "failed" and "division" in test["error"]
    assert test["from_run"] == started["run_id"] and test["inputs"] == {"A": 21}
    code, same = await api("GET", f"tests/{test['test_id']}")
    assert code == 200 and same["status"] == "failed"
    code, _ = await api("GET", "tests/00000000-0000-0000-0000-000000000000")
    assert code == 404
    code, err = await api("POST", "tests", {"path": "t.nxflow", "node_id": "Z"})
    assert code == 404 and "'Z'" in err["message"]
    code, err = await api("POST", "tests", {"node_id": "B", "wait_s": 99,
                                            "path": "t.nxflow"})
    assert code == 400 and err["pointer"] == "/wait_s"
    code, _ = await api("POST", "tests", {"path": "t.nxflow", "node_id": "A"}, user="reader")
    assert code == 403
    # A code node needs the execute permission, as a run does.
    code, _ = await api("POST", "tests", {"node_id": "K", "node": {
        "id": "K", "type": "code", "config": {"language": "python", "source": "output = 1"}}},
        user="noexec")
    assert code == 403


async def test_runs_with_pins_and_without_the_cache(api, jp_root_dir, engine, workers):
    workers.start(1)
    doc = broken("1")
    doc["nodes"][0]["pin"] = {"output": 5}
    doc["nodes"][0]["cache"] = {"ttl_s": 60}
    (jp_root_dir / "p.nxflow").write_text(json.dumps(doc))
    code, started = await api("POST", "runs", {"path": "p.nxflow", "use_pins": True})
    assert code == 201
    run = wait_run(engine, started["run_id"])
    assert run["nodes"]["A"]["pinned"] and run["nodes"]["B"]["output"] == 5
    assert run["options"] == {"use_pins": True}
    code, first = await api("POST", "runs", {"path": "p.nxflow"})
    code, second = await api("POST", "runs", {"path": "p.nxflow"})
    code, third = await api("POST", "runs", {"path": "p.nxflow", "cache": False})
    got = [wait_run(engine, r["run_id"]) for r in (first, second, third)]
    assert "cached_from" not in got[0]["nodes"]["A"]
    assert got[1]["nodes"]["A"]["cached_from"] == {"run_id": first["run_id"], "node_id": "A"}
    assert "cached_from" not in got[2]["nodes"]["A"]
    code, err = await api("POST", "runs", {"path": "p.nxflow", "use_pins": "yes"})
    assert code == 400 and err["pointer"] == "/use_pins"


async def test_a_node_test_with_no_worker_for_its_queue_is_refused_at_once(api, jp_root_dir,
                                                                          settings):
    """No worker serves the node's queue: the request says so (503, what to start) after a few
    seconds' grace instead of queuing a test nothing will take, and nothing is queued."""
    import time

    import redis

    (jp_root_dir / "t.nxflow").write_text(json.dumps(broken()))
    t0 = time.monotonic()
    code, err = await api("POST", "tests", {"path": "t.nxflow", "node_id": "A"})
    assert code == 503, err
    assert "no worker serves the 'default' queue" in err["message"], err
    assert "nexusflow worker" in err["message"]
    assert time.monotonic() - t0 < 20
    assert redis.Redis.from_url(settings.redis_url).keys("rq:queue:*") == []

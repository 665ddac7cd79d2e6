"""``@task``: shipping functions by value, refusals, and running them on real workers."""

from __future__ import annotations

import json
import math
import threading

import pytest
from nexusflow_worker.sandbox import run_isolated
from nexusflow_worker.sandbox.task_node import task_program

import nexusflow_kernel as nf
from nexusflow_kernel.notebook.tasks import ship_source
from tests.conftest import wait_run

SCALE = 3
NAMES = ["a", "b"]


def helper(x):
    return x + 1


@nf.task
def scaled(A, params, offset=0):
    """Scale the parent's output."""
    return helper(A) * SCALE + len(NAMES) + offset + int(math.sqrt(params.get("sq", 0)))


def test_shipped_source_is_self_contained():
    src = ship_source(scaled.fn)
    assert "import math" in src and "SCALE = 3" in src and "NAMES = ['a', 'b']" in src
    assert "def helper(x):" in src and "@nf.task" not in src
    namespace: dict = {}
    exec(compile(task_program("scaled", src), "<t>", "exec"), namespace)
    assert namespace["main"]({"A": 1}, {"sq": 16}) == 2 * 3 + 2 + 0 + 4
    assert scaled(1, {}) == 8  # calling a task still runs it here


def test_refusals_say_what_to_do():
    with pytest.raises(nf.TaskError, match="lambda"):
        nf.task(lambda x: x)

    def outer():
        y = 2

        def inner(x):
            return x + y
        return inner
    with pytest.raises(nf.TaskError, match=r"enclosing function \(y\)"):
        nf.task(outer())

    lock = threading.Lock()
    globals()["_LOCK"] = lock

    def uses_lock(x):
        with _LOCK:  # noqa: F821
            return x
    t = nf.task(uses_lock)
    with pytest.raises(nf.TaskError, match="'_LOCK' \\(a lock\\), which cannot be sent"):
        nf.Flow("x").task(t)
    with pytest.raises(nf.TaskError, match="not a function"):
        nf.Flow("x").task(3)

    ns: dict = {}
    exec("def made(x):\n    return x\n", ns)
    with pytest.raises(nf.TaskError, match="cannot be read"):
        nf.task(ns["made"])
    with pytest.raises(nf.TaskError, match="async"):
        async def coro(x):
            return x
        nf.task(coro)


def test_node_config_and_validation():
    f = nf.Flow("t")
    a = f.transform("A", "2")
    node = f.task(scaled, timeout_s=30)
    a >> node
    assert node.id == "scaled" and node.type == "python_task"
    assert node.config["function"] == "scaled" and node.config["timeout_s"] == 30
    f.validate()
    node.set(source="def other(): pass\n")
    with pytest.raises(nf.FlowError, match="does not define a function scaled"):
        f.validate()


def test_a_task_program_runs_in_a_clean_subprocess():
    def run(program: str, payload: dict):
        return run_isolated("python", program, payload, policy="process")

    out, logs = run(task_program("f", "def f(inputs):\n    print('hi')\n"
                                      "    return sorted(inputs)\n"),
                    {"inputs": {"b": 1, "a": 2}, "params": {}})
    assert out == ["a", "b"] and logs == ["hi"]
    with pytest.raises(nf.NexusFlowError, match="ZeroDivisionError"):
        run(task_program("f", "def f():\n    return 1 / 0\n"), {"inputs": {}, "params": {}})
    env_probe = task_program("f", "import os\ndef f():\n    return sorted(os.environ)\n")
    out, _ = run(env_probe, {"inputs": {}, "params": {}})
    assert not any(k.startswith("NEXUSFLOW_") for k in out)


def test_tasks_run_on_workers(settings, engine, workers, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("NEXUSFLOW_CODE_ISOLATION", "process")
    settings = replace(settings, code_isolation="process")
    workers.settings = settings
    workers.start(2)

    @nf.task
    def shout(A, params):
        print("shouting", A)
        return {"text": f"{params['word'].upper()}!" * A}

    f = nf.Flow("tasks")
    a = f.transform("A", "2")
    a >> f.task(shout)
    bad = f.task(scaled, id="bad")  # parent 'A' missing: a clear binding error
    run_id = engine.start_run(f.to_dict(), inputs={"word": "hey"})
    run = wait_run(engine, run_id)
    assert run["nodes"]["shout"]["output"] == {"text": "HEY!HEY!"}
    assert run["nodes"]["bad"]["state"] == "failed"
    assert "no parent node and no run input is called 'A'" in run["nodes"]["bad"]["error"]
    log = engine.node_attempts(run_id, "shout")[0]["log"]
    assert "shouting 2" in log
    assert bad.id == "bad"
    json.dumps(f.to_dict())

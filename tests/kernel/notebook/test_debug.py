"""The notebook debug loop: ``run.debug``, ``run_here``, ``retry(update=True)``, ``Flow.test``,
pins and the cache from the notebook API, and the debug notebook (issue #15)."""

from __future__ import annotations

import json
import traceback

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel import task
from nexusflow_kernel.errors import NotFoundError
from nexusflow_kernel.notebook.debug import NodeRunError, debug_notebook, masked_paths
from nexusflow_kernel.notebook.tasks import call_task
from nexusflow_kernel.runstate.resume import IncompatibleUpdate


@pytest.fixture
def env(settings, monkeypatch):
    from tests.conftest import settings_env

    for key, value in settings_env(settings).items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("NEXUSFLOW_CODE_ISOLATION", "process")
    return settings


SCALE = 3


def wait_for(check, timeout: float = 30.0) -> None:
    """Wait until ``check()`` is true (a widget's follower thread applies the run's snapshot)."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def started(workers, *args: str):
    """Start workers and wait until they serve their queues (a busy machine is slow). They run
    code as this kernel asks (``env``: process), or the notebook's check refuses the run."""
    import time

    from nexusflow_kernel.workers import worker_count
    from tests.conftest import settings_env

    workers.start(1, *args, env={**settings_env(workers.settings),
                                 "NEXUSFLOW_CODE_ISOLATION": "process"})
    deadline = time.monotonic() + 90
    while worker_count(workers.settings) == 0:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)


@task
def divide(A, params):
    """Divide by the run input ``by`` (0 by default: fails)."""
    return {"value": A["total"] * SCALE // params["by"]}


def build() -> nf.Flow:
    f = nf.Flow("debugme", params={"by": {"type": "integer", "default": 0}})
    a = f.transform("A", "{'total': params['by'] + 10}")
    b = f.task(divide, id="B")
    c = f.transform("C", "inputs['B']['value'] + 1")
    side = f.transform("S", "'side'")
    a >> b >> c
    assert side.id == "S"
    return f


def test_debug_run_here_fix_and_resume(env, workers, tmp_path):
    started(workers)
    f = build()
    f.save(tmp_path / "debugme.nxflow")
    with pytest.raises(nf.RunFailed) as info:
        f.run(timeout=60, progress=False)
    run = nf.Run.attach(info.value.run_id)
    ctx = run.debug("B")
    assert ctx.recorded and ctx.inputs == {"A": {"total": 10}} and ctx.params == {"by": 0}
    assert ctx.type == "python_task" and ctx.state == "failed"
    assert "def divide(A, params):" in ctx.source and "SCALE = 3" in ctx.source
    assert "ZeroDivisionError" in ctx.error
    assert "inputs: {\"A\": {\"total\": 10}}" in repr(ctx) and "masked" not in repr(ctx)
    # The recorded source runs here, in this kernel: the error is the real one, traceback
    # lines from the task's source included.
    with pytest.raises(ZeroDivisionError) as err:
        ctx.run_here()
    text = "".join(traceback.format_exception(err.value))
    assert "<task B>" in text and "A[\"total\"] * SCALE // params[\"by\"]" in text
    assert ctx.run_here(params={"by": 2}) == {"value": 15}
    assert ctx.run_here(A={"total": 4}, params={"by": 2}) == {"value": 6}

    @task
    def divide(A, params):  # noqa: F811  (the fix, as a notebook cell redefines it)
        return {"value": A["total"] * SCALE // max(params["by"], 1)}

    assert ctx.run_here(task=divide) == {"value": 30}
    f.task(divide, id="B")
    run.retry(update=True, flow=f, wait=True, timeout=60)
    assert run.status == "succeeded" and run.outputs["C"] == 31
    assert run.last_update["rerun"] == ["B", "C"]
    assert [a["attempt"] for a in run.attempts("A")] == [1]  # A did not run again
    assert [a["status"] for a in run.attempts("B")] == ["failed", "succeeded"]
    assert run.nodes["B"]["version"] == run.nodes["A"]["version"] + 1
    # A change that does not fit what ran is refused by name.
    g = f.copy()
    g.remove("S")
    with pytest.raises(IncompatibleUpdate, match="'S'"):
        run.retry(from_node="C", update=True, flow=g)
    # Any node of any run: a succeeded one shows its output too.
    done = run.debug("C")
    assert done.output == 31 and done.inputs == {"B": {"value": 30}}
    with pytest.raises(NotFoundError):
        run.debug("nope")


def test_run_here_for_other_types(env, workers):
    from dataclasses import replace

    workers.settings = replace(env, code_isolation="process")
    started(workers, "--queues", "default,sandbox")
    f = nf.Flow("kinds", params={"k": {"type": "integer", "default": 4}})
    a = f.transform("A", "params['k'] + 1")
    code = f.code("K", "def main(inputs, params):\n    print('got', inputs['A'])\n"
                       "    return inputs['A'] * 10 // (params['k'] - 4)\n")
    t = f.transform("T", "inputs['A'] * 2")
    a >> [code, t]
    with pytest.raises(nf.RunFailed) as info:
        f.run(timeout=90, progress=False)
    run = nf.Run.attach(info.value.run_id)
    k = run.debug("K")
    assert k.inputs == {"A": 5} and "def main" in k.source
    with pytest.raises(NodeRunError) as err:
        k.run_here()  # in the sandbox (the process policy here), as on a worker
    assert "ZeroDivisionError" in str(err.value) and "Traceback" in str(err.value)
    assert k.run_here(params={"k": 5}) == 50 and "got 5" in k.last_log
    assert k.run_here(source="def main(inputs, params):\n    return inputs['A'] + 1\n") == 6
    tx = run.debug("T")
    assert tx.run_here() == 10 and tx.run_here(A=7) == 14
    assert tx.run_here(config={"expression": "inputs['A'] - 1"}) == 4


def test_masked_inputs_are_said_and_secrets_stay_on_workers():
    ctx_data = {
        "run_id": "r", "node_id": "N", "type": "http", "state": "failed", "attempt": 1,
        "version": 1, "recorded": True, "missing": [], "inputs": {"P": {"token": "***"}},
        "params": {}, "config": {"url": "http://x", "headers": {"A": {"$secret": "S"}}},
        "config_rendered": True, "code": None, "function": None, "error": "boom", "log": "",
        "node": {"id": "N", "type": "http",
                 "config": {"url": "http://x", "headers": {"A": {"$secret": "S"}}}}}
    from nexusflow_kernel.notebook.debug import NodeDebug

    ctx = NodeDebug(ctx_data, engine=None)  # type: ignore[arg-type]
    assert ctx.masked == ["/inputs/P/token"]
    assert "masked (***) at /inputs/P/token" in repr(ctx) and "saw *** there too" in repr(ctx)
    with pytest.raises(nf.NexusFlowError, match="secrets are resolved only on workers"):
        ctx.run_here()
    assert masked_paths({"a": ["x", "a***b"], "k/~": "***"}) == ["/a/1", "/k~1~0"]


def test_call_task_binds_like_the_worker():
    """The kernel's binding (``call_task``) and the worker's program bind the same way."""
    from nexusflow_worker.sandbox.isolation import run_isolated
    from nexusflow_worker.sandbox.task_node import task_program

    cases = [("def f(inputs, params):\n    return [inputs, params]\n", {"A": 1}, {"p": 2}),
             ("def f(A, p, z=9):\n    return [A, p, z]\n", {"A": 1}, {"p": 2}),
             ("def f(A, *rest, **kw):\n    return A\n", {"A": [1]}, {}),
             ("def f(missing):\n    return 1\n", {"A": 1}, {})]
    for source, inputs, params in cases:
        namespace: dict = {}
        exec(source, namespace)
        try:
            here = ("ok", call_task(namespace["f"], inputs, params))
        except TypeError as exc:
            here = ("error", str(exc))
        try:
            out, _logs = run_isolated("python", task_program("f", source),
                                      {"inputs": inputs, "params": params}, policy="none")
            there = ("ok", out)
        except nf.NexusFlowError as exc:
            there = ("error", str(exc))
        assert here[0] == there[0], (source, here, there)
        if here[0] == "ok":
            assert here == there
        else:
            assert "no parent node and no run input is called 'missing'" in here[1]
            assert "no parent node and no run input is called 'missing'" in there[1] or \
                "status 1" in there[1]


def test_flow_test_pins_and_cache_from_the_notebook(env, workers):
    started(workers)
    f = nf.Flow("tested", params={"n": {"type": "integer", "default": 3}})
    a = f.transform("A", "params['n'] * 2", cache=600)
    b = f.transform("B", "inputs['A'] + 1")
    a >> b
    assert f["A"].node["cache"] == {"ttl_s": 600}
    # No run yet: a root tests with no inputs; a child needs them.
    result = f.test("A")
    assert result.ok and result.output == 6 and "6" in repr(result)
    with pytest.raises(NotFoundError, match="give its inputs"):
        f.test("B")
    assert f.test("B", inputs={"A": 41}).output == 42
    run = f.run(timeout=60, progress=False)
    assert run.outputs["B"] == 7
    f["B"].set(expression="inputs['A'] * 100")
    assert f.test(b).output == 600  # the node as it is now, on the recorded inputs
    failed = f.test("B", inputs={"A": None}, params={})
    assert not failed.ok and failed.status == "failed" and failed.error
    with pytest.raises(nf.NexusFlowError, match="failed"):
        failed.raise_for_error()
    again = f.run(timeout=60, progress=False)
    assert again.info(outputs=True)["nodes"]["A"]["cached_from"]["run_id"] == run.id
    # The inline canvas gets it too (its cache badge): from the run's snapshot.
    shown = again.widget()
    wait_for(lambda: shown.status == "succeeded")
    assert shown.states["A"]["cachedFrom"] == {"run_id": run.id, "node_id": "A"}
    assert "cachedFrom" not in shown.states["B"] and "pinned" not in shown.states["A"]
    f.pin("A", 50, from_run=run.id)
    assert f["A"].node["pin"]["output"] == 50
    pinned = f.run(timeout=60, progress=False, use_pins=True)
    assert pinned.outputs["B"] == 5000 and pinned.nodes["A"]["pinned"]
    shown = pinned.widget()
    wait_for(lambda: shown.status == "succeeded")
    assert shown.states["A"]["pinned"] is True and "cachedFrom" not in shown.states["A"]
    f.unpin("A")
    assert "pin" not in f["A"].node


@task
def warm_up(pause):
    """A slow root: the canvas is up before the node after it is decided."""
    import time

    time.sleep(pause)
    return 1


@task
def settle(A, pause):
    """A slow node after the cached one: the run is still going when A's badge should show."""
    import time

    time.sleep(pause)
    return A


def first_decided(widget, node: str, sink: list) -> dict:
    """Return the first ``states`` the widget showed with ``node`` succeeded (``sink`` collects
    every ``states`` it took, from the follower thread)."""
    for states in sink:
        if states.get(node, {}).get("state") == "succeeded":
            return states
    raise AssertionError(f"{node} never succeeded in the widget: {sink[-1:]}")


def test_widget_badges_cache_hits_and_pins_while_the_run_goes_on(env, workers):
    """The inline canvas badges a node served from the cache or by its pin in the same update
    that shows it succeeded, while the node after it still runs: from the node's success event,
    not from the run's snapshot at its end (issue #15 review)."""
    started(workers)
    f = nf.Flow("live-badges", params={"pause": {"type": "number", "default": 1.5}})
    w = f.task(warm_up, id="W")
    a = f.transform("A", "inputs['W'] + 1", cache=600)
    s = f.task(settle, id="S")
    w >> a >> s
    first = f.run(timeout=90, progress=False)
    assert first.outputs["S"] == 2

    def watch(run):
        shown = run.widget()
        sink: list = [dict(shown.states)]
        shown.observe(lambda change: sink.append(dict(change["new"])), names="states")
        wait_for(lambda: shown.status == "succeeded", timeout=90)
        return first_decided(shown, "A", sink), shown

    states, shown = watch(f.run(wait=False, progress=False))
    assert states["A"].get("cachedFrom") == {"run_id": first.id, "node_id": "A"}, states
    assert states.get("S", {}).get("state") not in ("succeeded", "failed"), states
    assert shown.states["A"]["cachedFrom"]["run_id"] == first.id  # and the snapshot agrees
    assert "cachedFrom" not in shown.states["S"] and "pinned" not in shown.states["A"]

    f.pin("A", 41, from_run=first.id)
    states, shown = watch(f.run(wait=False, progress=False, use_pins=True))
    assert states["A"].get("pinned") is True and "cachedFrom" not in states["A"], states
    assert states.get("S", {}).get("state") not in ("succeeded", "failed"), states
    assert shown.states["A"]["pinned"] is True and shown.states["S"]["state"] == "succeeded"


def test_debug_notebook_cells():
    context = {"run_id": "0123456789ab", "node_id": "B", "type": "python_task",
               "state": "failed", "attempt": 1, "version": 2, "error": "boom",
               "function": "divide",
               "code": "# task divide, shipped by value from a notebook by Nexus-Flow\n"
                       "import math\n\nSCALE = 3\n\ndef divide(A):\n    return A\n"}
    nb = debug_notebook(context, "etl.nxflow")
    import nbformat

    nbformat.validate(nbformat.from_dict(nb))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    sources = [c["source"] for c in nb["cells"]]
    setup = sources[1]
    assert "nf.Run.attach('0123456789ab')" in setup and "ctx = run.debug('B')" in setup
    assert "f.link('etl.nxflow', push=False)" in setup
    cell = next(s for s in sources if "def divide" in s)
    assert cell.startswith("import math") and "@task\ndef divide(A):" in cell
    assert "shipped by value" not in cell
    assert any("ctx.run_here(task=divide)" in s for s in sources)
    assert any("f.task(divide, id='B')" in s and "run.retry(update=True, flow=f" in s
               for s in sources)
    # A child run's notebook: the fix goes into the sub-flow's file and the parent is retried
    # (a child retried on its own does not tell its parent).
    child = debug_notebook({**context, "parent": {"run_id": "fedcba9876543210",
                                                  "node_id": "S", "item": None}}, "lib.nxflow")
    text = "\n".join(c["source"] for c in child["cells"])
    assert "run.retry(" not in text and "f.task(divide, id='B')" in text
    assert "nf.Run.attach('fedcba9876543210')" in text and "node `S` of run `fedcba98`" in text
    assert "nexusflow retry fedcba9876543210 --update" in text
    code = debug_notebook({**context, "type": "code", "code": "print('''x''')"}, None)
    src = [c["source"] for c in code["cells"]]
    assert any(s.startswith("source = ") for s in src)
    namespace: dict = {}
    exec(next(s for s in src if s.startswith("source = ")).split("\n")[0], namespace)
    assert namespace["source"] == "print('''x''')"  # quoted safely
    assert not any("run.retry" in s for s in src)  # no flow file: nothing to write back to
    assert json.dumps(code)

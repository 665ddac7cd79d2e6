"""A notebook's runs and the live workers: every queue served, nodes nobody can take said at
once, code isolation that applies or a refusal that says it would not."""

from __future__ import annotations

import time

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.notebook.run import RunStalled
from nexusflow_kernel.workers import WorkersCannotRun, live_workers

WAITING = ("waiting: no live worker serves queue 'sandbox' "
           "(start `nexusflow worker --queues sandbox`)")


@pytest.fixture
def env(settings, monkeypatch):
    from tests.conftest import settings_env

    for key, value in settings_env(settings).items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("NEXUSFLOW_CODE_ISOLATION", "process")
    yield settings
    from nexusflow_kernel.notebook import run as run_module

    for kept in run_module._shared.values():  # workers="auto" keeps them for the kernel's life
        kept.stop()
    run_module._shared.clear()


def with_code() -> nf.Flow:
    f = nf.Flow("with-code")
    a = f.transform("A", "20")
    b = f.code("B", "def main(inputs, params):\n    return inputs['A'] + 1\n")
    a >> b >> f.transform("C", "inputs['B'] * 2")
    return f


def with_task() -> nf.Flow:
    @nf.task
    def double(A):
        return A * 2

    f = nf.Flow("with-task")
    f.transform("A", "21") >> f.task(double)
    return f


def wait_live(settings, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while True:  # live, and done checking for a Docker engine
        live = live_workers(settings)
        if len(live) >= n and all(w.code != "checking" for w in live):
            return
        assert time.monotonic() < end, f"the workers did not start: {live}"
        time.sleep(0.1)


def test_temporary_workers_serve_the_sandbox_queue_too(env):
    run = with_code().run(workers=1, timeout=90, progress=False)
    assert run.outputs["C"] == 42
    auto = with_code().run(workers="auto", timeout=90, progress=False)
    assert auto.outputs["C"] == 42


def test_auto_starts_workers_only_for_the_queues_nobody_serves(env, workers):
    workers.start(1)  # the default queue, like a worker started by hand
    wait_live(env, 1)
    run = with_code().run(workers="auto", timeout=90, progress=False)
    assert run.outputs["C"] == 42
    # "auto" starts two sandbox processes; one serving was enough for the run, the other may
    # still be registering on a busy machine.
    wait_live(env, 3)
    queues = sorted(tuple(w.queues) for w in live_workers(env))
    assert queues == [("default",), ("sandbox",), ("sandbox",)]  # two processes, as "auto" does


def test_a_run_that_would_wait_on_a_queue_nobody_serves_is_refused(env, workers):
    workers.start(1)
    wait_live(env, 1)
    before = len(_runs(env))
    started = time.monotonic()
    with pytest.raises(RunStalled) as info:
        with_code().run(timeout=60, progress=False)
    assert WAITING in str(info.value) and "workers=2" in str(info.value)
    assert time.monotonic() - started < 20  # waited for a worker that may be starting, then said
    assert len(_runs(env)) == before  # nothing was stored


def test_wait_says_which_node_waits_then_gives_up(env, workers, capsys):
    workers.start(1)
    wait_live(env, 1)
    run = with_code().run(wait=False)
    started = time.monotonic()
    with pytest.raises(RunStalled, match="node 'B': " + WAITING.replace("(", r"\(")
                       .replace(")", r"\)").replace("`", "`")):
        run.wait(timeout=90)  # text progress on stderr
    assert 15 <= time.monotonic() - started < 40
    lines = capsys.readouterr().err.splitlines()
    said = [line for line in lines if WAITING in line]
    assert said and said[0].startswith("with-code [running] 1/3 nodes done"), lines
    waits = {"kind": "worker", "queue": "sandbox", "message": WAITING}
    assert run.nodes["B"]["waiting"] == waits
    w = run.widget()  # the inline canvas carries it too
    assert w.states["B"] == {"state": "queued", "attempt": 1, "error": None, "waiting": waits}
    workers.start(1, "--queues", "sandbox")
    run.wait(timeout=60, progress=False)
    assert run.outputs["C"] == 42 and "waiting" not in run.nodes["B"]


def test_an_isolation_choice_applies_or_is_refused(env, settings, workers):
    from tests.conftest import settings_env

    theirs = settings_env(settings)
    theirs["NEXUSFLOW_CODE_ISOLATION"] = "none"  # how JupyterLab's workers might run code
    workers.start(1, "--queues", "default,sandbox", env=theirs)
    wait_live(env, 1)
    f = with_task()
    with pytest.raises(WorkersCannotRun) as info:
        f.run(timeout=60, progress=False)  # this kernel asks for "process"
    message = str(info.value)
    assert ("node 'double' runs code and this process asks for code isolation 'process' "
            "(NEXUSFLOW_CODE_ISOLATION), but it does not apply to this run: the live workers "
            "serving queue 'default' run code with 'none'") in message
    assert "in the environment of `jupyter lab`" in message
    with pytest.raises(WorkersCannotRun):  # workers of its own would share the queue
        f.run(workers=1, timeout=60, progress=False)
    workers.stop()
    run = f.run(workers=1, timeout=90, progress=False)  # now the choice applies
    assert run.outputs["double"] == 42


def test_workers_that_cannot_run_code_are_said_before_the_run(env, settings, workers):
    from tests.conftest import settings_env

    theirs = settings_env(settings)
    theirs.update(NEXUSFLOW_CODE_ISOLATION="auto", DOCKER_HOST="unix:///nonexistent/d.sock")
    workers.start(1, "--queues", "default,sandbox", env=theirs)
    wait_live(env, 1)
    env_free = dict(__import__("os").environ)
    assert env_free["NEXUSFLOW_CODE_ISOLATION"] == "process"
    with pytest.raises(WorkersCannotRun, match="cannot run code: code isolation 'auto' and no "
                       "Docker engine answers at unix:///nonexistent/d.sock"):
        with_task().run(timeout=60, progress=False)


def _runs(settings) -> list[dict]:
    from nexusflow_kernel.notebook.run import get_engine

    return get_engine().list_runs(limit=1000)

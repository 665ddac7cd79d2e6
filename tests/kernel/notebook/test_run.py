"""``Run`` handles on real PostgreSQL, Redis and workers: waiting, failures, control, attach."""

from __future__ import annotations

import time

import pytest

import nexusflow_kernel as nf
from nexusflow_kernel.errors import BackendUnavailable
from nexusflow_kernel.notebook.run import RunStalled, RunTimeout


@pytest.fixture
def env(settings, monkeypatch):
    from tests.conftest import settings_env

    for key, value in settings_env(settings).items():
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.setenv(key, value)
    return settings


def small() -> nf.Flow:
    f = nf.Flow("small", params={"n": {"type": "integer", "default": 2}})
    a = f.transform("A", "params['n'] * 2")
    c = f.condition("C", "inputs['A'] > 10")
    c.true >> f.transform("big", "'big'")
    c.false >> f.transform("small", "'small'")
    a >> c
    return f


def test_run_wait_outputs_logs_attach(env, workers, capsys):
    workers.start(2)
    run = small().run(inputs={"n": 3}, timeout=60)
    assert run.status == "succeeded" and run.done
    assert run.outputs["A"] == 6 and run.outputs["small"] == "small"
    assert set(run.outputs) == {"A", "C", "small"}
    with pytest.raises(KeyError, match="skipped"):
        run.outputs["big"]
    assert run.nodes["big"]["state"] == "skipped"
    assert "attempt 1: succeeded" in run.logs("A")
    assert "small [succeeded] 4/4 nodes done" in capsys.readouterr().err  # text progress
    again = nf.Run.attach(run.id)
    assert again.outputs.to_dict() == run.outputs.to_dict()
    assert "small: succeeded" in again.summary()
    with pytest.raises(nf.NexusFlowError, match="no run"):
        nf.Run.attach("00000000-0000-0000-0000-000000000000")


def test_failed_run_raises_one_error(env, workers):
    workers.start(1)
    f = nf.Flow("fails")
    f.transform("A", "1") >> f.transform("B", "inputs['A'] / 0")
    with pytest.raises(nf.RunFailed) as info:
        f.run(timeout=60, progress=False)
    err = info.value
    assert err.node == "B" and err.status == "failed" and "division" in err.error.lower()
    assert err.run_id in str(err) and "'B'" in str(err)
    run = nf.Run.attach(err.run_id)
    assert run.failure() is not None and run.outputs["A"] == 1


def test_wait_false_cancel_retry(env, workers):
    workers.start(2)
    f = nf.Flow("slow")
    f.node("sleep", "S", seconds=30) >> f.transform("T", "1")
    run = f.run(wait=False)
    deadline = time.monotonic() + 30
    while run.nodes["S"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(RunTimeout, match="goes on"):
        run.wait(timeout=0.5, progress=False)
    run.cancel()
    with pytest.raises(nf.RunFailed, match="canceled"):
        run.wait(timeout=30, progress=False)
    assert run.status == "canceled"
    # shorten S, then retry the same run: canceled nodes run again
    g = nf.Flow("quick")
    g.node("sleep", "S", seconds=0, fail_attempts=1) >> g.transform("T", "inputs['S']['attempt']")
    r = g.run(timeout=60, progress=False, wait=False)
    with pytest.raises(nf.RunFailed, match="on purpose"):
        r.wait(timeout=60, progress=False)
    r.retry(wait=True, timeout=60)
    assert r.status == "succeeded" and r.outputs["T"] == 2


def test_temporary_workers_and_no_workers(env):
    f = small()
    with pytest.raises(RunStalled, match="workers=2"):
        f.run(inputs={"n": 9})
    run = f.run(inputs={"n": 9}, workers=1, timeout=90, progress=False)
    assert run.outputs["big"] == "big"
    assert run._workers is None  # stopped once the run ended


def test_unreachable_services_say_what_to_do(monkeypatch):
    from nexusflow_kernel.notebook.run import get_engine
    from nexusflow_kernel.settings import Settings

    bad = Settings.from_env(database_url="postgresql://nobody@127.0.0.1:1/none",
                            redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="unset NEXUSFLOW_DATABASE_URL to use the "
                       "PostgreSQL that Nexus-Flow embeds"):
        get_engine(bad)
    assert time.monotonic() - started < 30


def test_run_widget_glows(env, workers):
    workers.start(2)
    f = small()
    run = f.run(inputs={"n": 30}, timeout=60, progress=False)
    w = run.widget()
    deadline = time.monotonic() + 10
    while w.status != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert w.states["A"]["state"] == "succeeded" and w.states["small"]["state"] == "skipped"
    assert w.run_id == run.id and [n["id"] for n in w.graph["nodes"]] == [
        "A", "C", "big", "small"]
    attached = nf.Run.attach(run.id).widget()  # drawn from the stored version
    assert {n["id"] for n in attached.graph["nodes"]} == {"A", "C", "big", "small"}
    bundle = run._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle

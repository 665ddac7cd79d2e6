"""Node packages on real workers: the example package's types run in a flow beside the
deliberately broken package (one of whose modules calls ``sys.exit`` when imported, another
tries to add ``os.system`` to the job allow-list); the workers stay up, run only Nexus-Flow's
job functions, and a worker without the package fails the node, naming what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis
from nftest import flow, node, settings_env, wait_for, wait_run, with_node_packages
from rq import Queue
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parents[2]

CSV = 'name,qty\nwidget,3\n"gadget, large",5\n'


def package_flow() -> dict:
    return flow(
        node("slug", "text.slugify", text="{{ params['title'] }}", max_length=40),
        node("rows", "text.csv_parse", text="{{ params['csv'] }}"),
        node("ok", "broken.ok", value="{{ inputs['slug'] }}"),
        node(
            "report",
            expression="{'slug': inputs['ok']['ok'], "
            "'first': inputs['rows']['rows'][0]['name'], "
            "'count': inputs['rows']['count']}",
        ),
        edges=[("slug", "ok"), ("ok", "report"), ("rows", "report")],
        name="packages",
        params={
            "title": {"type": "string", "default": "Crème Brûlée: Q3 Report!"},
            "csv": {"type": "string", "default": CSV},
        },
    )


def start_detached(settings, path: Path, env: dict[str, str]) -> str:
    """``nexusflow run FILE --detach`` in a process that has the node packages (it compiles
    the flow, so it must know the package's types); return the run id."""
    out = subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", "run", str(path), "--detach"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split()[-1]




def test_a_package_flow_runs_on_workers_beside_a_broken_package(
    settings, workers, engine, tmp_path
):
    env = with_node_packages(settings_env(settings))
    proc = workers.start(2, env=env)  # ready: no broken module took a worker down
    path = tmp_path / "packages.nxflow"
    path.write_text(json.dumps(package_flow()))
    run_id = start_detached(settings, path, env)
    run = wait_run(engine, run_id, timeout=90)
    assert run["status"] == "succeeded", run
    nodes = run["nodes"]
    assert nodes["slug"]["output"] == "creme-brulee-q3-report"
    assert nodes["rows"]["output"]["columns"] == ["name", "qty"]
    assert nodes["report"]["output"] == {
        "slug": "creme-brulee-q3-report",
        "first": "widget",
        "count": 2,
    }
    logs = engine.node_attempts(run_id, "rows")
    assert "2 rows of 2 columns" in logs[-1]["log"]

    # The package's module tried to add os.system to the allow-list when it was imported
    # (it failed: the allow-list is read-only, and the type is listed as broken); jobs that
    # name it, or a function of a package, are refused and never run.
    target = tmp_path / "ran"
    r = redis.Redis.from_url(settings.redis_url)
    q = Queue(settings.queue_name, connection=r, serializer=JSONSerializer)
    jobs = [
        q.enqueue("os.system", f"touch {target}"),
        q.enqueue("nexusflow_broken.types.not_a_type", str(target)),
    ]
    for job in jobs:
        wait_for(
            lambda j=job: (r.hget(f"rq:job:{j.id}", "status") or b"") == b"failed",
            30,
            f"job {job.id} refused",
        )
    refused = [json.loads(x) for x in r.lrange("nexusflow:refused-jobs", 0, -1)]
    reasons = {x["job"]: x["reason"] for x in refused}
    assert "'os.system' is not a Nexus-Flow job function" in reasons[jobs[0].id]
    assert (
        "'nexusflow_broken.types.not_a_type' is not a Nexus-Flow job function"
        in reasons[jobs[1].id]
    )
    assert not target.exists()
    assert proc.poll() is None

    # The workers still run flows after all that.
    again = wait_run(engine, start_detached(settings, path, env), timeout=90)
    assert again["status"] == "succeeded", again


def test_a_worker_without_the_package_fails_the_node_and_goes_on(
    settings, workers, engine, tmp_path
):
    workers.start(1)  # this environment: the example package is not installed here
    path = tmp_path / "packages.nxflow"
    path.write_text(
        json.dumps(
            flow(
                node("slug", "text.slugify", text="Hello"),
                node("after", expression="inputs['slug']"),
                edges=[("slug", "after")],
            )
        )
    )
    run = wait_run(
        engine,
        start_detached(settings, path, with_node_packages(settings_env(settings))),
        timeout=90,
    )
    assert run["status"] == "failed"
    assert (
        run["nodes"]["slug"]["error"] == "node type 'text.slugify' is not installed on this worker"
    )
    assert run["nodes"]["after"]["state"] == "skipped"
    ok = engine.start_run(flow(node("A", expression="1 + 1")))
    assert wait_run(engine, ok)["status"] == "succeeded"

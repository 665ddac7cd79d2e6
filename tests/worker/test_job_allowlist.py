"""Issue #13, finding 1: a Redis writer must not run code on the workers.

RQ's JSON serializer still lets a job name any importable function (``os.system``), any
builtin (``exec``), and callbacks (``on_success`` ...) that RQ imports and calls. Workers run
only Nexus-Flow's own job functions, checked before anything is imported; every other job is
refused loudly (a log line naming the function and the job, a counter in Redis, the job
failed) and never run. Each route an attacker with write access to Redis has is a test here,
against real worker processes, a real Redis and a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from nftest import flow, node, settings_env, wait_for, wait_run
from rq import Callback, Queue
from rq.command import send_shutdown_command
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from nexusflow_kernel.runstate.nodetests import TEST_JOB_FUNC
from nexusflow_kernel.transport.broker import JOB_FUNC, RUN_JOB_FUNC

CANARY = '''\
"""Importing this module, or calling run(), leaves a mark: the test fails if it is there."""
import os
import pathlib

pathlib.Path(os.environ["NF_CANARY_DIR"], "imported").write_text("imported")


def run(*args, **kwargs):
    pathlib.Path(os.environ["NF_CANARY_DIR"], "ran").write_text(repr(args))
'''


class Worker:
    """One ``nexusflow worker`` process whose log the test reads."""

    def __init__(self, settings, tmp_path: Path, queues: str = "default",
                 extra_env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
        env = settings_env(settings)
        env.update(extra_env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nexusflow_worker", "--processes", "1", "--grace", "5",
             "--queues", queues],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture
def canary(tmp_path: Path) -> dict[str, Any]:
    """A module on the workers' path whose import (or call) leaves a file behind."""
    name = f"nf_canary_{uuid.uuid4().hex[:8]}"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{name}.py").write_text(CANARY)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PYTHONPATH": os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]),
           "NF_CANARY_DIR": str(marks)}
    return {"name": name, "dir": marks, "env": env}


@pytest.fixture
def start_worker(settings, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(queues: str = "default", env: dict[str, str] | None = None) -> Worker:
        w = Worker(settings, tmp_path, queues, env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def conn_of(settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def attacker_queue(settings, name: str | None = None) -> Queue:
    """A queue as an attacker with access to Redis builds it (RQ's own client)."""
    return Queue(name or settings.queue_name, connection=conn_of(settings),
                 serializer=JSONSerializer)


def job_status(r: redis.Redis, job_id: str) -> str | None:
    raw = r.hget(Job.key_for(job_id), "status")
    return raw.decode() if raw else None




def refused_count(r: redis.Redis) -> int:
    return int(r.get("nexusflow:refused-jobs:count") or 0)


def refusals(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange("nexusflow:refused-jobs", 0, -1)]


def assert_refused(worker: Worker, r: redis.Redis, job_id: str, what: str,
                   count: int = 1) -> dict[str, Any]:
    """The job failed without running, the refusal was counted, and logged in one line."""
    status = wait_for(lambda: job_status(r, job_id) in ("finished", "failed", "stopped")
                      and job_status(r, job_id), 20, f"job {job_id} to end")
    assert status == "failed", f"job {job_id} {status}, not refused"
    wait_for(lambda: refused_count(r) >= count, 5, "the refusal counted")
    seen = [x for x in refusals(r) if x["job"] == job_id]
    assert seen, refusals(r)
    assert what in seen[0]["reason"], seen[0]
    lines = [ln for ln in worker.log().splitlines() if "refused RQ job" in ln and job_id in ln]
    assert len(lines) == 1, worker.log()
    assert what in lines[0], lines[0]
    assert r.zscore(f"rq:failed:{seen[0]['queue']}", job_id) is not None
    exc_info = Job.fetch(job_id, connection=r, serializer=JSONSerializer
                         ).latest_result().exc_string
    assert "refused" in exc_info and what in exc_info, exc_info
    assert worker.alive(), worker.log()
    return seen[0]


def no_marks(canary: dict[str, Any]) -> None:
    assert sorted(p.name for p in canary["dir"].iterdir()) == []


# ------------------------------------------------------------------------ the job's function


def test_os_system_is_refused_not_run(settings, start_worker, tmp_path: Path) -> None:
    """The issue's reproduction: ``enqueue("os.system", "id > /tmp/x")`` ran on a worker."""
    worker = start_worker()
    r = conn_of(settings)
    target = tmp_path / "pwned"
    job = attacker_queue(settings).enqueue("os.system", f"id > {target}")
    wait_for(lambda: job_status(r, job.id) in ("finished", "failed"), 20, "the job to end")
    assert not target.exists(), f"os.system ran: {target.read_text()}"
    rec = assert_refused(worker, r, job.id, "'os.system'")
    assert rec["func"] == "os.system" and rec["queue"] == settings.queue_name
    assert "not a Nexus-Flow job function" in rec["reason"]
    # `nexusflow worker status` shows the count and the refusal.
    from nexusflow_worker.cli import worker as worker_cli

    env = {k: v for k, v in settings_env(settings).items() if k.startswith("NEXUSFLOW_")}
    result = CliRunner().invoke(worker_cli, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["refused"]["count"] == 1
    assert shown["refused"]["latest"][0]["job"] == job.id
    assert [w["queues"] for w in shown["workers"]] == [[settings.queue_name]]
    text = CliRunner().invoke(worker_cli, ["status"], env=env).output
    assert "refused jobs: 1" in text and "'os.system'" in text, text


def test_builtin_exec_is_refused(settings, start_worker, tmp_path: Path) -> None:
    """RQ falls back to builtins for a name without a module: ``exec`` is code execution."""
    worker = start_worker()
    r = conn_of(settings)
    target = tmp_path / "pwned"
    job = attacker_queue(settings).enqueue("exec", f"open({str(target)!r}, 'w').write('x')")
    assert_refused(worker, r, job.id, "'exec'")
    assert not target.exists()


def test_unknown_module_is_never_imported(settings, start_worker, canary) -> None:
    """A refused name is not even imported (an import runs the module's code)."""
    worker = start_worker(env=canary["env"])
    r = conn_of(settings)
    job = attacker_queue(settings).enqueue(f"{canary['name']}.run", 1)
    assert_refused(worker, r, job.id, canary["name"])
    no_marks(canary)


@pytest.mark.parametrize("queue", ["sandbox", "custom"])
def test_every_queue_is_guarded(settings, start_worker, tmp_path: Path, queue: str) -> None:
    """The sandbox queue (code nodes) and any other queue a worker serves are guarded too."""
    name = {"sandbox": settings.sandbox_queue_name, "custom": "nf-extra"}[queue]
    worker = start_worker(queues=f"default,{queue if queue == 'sandbox' else name}")
    r = conn_of(settings)
    target = tmp_path / "pwned"
    job = attacker_queue(settings, name).enqueue("os.system", f"touch {target}")
    rec = assert_refused(worker, r, job.id, "'os.system'")
    assert rec["queue"] == name
    assert not target.exists()


def test_our_function_with_foreign_arguments_is_refused(settings, start_worker) -> None:
    """Nexus-Flow's own functions, but not with the arguments Nexus-Flow gives them."""
    worker = start_worker()
    r = conn_of(settings)
    q = attacker_queue(settings)
    bad = [
        q.enqueue(JOB_FUNC, "not-a-run-id", 0, 1),
        q.enqueue(JOB_FUNC, str(uuid.uuid4()), 0, 1, "extra"),
        q.enqueue(RUN_JOB_FUNC, str(uuid.uuid4()), "default", kwargs_from_attacker=1),
        q.enqueue(RUN_JOB_FUNC, str(uuid.uuid4()), "../../etc"),
        q.enqueue(TEST_JOB_FUNC, "'; DROP TABLE node_tests; --"),
        q.enqueue(TEST_JOB_FUNC, str(uuid.uuid4()), "extra"),
    ]
    for i, job in enumerate(bad, 1):
        assert_refused(worker, r, job.id, "argument", count=i)


def test_a_method_on_an_instance_is_refused(settings, start_worker) -> None:
    """Job data names ``(func_name, instance, args, kwargs)``; Nexus-Flow jobs have no
    instance."""
    r = conn_of(settings)
    q = attacker_queue(settings)
    job = q.enqueue(JOB_FUNC, str(uuid.uuid4()), 0, 1)
    raw = json.dumps(["format", "{}", [], {}]).encode()
    r.hset(job.key, "data", zlib.compress(raw))
    # The job waits in the queue already; the worker starts after the change.
    worker = start_worker()
    assert_refused(worker, r, job.id, "'format'")


# ------------------------------------------------------------------ other routes into code


@pytest.mark.parametrize("hook", ["on_success", "on_failure", "on_stopped"])
def test_callbacks_are_refused_and_never_imported(settings, start_worker, canary,
                                                  hook: str) -> None:
    """RQ imports and calls ``on_success``/``on_failure``/``on_stopped`` by name."""
    worker = start_worker(env=canary["env"])
    r = conn_of(settings)
    # execute_node of a run that does not exist succeeds with nothing to do, and one whose
    # run id is not a UUID fails: so either callback would be reached without the guard.
    args = ("not-a-uuid" if hook == "on_failure" else str(uuid.uuid4()), 0, 1)
    job = attacker_queue(settings).enqueue(JOB_FUNC, *args,
                                           **{hook: Callback(f"{canary['name']}.run")})
    wait_for(lambda: job_status(r, job.id) in ("finished", "failed"), 20, "the job to end")
    time.sleep(0.3)
    no_marks(canary)
    assert_refused(worker, r, job.id, "callback")


def test_failure_callback_of_an_abandoned_job_is_never_imported(settings, start_worker,
                                                                 canary) -> None:
    """A job planted in the started registry with an expired heartbeat: the worker's
    maintenance (at start) fails it as abandoned and RQ would import its failure callback."""
    r = conn_of(settings)
    q = attacker_queue(settings)
    job = q.enqueue(JOB_FUNC, str(uuid.uuid4()), 0, 1,
                    on_failure=Callback(f"{canary['name']}.run"))
    r.lrem(q.key, 0, job.id)
    registry = StartedJobRegistry(queue=q)
    r.zadd(registry.key, {f"{job.id}:{uuid.uuid4().hex}": time.time() - 3600})
    # Owned by a worker that looks alive, so the reconciler leaves the entry to RQ; started,
    # as a job whose worker died is (RQ 3 fails only those as abandoned).
    r.hset(job.key, mapping={"worker_name": "elsewhere:1", "status": "started"})
    r.set("nexusflow:alive:elsewhere:1", 1, ex=60)
    worker = start_worker(env=canary["env"])
    wait_for(lambda: job_status(r, job.id) == "failed", 20, "the abandoned job failed")
    time.sleep(0.5)
    no_marks(canary)
    assert worker.alive(), worker.log()


def test_webhooks_are_refused_and_never_sent(settings, start_worker) -> None:
    """RQ (2.12 and 3) sends HTTP requests a job asks for (``webhooks``): a request forged by anyone
    who can write to Redis, from inside the workers' network."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker = start_worker()
        r = conn_of(settings)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        job = attacker_queue(settings).enqueue(
            JOB_FUNC, str(uuid.uuid4()), 0, 1,
            webhooks=[Webhook(url, "finished"), Webhook(url, "failed", method="POST")])
        assert_refused(worker, r, job.id, "webhook")
        time.sleep(0.5)
        assert hits == []
    finally:
        server.shutdown()


def test_pickle_payload_is_refused_and_never_unpickled(settings, start_worker,
                                                       tmp_path: Path) -> None:
    """A pickle blob as job data (RQ's default serializer) is not loaded: workers read JSON."""
    target = tmp_path / "pwned"

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {target}",))

    r = conn_of(settings)
    q = attacker_queue(settings)
    job = q.enqueue(JOB_FUNC, str(uuid.uuid4()), 0, 1)
    r.hset(job.key, "data", zlib.compress(pickle.dumps(("os.system", None, [Boom()], {}))))
    r.hset(job.key, "meta", pickle.dumps({"x": Boom()}))
    worker = start_worker()
    assert_refused(worker, r, job.id, "JSON")
    time.sleep(0.5)
    assert not target.exists()


def test_malformed_job_hash_does_not_stop_the_worker(settings, start_worker, engine) -> None:
    """A job hash RQ cannot read made the worker quit; it is refused and the worker goes on."""
    r = conn_of(settings)
    q = attacker_queue(settings)
    job = q.enqueue(JOB_FUNC, str(uuid.uuid4()), 0, 1)
    r.hset(job.key, "created_at", "not a date")
    worker = start_worker()
    wait_for(lambda: refused_count(r) >= 1, 20, "the broken job refused")
    assert any(x["job"] == job.id for x in refusals(r))
    run = wait_run(engine, engine.start_run(flow(node("A", expression="1 + 1"))), 30)
    assert run["status"] == "succeeded", run
    assert worker.alive()
    assert worker.proc.pid and "exited" not in worker.log(), worker.log()


def test_a_foreign_dependent_job_is_refused(settings, start_worker, tmp_path: Path) -> None:
    """A job waiting on another (RQ ``depends_on``) is enqueued by RQ when that one ends; it
    goes through the same check."""
    worker = start_worker()
    r = conn_of(settings)
    q = attacker_queue(settings)
    target = tmp_path / "pwned"
    first = q.enqueue(RUN_JOB_FUNC, str(uuid.uuid4()), "default")
    second = q.enqueue("os.system", f"touch {target}", depends_on=first)
    wait_for(lambda: job_status(r, second.id) == "failed", 20, "the dependent refused")
    assert any(x["job"] == second.id for x in refusals(r)), refusals(r)
    assert not target.exists()
    assert worker.alive()


def test_garbage_on_the_command_channel_does_not_break_the_worker(settings, start_worker,
                                                                  engine) -> None:
    """RQ's pubsub command channel (``send_command``) carries stop-job, kill-horse and
    shutdown. A payload that is not JSON, or names no command, ended the thread that listens
    (so a cancel no longer reached the worker); now it is ignored and commands still work."""
    worker = start_worker()
    r = conn_of(settings)
    key = wait_for(lambda: r.smembers("rq:workers"), 20, "the worker registered").pop()
    name = key.decode()[len("rq:worker:"):]
    channel = f"rq:pubsub:{name}"
    # The worker registers, then subscribes: a message published before that is lost.
    wait_for(lambda: dict(r.pubsub_numsub(channel)).get(channel.encode()), 20,
             "the worker to listen on its command channel")
    for payload in (b"\x80\x04not json", b"[]", b'{"nocommand": 1}',
                    b'{"command": "exec", "code": "1"}'):
        r.publish(channel, payload)
    time.sleep(0.5)
    send_shutdown_command(r, name)  # still heard: the worker stops, the supervisor restarts it
    wait_for(lambda: key not in r.smembers("rq:workers"), 20, "the worker to hear the shutdown")
    run = wait_run(engine, engine.start_run(flow(node("A", expression="2 * 21"))), 30)
    assert run["status"] == "succeeded", run
    assert worker.alive()
    assert "ignored a malformed command" in worker.log(), worker.log()


# --------------------------------------------------------------- what Nexus-Flow pushes runs


def test_engine_jobs_of_every_kind_run_with_nothing_refused(settings, start_worker,
                                                            engine) -> None:
    """Run jobs, node jobs, the timer's delayed jobs and retries all pass the check."""
    start_worker(queues="default,sandbox")
    r = conn_of(settings)
    doc = flow(
        node("A", expression="params['n']"),
        node("wait", "delay", seconds=0.3),
        node("flaky", "sleep", seconds=0, fail_attempts=1,
             retry={"max_attempts": 2, "backoff_s": 0.2}),
        node("B", expression="inputs['flaky']['attempt']"),
        edges=[("A", "wait"), ("wait", "flaky"), ("flaky", "B")],
    )
    run = wait_run(engine, engine.start_run(doc, inputs={"n": 1}), 60)
    assert run["status"] == "succeeded", {k: v.get("error") for k, v in run["nodes"].items()}
    assert run["nodes"]["B"]["output"] == 2
    assert refused_count(r) == 0, refusals(r)


# ------------------------------------------------------------- siblings in what pushes jobs


RQ_CLASSES = {"Queue", "Worker", "SimpleWorker", "NodeWorker", "ForkingNodeWorker", "RQWorker"}
REGISTRIES = {"StartedJobRegistry", "FailedJobRegistry", "FinishedJobRegistry",
              "ScheduledJobRegistry", "DeferredJobRegistry", "CanceledJobRegistry"}


def test_every_rq_object_names_the_json_serializer() -> None:
    """RQ's default serializer is pickle: every queue, worker, job fetch and registry that
    Nexus-Flow makes says JSON (a registry may take it from its queue)."""
    import ast

    root = Path(__file__).resolve().parents[2]
    faults = []
    for package in ("nexusflow_kernel", "worker/nexusflow_worker", "server_ext/nexusflow_server"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                func = call.func
                name = func.id if isinstance(func, ast.Name) else \
                    func.attr if isinstance(func, ast.Attribute) else ""
                owner = func.value.id if isinstance(func, ast.Attribute) and \
                    isinstance(func.value, ast.Name) else ""
                keywords = {k.arg for k in call.keywords}
                wants = (name in RQ_CLASSES or (name in ("all", "fetch", "fetch_many")
                                                and owner in RQ_CLASSES | {"Job", "GuardedJob"}))
                if wants and "serializer" not in keywords:
                    faults.append(f"{path.relative_to(root)}:{call.lineno} {ast.unparse(call)}")
                if name in REGISTRIES and not keywords & {"serializer", "queue"}:
                    faults.append(f"{path.relative_to(root)}:{call.lineno} {ast.unparse(call)}")
    assert faults == []


def test_a_malformed_waiting_job_does_not_hold_up_the_others(settings) -> None:
    """The timer's waiting set is Redis too: an entry that does not parse is dropped (and
    logged) instead of failing the whole batch it was taken out with."""
    from nexusflow_kernel.services import resolve_backends
    from nexusflow_kernel.transport.broker import DUE_JOBS_KEY, DUE_KEY, Broker

    broker = Broker(resolve_backends(settings))
    r = broker.redis
    now = time.time()
    run_id = str(uuid.uuid4())
    r.hset(DUE_JOBS_KEY, mapping={"bad": "not json", "short": json.dumps([run_id, 0]),
                                  "good": json.dumps([run_id, 0, 2, "default", False])})
    r.zadd(DUE_KEY, {"bad": now - 3, "short": now - 2, "good": now - 1})
    assert broker.release_due(now) == 1
    queue = attacker_queue(settings)
    (job_id,) = queue.get_job_ids()
    job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert (job.func_name, job.args) == (JOB_FUNC, [run_id, 0, 2])
    assert r.zcard(DUE_KEY) == 0 and r.hlen(DUE_JOBS_KEY) == 0

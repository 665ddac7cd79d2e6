"""Which RQ jobs a worker runs: Nexus-Flow's own job functions, and nothing else.

An RQ job is a Redis hash naming a function. RQ resolves that name with ``import_attribute``:
any importable function (``os.system``), any builtin (``exec``), and the module it names is
imported first (importing runs the module's code). It imports callbacks (``on_success``,
``on_failure``, ``on_stopped``) the same way, even while failing an abandoned job, and sends
the HTTP requests a job lists as ``webhooks``. So whoever can write to Redis could run code on
every worker, as the worker's user, with its credentials and its Docker socket.

Workers therefore use ``GuardedJob``: its function comes from ``ALLOWED`` (a name maps to a
function object imported here; nothing is looked up by name), its callbacks are never
imported and its webhooks never sent. ``refusal`` says why a job must not run; the worker asks
it before anything of the job is resolved (``GuardedWorker.execute_job``) and refuses such a
job loudly: one log line with the function and job id, a counter and a short list in Redis
(``nexusflow worker status`` shows them), the job failed in RQ's failed registry. The check
is the same on every queue a worker serves (default, sandbox, any other).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from redis import Redis
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import decode_redis_hash, now

from nexusflow_kernel import defaults
from nexusflow_kernel.runstate.nodetests import TEST_JOB_FUNC
from nexusflow_kernel.transport.broker import JOB_FUNC, RUN_JOB_FUNC

from .jobs import execute_node, execute_run
from .nodetests import execute_test

logger = logging.getLogger(__name__)

REFUSED_COUNT_KEY = f"{defaults.KEY_PREFIX}:refused-jobs:count"
"""How many jobs the workers refused, ever (a Redis counter)."""

REFUSED_LIST_KEY = f"{defaults.KEY_PREFIX}:refused-jobs"
"""The latest refusals, newest first, as JSON objects (job, func, queue, reason, worker, at)."""

REFUSED_KEEP = 100
"""How many refusals ``REFUSED_LIST_KEY`` keeps."""

_QUEUE_ARG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_INT = 2**31 - 1


class JobRefused(Exception):
    """A job that is not one of Nexus-Flow's own was about to run."""


def _run_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"argument run_id {value!r} is not a run id"
    try:
        uuid.UUID(value)
    except ValueError:
        return f"argument run_id {value[:80]!r} is not a run id"
    return None


def _count(value: Any, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        return f"argument {what} {str(value)[:80]!r} is not a count"
    return None


def _node_job_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    if kwargs or len(args) != 3:
        return "the arguments are not (run_id, idx, attempt)"
    return _run_id(args[0]) or _count(args[1], "idx") or _count(args[2], "attempt")


def _run_job_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    if kwargs or len(args) != 2:
        return "the arguments are not (run_id, queue)"
    queue = args[1]
    if not isinstance(queue, str) or not _QUEUE_ARG.fullmatch(queue):
        return f"argument queue {str(queue)[:80]!r} is not a queue name"
    return _run_id(args[0])


def _test_job_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    if kwargs or len(args) != 1:
        return "the arguments are not (test_id,)"
    return None if _run_id(args[0]) is None else f"argument test_id {str(args[0])[:80]!r} " \
        "is not a test id"


ALLOWED: Mapping[str, tuple[Callable[..., Any], Callable[..., str | None]]] = MappingProxyType({
    JOB_FUNC: (execute_node, _node_job_args),
    RUN_JOB_FUNC: (execute_run, _run_job_args),
    TEST_JOB_FUNC: (execute_test, _test_job_args),
})
"""The only functions a worker runs: RQ name -> (function, check of its arguments). Read-only:
nothing loaded later (a node package's module, a node type) can add a name to it. Node types
from packages run inside ``execute_node`` like the built-in ones."""


class GuardedJob(Job):
    """An RQ job that can only ever call a function of ``ALLOWED``.

    Its function comes from ``ALLOWED``, never from ``import_attribute``; callbacks are never
    imported (RQ calls them from several places, including the registry cleanup of abandoned
    jobs); webhooks are never sent; a hash RQ cannot read becomes a job to refuse instead of
    an exception that stops the worker.
    """

    restore_error: str | None = None
    asks_webhooks: bool = False

    def restore(self, raw_data: Any) -> None:
        try:
            self.asks_webhooks = bool(decode_redis_hash(raw_data).get("webhooks"))
            super().restore(raw_data)
        except NoSuchJobError:
            raise
        except Exception as exc:
            self.restore_error = f"{type(exc).__name__}: {exc}"[:300]

    @property
    def func(self) -> Callable[..., Any]:
        reason = refusal(self)
        if reason is not None:
            raise JobRefused(reason)
        return ALLOWED[self.func_name][0]  # type: ignore[index]

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None


def refusal(job: Job) -> str | None:
    """Return why ``job`` must not run on a worker, or None for one of Nexus-Flow's jobs.

    Looks at the job's data without resolving anything: nothing is imported or called.
    """
    restore_error = getattr(job, "restore_error", None)
    if restore_error:
        return f"its Redis hash cannot be read ({restore_error})"
    try:
        func_name = job.func_name
        instance, args, kwargs = job.instance, job.args, job.kwargs
    except DeserializationError:
        return ("its data is not the JSON Nexus-Flow writes (a pickle or any other payload is "
                "never loaded)")
    if not isinstance(func_name, str) or func_name not in ALLOWED:
        return f"function {str(func_name)[:200]!r} is not a Nexus-Flow job function"
    callbacks = [name for name in (job._success_callback_name, job._failure_callback_name,
                                   job._stopped_callback_name) if name]
    if callbacks:
        listed = ", ".join(repr(n[:200]) for n in callbacks)
        return f"it names a callback ({listed}); Nexus-Flow jobs have none"
    if job.webhooks or getattr(job, "asks_webhooks", False):
        return "it asks for webhooks; Nexus-Flow jobs send none"
    if instance is not None:
        return f"it calls {func_name!r} on an instance; Nexus-Flow jobs call plain functions"
    if job._dependency_ids:
        return "it depends on other RQ jobs; Nexus-Flow jobs have no RQ dependencies"
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        return "its arguments are not a list and a mapping"
    return ALLOWED[func_name][1](tuple(args), kwargs)


def _func_name(job: Job) -> str | None:
    try:
        name = job.func_name
    except Exception:
        return None
    return name[:200] if isinstance(name, str) else None


def refuse(connection: Redis, job: Job, queue: Any, reason: str, worker_name: str) -> None:
    """Fail ``job`` without running it: log one line, count it, put it in the failed registry."""
    func = _func_name(job)
    logger.error(
        "refused RQ job %s from queue %s: %s; it was not run (workers run only Nexus-Flow's "
        "own job functions; whoever can write to Redis is inside the trust boundary, see "
        "docs/security.md)", job.id, queue.name, reason)
    record = {"job": job.id, "func": func, "queue": queue.name, "reason": reason,
              "worker": worker_name, "at": time.time()}
    exc_string = f"refused by Nexus-Flow: {reason}"
    with connection.pipeline() as pipe:
        # Dequeued from a single queue, the id waits in RQ's intermediate list: take it out.
        pipe.lrem(queue.intermediate_queue_key, 1, job.id)
        pipe.incr(REFUSED_COUNT_KEY)
        pipe.lpush(REFUSED_LIST_KEY, json.dumps(record))
        pipe.ltrim(REFUSED_LIST_KEY, 0, REFUSED_KEEP - 1)
        if getattr(job, "restore_error", None) is None:
            job.ended_at = now()
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            FailedJobRegistry(queue.name, connection=connection, job_class=type(job),
                              serializer=job.serializer).add(
                job, ttl=job.failure_ttl, exc_string=exc_string, pipeline=pipe)
            Result.create_failure(job, job.failure_ttl, exc_string, worker_name=worker_name,
                                  pipeline=pipe)
        else:  # RQ cannot save what it could not read: mark the raw hash
            pipe.hset(job.key, mapping={"status": JobStatus.FAILED.value,
                                        "exc_info": exc_string})
            pipe.zadd(FailedJobRegistry(queue=queue).key,
                      {job.id: time.time() + 24 * 3600})
        pipe.execute()


def refusal_report(connection: Redis, limit: int = 10) -> dict[str, Any]:
    """Return ``{"count": n, "latest": [...]}``: what the workers refused (newest first)."""
    count = int(connection.get(REFUSED_COUNT_KEY) or 0)
    latest = []
    for raw in connection.lrange(REFUSED_LIST_KEY, 0, max(0, limit - 1)):
        try:
            latest.append(json.loads(raw))
        except ValueError:
            latest.append({"reason": "(unreadable entry)"})
    return {"count": count, "latest": latest}


class GuardedWorker:
    """Mixed into the RQ worker classes: refuse a job before it is prepared or forked."""

    job_class = GuardedJob

    def execute_job(self, job: Job, queue: Any) -> None:
        reason = refusal(job)
        if reason is not None:
            refuse(self.connection, job, queue, reason, self.name)  # type: ignore[attr-defined]
            return
        super().execute_job(job, queue)  # type: ignore[misc]

    def handle_payload(self, message: Any) -> None:
        """Ignore a command on RQ's pubsub channel that is not one RQ's ``send_command``
        writes, instead of letting it end the thread that listens for cancels."""
        try:
            super().handle_payload(message)  # type: ignore[misc]
        except Exception as exc:
            logger.warning("ignored a malformed command on the worker's channel: %s",
                           str(exc)[:200])

"""The ``Run`` handle a notebook gets from ``flow.run()``, and ``RunFailed``.

A run lives in PostgreSQL, not in the kernel: restarting the kernel changes nothing for the
run, and ``Run.attach(run_id)`` in a new kernel picks it up again. Waiting is bounded: when no
worker serves the queue, or PostgreSQL or Redis do not answer, ``wait`` raises one clear
error instead of hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import remote
from ..defaults import NO_WORKER_WAIT_S
from ..errors import NexusFlowError, NotFoundError
from ..remote import RemoteEngine, local_workers_allowed, open_engine
from ..settings import Settings, mask_url
from ..transport.presence import no_worker_message, serving
from ..workers import (
    LocalWorkers,
    WorkersCannotRun,
    check_code_isolation,
    isolation_choice,
    live_workers,
    queues_needed,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..model.compiler import CompiledFlow
    from .debug import NodeDebug


class Runnable(Protocol):
    """What a run starts from: a ``Flow`` (this module sits below ``flow``, so it names the
    builder's shape, not its class)."""

    name: str
    path: Path | None

    def validate(self) -> CompiledFlow: ...

    def to_dict(self) -> dict[str, Any]: ...

FINAL = ("succeeded", "failed", "canceled")
NODE_FINAL = ("succeeded", "failed", "skipped", "canceled")

STALL_S = NO_WORKER_WAIT_S
"""How long ``wait`` follows a run whose queued node no live worker serves before giving up."""


class RunFailed(NexusFlowError):
    """A run ended failed or canceled; names the run, the failed node and its error."""

    def __init__(self, run_id: str, status: str, node: str | None = None,
                 error: str | None = None, *, name: str | None = None) -> None:
        self.run_id = run_id
        self.status = status
        self.node = node
        self.error = error
        self.run: Run | None = None
        """The handle of the run (set when a ``Run`` raised this): ``failure.run.debug(node)``,
        ``failure.run.retry(update=True)`` with the flow it was started from."""
        what = f"run {run_id}" + (f" of flow {name!r}" if name else "")
        if status == "canceled":
            message = f"{what} was canceled"
        elif node:
            message = f"{what} failed at node {node!r}: {error or 'no error text'}"
        else:
            message = f"{what} failed: {error or 'no error text'}"
        super().__init__(message + f" (see run.logs({node!r}))" if node else message)


class RunStalled(NexusFlowError):
    """A run cannot make progress now (no worker serves its queue); it is kept, not lost."""


class RunTimeout(NexusFlowError):
    """``wait`` gave up after its timeout; the run goes on."""


# ---------------------------------------------------------------------- engines
_engines: dict[tuple[str | None, ...], Engine | RemoteEngine] = {}
_engines_lock = threading.Lock()


def get_engine(settings: Settings | None = None) -> Engine | RemoteEngine:
    """Return this kernel's engine for ``settings`` (from the environment by default).

    With ``NEXUSFLOW_SERVICE_URL`` (a JupyterHub with the Nexus-Flow service) it is the
    service's client, which holds no credentials but the user's token. Otherwise, with no
    ``NEXUSFLOW_DATABASE_URL``/``NEXUSFLOW_REDIS_URL``, the embedded services are started (or
    found). Unreachable servers raise ``BackendUnavailable`` saying what to do.
    """
    settings = settings or Settings.from_env()
    key = (settings.service_url, settings.service_token, settings.database_url,
           settings.redis_url, str(settings.data_dir))
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        engine = open_engine(settings)  # unreachable: BackendUnavailable saying what to do
        engine.check()
        _engines[key] = engine
        return engine


def start_run(flow: Runnable, inputs: Mapping[str, Any] | None, *, wait: bool,
              workers: int | str | None, timeout: float | None, progress: bool,
              settings: Settings | None, use_pins: bool = False, cache: bool = True,
              env: str | None = None) -> Run:
    """Start ``flow`` (see ``Flow.run``) and return its handle.

    Temporary workers (``workers=N`` or ``"auto"``) serve every queue the flow needs. Before
    anything is stored, the live workers are checked: a queue nobody serves refuses a waiting
    run (``RunStalled``), and code nodes that the workers cannot run, or would run otherwise
    than this kernel's ``NEXUSFLOW_CODE_ISOLATION`` asks, raise ``WorkersCannotRun``.
    """
    compiled = flow.validate()  # a flow with errors raises before anything is stored
    engine = get_engine(settings)
    needed = list(queues_needed(compiled))
    local = None
    if workers == "auto":
        _auto_workers(engine, needed)
    elif workers:
        local_workers_allowed(engine, f"flow.run(workers={workers!r})")
        local = LocalWorkers(int(workers), settings=engine.settings, queues=needed)
    try:
        if local is not None:
            local.wait_ready(timeout=60)
        _check_workers(engine, compiled, needed, wait=wait)
        source = str(flow.path.resolve()) if flow.path is not None else None
        run_id = engine.start_run(compiled, inputs=dict(inputs or {}), source=source,
                                  trigger="notebook", use_pins=use_pins, cache=cache,
                                  env=env)
    except BaseException:
        if local is not None:
            local.stop()
        raise
    run = Run(run_id, engine=engine, flow=flow, workers=local)
    for widget in getattr(flow, "_widgets", ()):  # the flow's inline canvases show it live
        widget.follow(run)
    if wait:
        run.wait(timeout=timeout, progress=progress)
    return run


WORKER_WAIT_S = 10.0
"""How long ``flow.run`` waits for a worker to appear on each queue before it refuses
(JupyterLab's take a few seconds to start after the server)."""


def _check_workers(engine: Engine | RemoteEngine, compiled: CompiledFlow, queues: list[str],
                   *, wait: bool) -> None:
    """Refuse a run the live workers would leave waiting (when ``wait``), or whose code nodes
    they cannot run as asked. The service's workers are the service's to check."""
    within = WORKER_WAIT_S if wait else 0.0
    if isinstance(engine, RemoteEngine):
        if wait and not _some_remote_worker(engine, within):
            raise RunStalled(_no_workers(engine))
        return
    end = time.monotonic() + within
    while True:
        live = live_workers(engine.settings, redis=engine.redis)
        missing = [q for q in queues if not serving(live, q)]
        if not missing or time.monotonic() >= end:
            break
        time.sleep(0.2)
    if missing and wait:
        raise RunStalled(_no_workers(engine, missing[0]))
    check_code_isolation(compiled, live, isolation_choice(engine.configured))


def _some_remote_worker(engine: RemoteEngine, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while True:
        if remote.live_workers(engine) > 0:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.2)


_shared: dict[tuple[str, tuple[str, ...]], LocalWorkers] = {}


def _auto_workers(engine: Engine | RemoteEngine, queues: list[str], processes: int = 2) -> None:
    """Start workers kept for this kernel's life for the queues no live worker serves
    (``workers="auto"``), and wait until they serve them."""
    if isinstance(engine, RemoteEngine):
        if remote.live_workers(engine) == 0:
            local_workers_allowed(engine, "flow.run(workers='auto') found no worker")
        return
    live = live_workers(engine.settings, redis=engine.redis)
    missing = tuple(q for q in queues if not serving(live, q))
    if not missing:
        return
    key = (engine.settings.redis_url or "", missing)
    mine = _shared.get(key)
    if mine is None or not mine.running:
        mine = _shared[key] = LocalWorkers(processes, settings=engine.settings, queues=missing)
    mine.wait_ready(timeout=60)


def _no_workers(engine: Engine | RemoteEngine, queue: str = "default") -> str:
    if isinstance(engine, RemoteEngine):
        return (f"no worker serves the Nexus-Flow service at {engine.url}: its workers are "
                "down or busy starting; ask whoever runs the service")
    return (f"{no_worker_message(queue)} on {mask_url(engine.settings.redis_url)}; "
            "JupyterLab's Nexus-Flow extension starts local workers, or pass workers=2 (or "
            "workers='auto') to flow.run() to start temporary ones for this run")


# ---------------------------------------------------------------------- the handle
class Outputs(Mapping[str, Any]):
    """Node outputs of a run, read from PostgreSQL: ``run.outputs['A']``."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def _nodes(self) -> dict[str, Any]:
        return self._run.info(outputs=True)["nodes"]

    def __getitem__(self, node_id: str) -> Any:
        nodes = self._nodes()
        if node_id not in nodes:
            known = ", ".join(nodes) or "none"
            raise KeyError(f"run {self._run.id} has no node {node_id!r} (nodes: {known})")
        node = nodes[node_id]
        if node["state"] != "succeeded":
            raise KeyError(f"node {node_id!r} of run {self._run.id} has no output: it is "
                           f"{node['state']}" + (f" ({node['error']})" if node["error"] else ""))
        return node["output"]

    def __iter__(self) -> Iterator[str]:
        return iter({k for k, v in self._nodes().items() if v["state"] == "succeeded"})

    def __len__(self) -> int:
        return sum(1 for v in self._nodes().values() if v["state"] == "succeeded")

    def to_dict(self) -> dict[str, Any]:
        return {k: v["output"] for k, v in self._nodes().items() if v["state"] == "succeeded"}

    def __repr__(self) -> str:
        return repr(self.to_dict())


class Items(list[dict[str, Any]]):
    """One page of a map node's items (a list), with ``total`` (items matching),
    ``counts`` (the map's: total, done, running, succeeded, failed, canceled; ``None``
    before the map starts) and ``offset``."""

    def __init__(self, run: Run, node_id: str, page: Mapping[str, Any], *, limit: int,
                 state: str | None) -> None:
        super().__init__(page.get("items") or [])
        self.run = run
        self.node_id = node_id
        self.total: int = int(page.get("total") or 0)
        self.counts: dict[str, int] | None = page.get("counts")
        self.offset: int = int(page.get("offset") or 0)
        self.limit = limit
        self.state = state

    def next(self) -> Items | None:
        """Return the following page, or ``None`` after the last."""
        after = self.offset + len(self)
        if not self or after >= self.total:
            return None
        return self.run.items(self.node_id, offset=after, limit=self.limit, state=self.state)

    def __repr__(self) -> str:
        shown = f"items {self.offset}..{self.offset + len(self) - 1}" if self else "no items"
        return f"<{shown} of {self.total} of map {self.node_id!r}>"


class Run:
    """A run of a flow: status, outputs, logs, control, and the live canvas."""

    def __init__(self, run_id: str, *, engine: Engine | RemoteEngine | None = None,
                 flow: Runnable | None = None,
                 workers: LocalWorkers | None = None) -> None:
        self.id = run_id
        self.engine = engine or get_engine()
        self.flow = flow
        self._workers = workers
        self._header: dict[str, Any] | None = None
        self.last_update: dict[str, Any] | None = None
        """What the last ``retry(update=True)`` did: version, nodes run again, stale nodes."""

    @classmethod
    def attach(cls, run_id: str, *, settings: Settings | None = None) -> Run:
        """Return the handle of an existing run (from another kernel, the canvas or the CLI)."""
        run = cls(run_id, engine=get_engine(settings))
        run.info(outputs=False)  # NotFoundError now, not later
        return run

    # -------------------------------------------------------------- reading
    def info(self, *, outputs: bool = False) -> dict[str, Any]:
        """Return the run as stored: status, inputs, and each node's state (and output)."""
        data = self.engine.get_run(self.id, outputs=outputs)
        self._header = data
        return data

    @property
    def status(self) -> str:
        """``running``, ``succeeded``, ``failed`` or ``canceled``."""
        return self.info()["status"]

    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def name(self) -> str:
        return (self._header or self.info())["name"]

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """Return each node's state, attempts, timing and error."""
        return self.info()["nodes"]

    @property
    def outputs(self) -> Outputs:
        """Node outputs by node id (only nodes that succeeded have one)."""
        return Outputs(self)

    def attempts(self, node_id: str) -> list[dict[str, Any]]:
        """Return the attempts of one node: status, input, output, error, log, worker, timing."""
        return self.engine.node_attempts(self.id, node_id)

    def logs(self, node_id: str) -> str:
        """Return the log text of every attempt of ``node_id``."""
        parts = []
        for a in self.attempts(node_id):
            head = f"--- attempt {a['attempt']}: {a['status']}"
            if a.get("worker"):
                head += f" on {a['worker']}"
            body = (a.get("log") or "").rstrip()
            if a.get("error"):
                body = (body + "\n" if body else "") + f"error: {a['error']}"
            parts.append(head + ("\n" + body if body else ""))
        return "\n".join(parts)

    def failure(self) -> RunFailed | None:
        """Return the ``RunFailed`` this run would raise, or ``None`` if it did not fail."""
        data = self.info()
        if data["status"] not in ("failed", "canceled"):
            return None
        failed = [(k, v) for k, v in data["nodes"].items() if v["state"] == "failed"]
        node, error = (failed[0][0], failed[0][1]["error"]) if failed else (None, None)
        failure = RunFailed(self.id, data["status"], node, error, name=data["name"])
        failure.run = self
        return failure

    def events(self, after: str = "0-0", block_ms: int | None = None
               ) -> list[tuple[str, dict[str, Any]]]:
        """Return the run's state-change events after stream id ``after``."""
        return self.engine.read_events(self.id, after, block_ms=block_ms)

    # -------------------------------------------------------------- control
    def wait(self, timeout: float | None = None, *, progress: bool = True,
             raise_on_failure: bool = True) -> Run:
        """Wait until the run is over, showing progress; raise ``RunFailed`` if it failed.

        Raises ``RunTimeout`` after ``timeout`` seconds and ``RunStalled`` when the run sits
        still while no worker serves its queue; the run itself goes on either way.
        """
        from .progress import make_progress

        bar = make_progress(self) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        after = "0-0"
        idle_since: float | None = None
        last_check = 0.0
        try:
            while True:
                data = self.info()
                if bar is not None:
                    bar.update(data)
                if data["status"] in FINAL:
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise RunTimeout(f"run {self.id} is still {data['status']} after "
                                     f"{timeout:g} s; it goes on: wait again with "
                                     f"Run.attach({self.id!r}).wait()")
                if now - last_check > 2.0:
                    last_check = now
                    waiting = self.engine.report_waiting(self.id)
                    idle_since = (idle_since or now) if waiting else None
                    if idle_since is not None and now - idle_since > NO_WORKER_WAIT_S:
                        w = waiting[0]
                        raise RunStalled(
                            f"run {self.id} is waiting: node {w['node']!r}: "
                            + _no_workers(self.engine, w.get("queue", "default"))
                            + f"; the run goes on: Run.attach({self.id!r}).wait() later")
                block = 500 if deadline is None else max(1, min(500, int(
                    (deadline - now) * 1000)))
                items = self.events(after, block_ms=block)
                if items:
                    after = items[-1][0]
        finally:
            if bar is not None:
                bar.close()
            if self._workers is not None and self.done:
                self._workers.stop()
                self._workers = None
        if raise_on_failure:
            failure = self.failure()
            if failure is not None:
                raise failure
        return self

    def cancel(self) -> Run:
        """Cancel the run: nothing new starts; running nodes stop at once."""
        self.engine.cancel_run(self.id)
        return self

    def retry(self, from_node: str | None = None, *, update: bool = False,
              flow: Runnable | None = None, wait: bool = False, workers: int | None = None,
              timeout: float | None = None) -> Run:
        """Run the failed, skipped and canceled nodes again (or everything from ``from_node``)
        in this same run; ``wait=True`` waits like ``flow.run``.

        ``update=True`` runs them with the flow's current version: ``flow`` (default: the
        ``Flow`` this run was started from in this kernel, else the run's ``.nxflow`` file,
        else the latest stored version), stored as a new version when it changed. Nodes that
        succeeded keep their outputs; a flow that no longer fits them is refused, naming the
        node (``IncompatibleUpdate``). ``run.last_update`` says what ran again.
        """
        if update:
            source = flow if flow is not None else self.flow
            doc: Any = source.validate() if source is not None else self._source_file()
            self.last_update = self.engine.retry_updated(self.id, doc, from_node=from_node)
            if flow is not None:
                self.flow = flow
        else:
            self.engine.retry_run(self.id, from_node)
        if workers:
            local_workers_allowed(self.engine, f"run.retry(workers={workers!r})")
            queues = list(queues_needed(self.flow.validate())) if self.flow is not None \
                else ["default", "sandbox"]
            self._workers = LocalWorkers(workers, settings=self.engine.settings, queues=queues)
        if wait:
            self.wait(timeout=timeout)
        return self

    def approve(self, node_id: str, comment: str | None = None) -> dict[str, Any]:
        """Approve the approval node ``node_id`` that waits in this run (as you; the node's
        approvers, if it names any, decide); return the decision. ``RunStateError`` when it
        does not wait for one (decided already, not reached yet, timed out)."""
        return self.engine.decide(self.id, node_id, True, comment=comment)

    def reject(self, node_id: str, comment: str | None = None) -> dict[str, Any]:
        """Reject the approval node ``node_id`` that waits in this run; return the decision."""
        return self.engine.decide(self.id, node_id, False, comment=comment)

    @property
    def waiting(self) -> dict[str, dict[str, Any]]:
        """Return the nodes that wait now, each with what it waits for (an approval's
        message and approvers, a sub-flow's child run, a callback) and its timeout."""
        return {k: v["waiting"] for k, v in self.info()["nodes"].items() if v.get("waiting")}

    def items(self, node_id: str, *, offset: int = 0, limit: int = 50,
              state: str | None = None) -> Items:
        """Return one page of the items of the map node ``node_id``, in item order: each
        ``{index, state, attempts, item, output, error, worker, duration_ms, started_at,
        ended_at}``. ``state`` keeps only the items in that state (``"failed"``...);
        ``.total`` counts the items that match, ``.counts`` the map's (done, failed...),
        ``.next()`` reads the following page."""
        page = self.engine.map_items(self.id, node_id, offset=offset, limit=limit, state=state)
        return Items(self, node_id, page, limit=limit, state=state)

    def item(self, node_id: str, index: int) -> dict[str, Any]:
        """Return one item of the map node ``node_id`` with its log and every attempt
        (``history``)."""
        return self.engine.map_item(self.id, node_id, index)

    def children(self) -> list[Run]:
        """Return the handles of this run's child runs (its sub-flows), oldest first."""
        return [Run(c["run_id"], engine=self.engine) for c in self.engine.child_runs(self.id)]

    def child(self, node_id: str) -> Run:
        """Return the child run that the sub-flow node ``node_id`` started (the latest)."""
        node = self.info()["nodes"].get(node_id)
        if node is None:
            raise NotFoundError(f"run {self.id} has no node {node_id!r}")
        if not node.get("child_run"):
            raise NotFoundError(f"node {node_id!r} of run {self.id} has started no child run "
                                f"(it is {node['state']})")
        return Run(node["child_run"], engine=self.engine)

    @property
    def parent(self) -> Run | None:
        """Return the run whose sub-flow node started this one, or ``None``."""
        parent = (self._header or self.info()).get("parent")
        return Run(parent["run_id"], engine=self.engine) if parent else None

    def _source_file(self) -> Path | None:
        """Return the run's flow file when it was started from one that still exists."""
        source = self.info()["source"]
        if source and source.endswith(".nxflow") and Path(source).is_absolute() \
                and Path(source).is_file():
            return Path(source)
        return None

    def debug(self, node_id: str) -> NodeDebug:
        """Return what node ``node_id`` saw in this run (its recorded inputs, params, rendered
        config and code) with ``run_here()`` to run it again in this kernel (see
        ``NodeDebug``). Works for any run, of any status; nothing is written to the run."""
        from .debug import NodeDebug

        return NodeDebug(self.engine.node_context(self.id, node_id), engine=self.engine)

    def replay(self, *, wait: bool = False) -> Run:
        """Start a new run of the same flow version with the same inputs."""
        run = Run(self.engine.replay_run(self.id), engine=self.engine, flow=self.flow)
        if wait:
            run.wait()
        return run

    # -------------------------------------------------------------- display
    def widget(self, *, height: int = 360) -> Any:
        """Return the inline canvas of this run, its nodes glowing live."""
        from .widget import FlowWidget

        return FlowWidget.for_run(self, height=height)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .display import mimebundle

        return mimebundle(self, include, exclude)

    def summary(self) -> str:
        """Return one line per node: state, attempts, duration and error."""
        data = self.info()
        lines = [f"run {self.id} of {data['name']!r}: {data['status']}"]
        for node_id, n in data["nodes"].items():
            took = f" {n['duration_ms']:.0f} ms" if n.get("duration_ms") is not None else ""
            extra = f" (attempt {n['attempts']})" if (n.get("attempts") or 0) > 1 else ""
            err = f" — {n['error']}" if n.get("error") else ""
            lines.append(f"  {node_id}: {n['state']}{extra}{took}{err}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            status = self.status
        except NexusFlowError:
            status = "unknown"
        return f"<Run {self.id} {status}>"


def runs(flow: Runnable | None = None, *, limit: int = 20,
         settings: Settings | None = None) -> list[dict[str, Any]]:
    """Return recent runs (of ``flow``'s file when it was loaded from or saved to one)."""
    engine = get_engine(settings)
    source = str(flow.path.resolve()) if flow is not None and flow.path is not None else None
    return engine.list_runs(limit=limit, source=source)


__all__ = ["Items", "NotFoundError", "Outputs", "Run", "RunFailed", "RunStalled", "RunTimeout",
           "WorkersCannotRun",
           "get_engine", "runs", "start_run"]

"""The inline canvas: an anywidget showing a flow with React Flow, glowing while it runs.

The frontend is the Lab canvas's own node view, edges and glow (``labextension/src/canvas``),
bundled with React and @xyflow/react into one ES module by the package build (``npm run
build:widget`` in ``labextension/``, run by ``pip install``); it travels over the widget comm,
nothing is fetched from a CDN. The kernel pushes node states into the ``states`` trait from a
background thread that follows the run's event stream; the browser restyles each node as the
trait changes. Clicking a node asks the kernel for its attempts (``_node_attempts``).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

import anywidget
import traitlets
from anywidget.experimental import command

from ..errors import NexusFlowError


class Drawable(Protocol):
    """What the canvas draws: a ``Flow``, or anything with its document as a dict."""

    def to_dict(self) -> dict[str, Any]: ...


class Followable(Protocol):
    """What the canvas follows: a ``Run`` (this module sits below ``run`` and ``flow``, so
    it names their shape, not their classes)."""

    @property
    def id(self) -> str: ...

    @property
    def flow(self) -> Drawable | None: ...

    @property
    def engine(self) -> Any: ...

    def info(self) -> dict[str, Any]: ...

    def attempts(self, node_id: str) -> list[dict[str, Any]]: ...

    def events(self, after: str = ..., *, block_ms: int = ...) -> list[Any]: ...

STATIC = Path(__file__).parent / "static"
FINAL = ("succeeded", "failed", "canceled")

logger = logging.getLogger(__name__)


def _bundle(name: str) -> Path:
    path = STATIC / name
    if not path.exists():
        raise ImportError(
            f"the inline canvas bundle {name} is missing: it is built with the package "
            "(`pip install -e .`, or `npm --prefix labextension run build:widget` in a "
            "checkout whose npm dependencies are installed)"
        )
    return path


def node_catalog() -> dict[str, dict[str, Any]]:
    """Return what the canvas needs to draw each node type: its title, icon and output
    handles."""
    from ..nodes import node_types

    return {name: {"title": t.title or name, "icon": t.icon,
                   "output_handles": list(t.output_handles)}
            for name, t in node_types().items()}


class FlowWidget(anywidget.AnyWidget):
    """A read-only React Flow view of a flow; ``states`` makes its nodes glow."""

    _esm = _bundle("widget.js")
    _css = _bundle("widget.css")

    graph = traitlets.Dict().tag(sync=True)
    """The flow document (nodes with positions, edges)."""
    catalog = traitlets.Dict().tag(sync=True)
    """Node type -> ``{title, output_handles}``."""
    states = traitlets.Dict().tag(sync=True)
    """Node id -> ``{state, attempt, error}`` of the run shown (plus ``waiting``, what the
    node waits for: ``{kind, message, ...}``, e.g. ``kind: "worker"`` while a queued node's
    queue has no live worker)."""
    run_id = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    """The run's status (empty when no run is shown)."""
    height = traitlets.Int(360).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()
        self._run: Followable | None = None

    @classmethod
    def for_flow(cls, flow: Drawable, *, height: int = 360) -> FlowWidget:
        widget = cls(catalog=node_catalog(), height=height)
        widget.set_flow(flow)
        return widget

    @classmethod
    def for_run(cls, run: Followable, *, height: int = 360) -> FlowWidget:
        if run.flow is not None:
            graph = run.flow.to_dict()
        else:  # attached by id: draw the stored version
            head = run.info()
            graph = run.engine.get_workflow(head["workflow_id"], head["version"])["graph"]
        widget = cls(catalog=node_catalog(), height=height, graph=graph)
        widget.follow(run)
        return widget

    def set_flow(self, flow: Drawable) -> None:
        """Show ``flow`` as it is now (called again whenever the flow changes)."""
        self.graph = flow.to_dict()

    def follow(self, run: Followable) -> None:
        """Show ``run``'s node states, updated live until it ends."""
        self.stop()
        self._stop = threading.Event()
        self._run = run
        self.run_id = run.id
        self._apply_snapshot(run)
        thread = threading.Thread(target=self._follow, args=(run, self._stop),
                                  name=f"nexusflow-glow-{run.id[:8]}", daemon=True)
        self._follower = thread
        thread.start()

    def stop(self) -> None:
        """Stop following the run (the view keeps the last states)."""
        self._stop.set()

    def node_attempts(self, request: Any) -> dict[str, Any]:
        """Answer the canvas asking for a node's attempts in the run it shows.

        ``request`` is ``{"run_id", "node"}``; the reply is ``{"attempts": [...]}`` (status,
        output, error, input, log and timing of each attempt, read through
        ``Engine.node_attempts`` like the REST API's node logs, so masked the same way) or
        ``{"error": message}``.
        """
        if not isinstance(request, dict) or not isinstance(request.get("node"), str) \
                or not isinstance(request.get("run_id"), str):
            return {"error": "a node details request needs the strings run_id and node"}
        run = self._run
        if run is None or request["run_id"] != run.id:
            shown = f"run {run.id}" if run is not None else "no run"
            return {"error": f"this canvas shows {shown}, not run {request['run_id']}"}
        try:
            return {"attempts": run.attempts(request["node"])}
        except NexusFlowError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # the canvas waits for an answer: never leave it without one
            logger.warning("node details of %s in run %s failed", request["node"], run.id,
                           exc_info=True)
            return {"error": f"{type(exc).__name__}: {exc}"}

    @command
    def _node_attempts(self, msg: Any, buffers: list[bytes]) -> tuple[dict[str, Any], list]:
        return self.node_attempts(msg), []

    def map_items(self, request: Any) -> dict[str, Any]:
        """Answer the canvas asking for a page of a map node's items in the run it shows.

        ``request`` is ``{"run_id", "node", "offset"?, "limit"?, "state"?}``; the reply is the
        page (``{total, offset, counts, items}``, read through ``Engine.map_items`` like the
        REST API's, so masked the same way) or ``{"error": message}``."""
        if not isinstance(request, dict) or not isinstance(request.get("node"), str) \
                or not isinstance(request.get("run_id"), str):
            return {"error": "an items request needs the strings run_id and node"}
        run = self._run
        if run is None or request["run_id"] != run.id:
            shown = f"run {run.id}" if run is not None else "no run"
            return {"error": f"this canvas shows {shown}, not run {request['run_id']}"}
        offset, limit, state = request.get("offset", 0), request.get("limit", 20), \
            request.get("state") or None
        if not isinstance(offset, int) or not isinstance(limit, int) or offset < 0 \
                or not 1 <= limit <= 1000 or not (state is None or isinstance(state, str)):
            return {"error": "offset must be >= 0, limit 1..1000 and state a string"}
        try:
            page = run.engine.map_items(run.id, request["node"], offset=offset, limit=limit,
                                        state=state)
            return dict(json.loads(json.dumps(page, default=str)))
        except NexusFlowError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # the canvas waits for an answer: never leave it without one
            logger.warning("items of %s in run %s failed", request["node"], run.id,
                           exc_info=True)
            return {"error": f"{type(exc).__name__}: {exc}"}

    @command
    def _map_items(self, msg: Any, buffers: list[bytes]) -> tuple[dict[str, Any], list]:
        return self.map_items(msg), []

    def _apply_snapshot(self, run: Followable) -> str:
        data = run.info()
        self.states = {
            k: _reused(_state(v["state"], v["attempts"], v["error"], v.get("waiting"),
                              v.get("items")), v)
            for k, v in data["nodes"].items() if v["state"] != "pending"}
        self.status = data["status"]
        return data["status"]

    def _follow(self, run: Followable, stop: threading.Event) -> None:
        after = "0-0"
        errors = 0
        while not stop.is_set():
            try:
                items = run.events(after, block_ms=1000)
                errors = 0
            except Exception:  # Redis away for a moment: back off, then read PostgreSQL
                errors += 1
                if stop.wait(min(5.0, 0.5 * errors)):
                    return
                try:
                    if self._apply_snapshot(run) in FINAL:
                        return
                except Exception:
                    pass
                continue
            if not items:
                if self._apply_snapshot(run) in FINAL:
                    return
                continue
            after = items[-1][0]
            states = dict(self.states)
            final = None
            for _sid, ev in items:
                node = ev.get("node")
                if node is None:
                    if ev.get("state") in FINAL:
                        final = ev["state"]
                    continue
                # A map's counts come with its running events; its end keeps the last ones.
                # A cache hit or a pin comes with the node's success: badged at once.
                states[node] = _reused(
                    _state(ev.get("state"), ev.get("attempt"), ev.get("error"),
                           ev.get("waiting"),
                           ev.get("items") or states.get(node, {}).get("items")), ev)
            self.states = states
            if final is not None:
                self._apply_snapshot(run)  # PostgreSQL has the last word
                return


def _state(state: Any, attempt: Any, error: Any, waiting: Any = None,
           items: Any = None) -> dict[str, Any]:
    """One node's entry in ``states``; ``waiting`` only while the node waits for something
    (a worker on its queue, an approval, a callback): ``{kind, message, ...}``; ``items``: a
    map node's item counts (``{total, done, failed, ...}``)."""
    entry = {"state": state, "attempt": attempt, "error": error}
    if waiting:
        entry["waiting"] = waiting
    if isinstance(items, dict):
        entry["items"] = items
    return entry


def _reused(entry: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Add to a node's entry whether its result came from the cache (``cachedFrom``: the run and
    node it came from) or from its pin (``pinned``). ``node`` is a node of the run JSON (a
    snapshot) or a node's event: both carry ``cached_from`` and ``pinned`` under those names,
    events from the node's success on, so the badge shows the moment the node is decided."""
    cached = node.get("cached_from")
    if isinstance(cached, dict):
        entry["cachedFrom"] = {"run_id": str(cached.get("run_id")),
                               "node_id": str(cached.get("node_id"))}
    if node.get("pinned"):
        entry["pinned"] = True
    return entry


__all__ = ["FlowWidget", "node_catalog"]

"""The inline canvas: an anywidget showing a flow with React Flow, glowing while it runs.

The frontend is one self-contained ES module (React, React DOM and @xyflow/react bundled by
esbuild from ``js/``) that travels over the widget comm: nothing is fetched from a CDN. The
kernel pushes node states into the ``states`` trait from a background thread that follows
the run's event stream; the browser restyles each node as the trait changes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

if TYPE_CHECKING:  # pragma: no cover
    from .flow import Flow
    from .run import Run

STATIC = Path(__file__).parent / "static"
FINAL = ("succeeded", "failed", "canceled")


def _bundle(name: str) -> Path:
    path = STATIC / name
    if not path.exists():
        raise ImportError(
            f"the inline canvas bundle {name} is missing: build it with "
            "`npm --prefix nexusflow_kernel/notebook/js ci && npm --prefix "
            "nexusflow_kernel/notebook/js run build`"
        )
    return path


def node_catalog() -> dict[str, dict[str, Any]]:
    """Return what the canvas needs to draw each node type: its title and output handles."""
    from ..nodes import node_types

    return {name: {"title": t.title or name, "output_handles": list(t.output_handles)}
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
    """Node id -> ``{state, attempt, error}`` of the run shown."""
    run_id = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    """The run's status (empty when no run is shown)."""
    height = traitlets.Int(360).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._follower: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def for_flow(cls, flow: Flow, *, height: int = 360) -> FlowWidget:
        widget = cls(catalog=node_catalog(), height=height)
        widget.set_flow(flow)
        return widget

    @classmethod
    def for_run(cls, run: Run, *, height: int = 360) -> FlowWidget:
        if run.flow is not None:
            graph = run.flow.to_dict()
        else:  # attached by id: draw the stored version
            head = run.info()
            graph = run.engine.get_workflow(head["workflow_id"], head["version"])["graph"]
        widget = cls(catalog=node_catalog(), height=height, graph=graph)
        widget.follow(run)
        return widget

    def set_flow(self, flow: Flow) -> None:
        """Show ``flow`` as it is now (called again whenever the flow changes)."""
        self.graph = flow.to_dict()

    def follow(self, run: Run) -> None:
        """Show ``run``'s node states, updated live until it ends."""
        self.stop()
        self._stop = threading.Event()
        self.run_id = run.id
        self._apply_snapshot(run)
        thread = threading.Thread(target=self._follow, args=(run, self._stop),
                                  name=f"nexusflow-glow-{run.id[:8]}", daemon=True)
        self._follower = thread
        thread.start()

    def stop(self) -> None:
        """Stop following the run (the view keeps the last states)."""
        self._stop.set()

    def _apply_snapshot(self, run: Run) -> str:
        data = run.info()
        self.states = {k: {"state": v["state"], "attempt": v["attempts"], "error": v["error"]}
                       for k, v in data["nodes"].items() if v["state"] != "pending"}
        self.status = data["status"]
        return data["status"]

    def _follow(self, run: Run, stop: threading.Event) -> None:
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
                states[node] = {"state": ev.get("state"), "attempt": ev.get("attempt"),
                                "error": ev.get("error")}
            self.states = states
            if final is not None:
                self._apply_snapshot(run)  # PostgreSQL has the last word
                return


__all__ = ["FlowWidget", "node_catalog"]

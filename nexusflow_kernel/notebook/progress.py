"""Progress while waiting for a run: an ipywidgets bar in a notebook, text lines elsewhere."""

from __future__ import annotations

import html
import sys
from typing import Any

NODE_FINAL = ("succeeded", "failed", "skipped", "canceled")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel that can show widgets."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _counts(data: dict[str, Any]) -> tuple[int, int, str]:
    nodes = data["nodes"]
    done = sum(1 for n in nodes.values() if n["state"] in NODE_FINAL)
    running = [k for k, n in nodes.items() if n["state"] == "running"]
    failed = [k for k, n in nodes.items() if n["state"] == "failed"]
    text = f"{done}/{len(nodes)} nodes done"
    if running:
        text += f"; running {', '.join(running)}"
    if failed:
        text += f"; failed {', '.join(failed)}"
    waits = {n["waiting"].get("message") for n in nodes.values()
             if isinstance(n.get("waiting"), dict) and n["state"] == "queued"}
    for message in sorted(w for w in waits if w):  # what a queued node has no worker for
        text += f"; {message}"
    return done, len(nodes), text


class TextProgress:
    """Print a line whenever the count of finished nodes or the running set changes."""

    def __init__(self, run: Any, stream: Any = None) -> None:
        self.run = run
        self.stream = stream or sys.stderr
        self._last = ""

    def update(self, data: dict[str, Any]) -> None:
        _done, _total, text = _counts(data)
        line = f"{data['name']} [{data['status']}] {text}"
        if line != self._last:
            self._last = line
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class WidgetProgress:
    """An ipywidgets progress bar with a one-line status, updated in place, above the run's
    inline canvas when none of the flow's canvases is on show (they follow the run)."""

    COLORS = {"succeeded": "success", "failed": "danger", "canceled": "warning"}

    def __init__(self, run: Any) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.bar = w.IntProgress(value=0, min=0, max=1, description="",
                                 layout=w.Layout(width="240px"))
        self.label = w.HTML(value=f"<code>{run.id}</code> starting…")
        self.box = w.HBox([self.bar, self.label])
        flow = getattr(run, "flow", None)
        shown = [] if flow is not None and getattr(flow, "_widgets", None) else [run.widget()]
        # Sent on the kernel's IOPub channel while the cell waits: the bar moves, the canvas
        # (its follower thread) glows, before the cell ends.
        display(w.VBox([self.box, *shown]) if shown else self.box)

    def update(self, data: dict[str, Any]) -> None:
        done, total, text = _counts(data)
        self.bar.max = max(1, total)
        self.bar.value = done
        self.bar.bar_style = self.COLORS.get(data["status"], "info")
        self.label.value = html.escape(f"{data['name']} {data['status']}: {text}")

    def close(self) -> None:
        pass


def make_progress(run: Any) -> TextProgress | WidgetProgress:
    """Return the progress display that fits where this code runs."""
    if in_notebook():
        try:
            return WidgetProgress(run)
        except ImportError:
            pass
    return TextProgress(run)

"""How flows and runs show themselves in a notebook: their inline canvas, else their repr."""

from __future__ import annotations

from typing import Any


def mimebundle(obj: Any, include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """Return the display bundle of ``obj.widget()``, or plain text without ipywidgets."""
    try:
        widget = obj.widget()
    except ImportError:
        return {"text/plain": repr(obj)}
    bundle = widget._repr_mimebundle_(include=include, exclude=exclude)
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    return {**bundle, "text/plain": repr(obj)}

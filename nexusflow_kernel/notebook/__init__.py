"""Notebook support: run handles, progress, local workers, the inline canvas, the live link.

This is the only part of ``nexusflow_kernel`` that may import ipywidgets and anywidget, and it
does so lazily (in ``widget`` and ``progress``): importing ``nexusflow_kernel`` never does.
"""

from __future__ import annotations

__all__: list[str] = []

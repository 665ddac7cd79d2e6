"""Nexus-Flow's engine: flow documents, the compiler, node types, run state and dispatch.

Importing this package is cheap: submodules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompiledFlow": "compiler",
    "Flow": "flow",
    "LocalWorkers": "notebook.workers",
    "Run": "notebook.run",
    "RunFailed": "notebook.run",
    "Task": "tasks",
    "TaskError": "tasks",
    "task": "tasks",
    "FlowDocument": "document",
    "NexusFlowError": "errors",
    "FlowError": "errors",
    "Settings": "settings",
    "compile_flow": "compiler",
    "load": "document",
    "loads": "document",
    "save": "document",
}

if TYPE_CHECKING:  # pragma: no cover
    from .compiler import CompiledFlow, compile_flow
    from .document import FlowDocument, load, loads, save
    from .errors import FlowError, NexusFlowError
    from .flow import Flow
    from .notebook.run import Run, RunFailed
    from .notebook.workers import LocalWorkers
    from .settings import Settings
    from .tasks import Task, TaskError, task

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nexusflow_kernel' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

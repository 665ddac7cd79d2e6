"""Nexus-Flow's engine: flow documents, the compiler, node types, run state and dispatch.

Importing this package is cheap: submodules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompiledFlow": "model.compiler",
    "Flow": "notebook.flow",
    "LocalWorkers": "workers",
    "Run": "notebook.run",
    "RunFailed": "notebook.run",
    "Task": "notebook.tasks",
    "TaskError": "notebook.tasks",
    "task": "notebook.tasks",
    "FlowDocument": "model.document",
    "NexusFlowError": "errors",
    "FlowError": "errors",
    "Settings": "settings",
    "compile_flow": "model.compiler",
    "load": "model.document",
    "loads": "model.document",
    "save": "model.document",
}

if TYPE_CHECKING:  # pragma: no cover
    from .errors import FlowError, NexusFlowError
    from .model.compiler import CompiledFlow, compile_flow
    from .model.document import FlowDocument, load, loads, save
    from .notebook.flow import Flow
    from .notebook.run import Run, RunFailed
    from .notebook.tasks import Task, TaskError, task
    from .settings import Settings
    from .workers import LocalWorkers

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nexusflow_kernel' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

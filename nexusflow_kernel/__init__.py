"""Nexus-Flow's engine, shared by the CLI, the workers, the Jupyter server and notebooks.

What each part holds, from the front doors down (import-linter checks this order):

- ``cli/``        the ``nexusflow`` command
- ``notebook/``   the notebook API: the ``Flow`` builder, ``@task``, ``Run`` handles, the widget
- ``engine``      the facade: store workflows, start, control and read runs
- ``workers``     the one way to launch local worker processes
- ``secrets``, ``masking``   encrypted secrets; the one masking path for what a run records
- ``runstate/``   the record in PostgreSQL: migrations, the run store, node transitions, plans
- ``transport/``  Redis: RQ job pushes, the waiting set, event streams
- ``model/``      the flow document, its JSON Schema, the compiler
- ``nodes/``      node types: the contract, the registry (entry points), the core types
- ``expressions``, ``textbounds``   the safe expression language and its size limits
- ``services/``   embedded PostgreSQL and Redis for zero-config use
- ``settings``, ``errors``, ``defaults``, ``procs``   the foundation

Importing this package is cheap: the names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompiledFlow": "model.compiler",
    "Flow": "notebook.flow",
    "LocalWorkers": "workers",
    "WorkersCannotRun": "workers",
    "live_workers": "workers",
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
    from .workers import LocalWorkers, WorkersCannotRun, live_workers

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nexusflow_kernel' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

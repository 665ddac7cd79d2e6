"""The ``python_task`` node type: a notebook function (``@task``), shipped by value.

``nexusflow_kernel.notebook.tasks`` turns the function into source text; this node runs that
source under the configured code isolation (``NEXUSFLOW_CODE_ISOLATION``) through
:func:`run_isolated` — a container, a clean subprocess, or (trusted machines only) the worker
itself. It is registered through the ``nexusflow.nodes`` entry point, like every node type the
worker adds.

Arguments are bound by name when the node runs: in a map's item, ``item`` and ``index`` get
the item and its position; a parameter called ``inputs`` gets every parent's output,
``params`` gets the run's inputs, ``env`` the variables of the run's environment, any other
name gets the output of the parent node with that id, else the run input with that name, else
its default.
"""

from __future__ import annotations

import ast
import keyword
from collections.abc import Mapping
from typing import Any, ClassVar

from nexusflow_kernel.errors import NodeExecutionError
from nexusflow_kernel.nodes.base import NodeContext, NodeType

from .isolation import run_isolated
from .protocol import Limits

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_MB = 1024

_BIND = '''

_nexusflow_target = {name}


def main(inputs, params):
    import inspect
    kwargs = {{}}
    names = params.pop("{names_key}", None) or {{}}
    for p in inspect.signature(_nexusflow_target).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in names:
            kwargs[p.name] = names[p.name]
        elif p.name == "inputs":
            kwargs[p.name] = inputs
        elif p.name == "params":
            kwargs[p.name] = params
        elif p.name in inputs:
            kwargs[p.name] = inputs[p.name]
        elif p.name in params:
            kwargs[p.name] = params[p.name]
        elif p.default is p.empty:
            known = ", ".join(sorted(set(inputs) | set(params))) or "none"
            raise TypeError(
                "task {name}(): no parent node and no run input is called %r "
                "(parents and inputs: %s; 'inputs' and 'params' get them all)" % (p.name, known))
    return _nexusflow_target(**kwargs)
'''


NAMES_KEY = "__nexusflow_names__"
"""Where the payload's params carry a map item's ``item`` and ``index`` (taken out before the
function sees ``params``): the sandbox's entry calls ``main(inputs, params)``."""


def task_program(function: str, source: str) -> str:
    """Return the program run for a task: its shipped source plus the argument binding."""
    return source.rstrip() + "\n" + _BIND.format(name=function, names_key=NAMES_KEY)


class PythonTaskNode(NodeType):
    """Run a notebook function (``@task``) shipped by value, under the code isolation policy."""

    name = "python_task"
    title = "Python function"
    description = ("A Python function from a notebook (@task), shipped by value and run with "
                   "the configured code isolation. Arguments bind by name to parents' outputs "
                   "and run inputs.")
    category = "advanced"
    icon = "🐍"
    effectful = True
    runs_code = True
    template_exempt: ClassVar[tuple[str, ...]] = ("source",)
    """Code is never a template: a run input would become code (the function gets them)."""
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["function", "source"],
        "additionalProperties": False,
        "properties": {
            "function": {"type": "string", "title": "Function",
                         "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 200,
                         "description": "Name of the function the source defines."},
            "source": {"type": "string", "title": "Source", "maxLength": 1_000_000,
                       "x-widget": "code",
                       "description": "Python source defining the function (shipped by "
                                      "@task)."},
            "timeout_s": {"type": "number", "title": "Timeout (s)", "exclusiveMinimum": 0,
                          "maximum": 86400, "default": DEFAULT_TIMEOUT_S},
            "memory_mb": {"type": "integer", "title": "Memory (MB)", "minimum": 16,
                          "maximum": 65536, "default": DEFAULT_MEMORY_MB},
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        function, source = config.get("function"), config.get("source")
        if not isinstance(function, str) or not isinstance(source, str):
            return []
        if keyword.iskeyword(function):
            return [("/function", f"{function!r} is a Python keyword")]
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            return [("/source", f"Python does not compile: line {exc.lineno}: {exc.msg}")]
        except ValueError as exc:
            return [("/source", f"Python does not compile: {exc}")]
        if not any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body):
            return [("/source", f"the source does not define a function {function}()")]
        return []

    def run(self, ctx: NodeContext) -> Any:
        config = ctx.config
        program = task_program(config["function"], config["source"])
        params = {**ctx.params, NAMES_KEY: ctx.names} if ctx.names else ctx.params
        # env: the run environment's variables (a parameter called env gets them through
        # ctx.names; the program's global env is the same dict, as for a code node)
        payload = {"inputs": ctx.inputs, "params": params, "env": dict(ctx.env or {})}
        timeout = ctx.remaining(float(config.get("timeout_s", DEFAULT_TIMEOUT_S)))
        memory = int(config.get("memory_mb", DEFAULT_MEMORY_MB))
        limits = Limits(timeout_s=timeout, memory_mb=memory,
                        max_output_bytes=int(ctx.settings.max_output_bytes))
        labels = {"nexusflow.run": ctx.run_id, "nexusflow.node": ctx.node_id,
                  "nexusflow.attempt": str(ctx.attempt)}
        try:
            output, logs = run_isolated("python", program, payload,
                                        policy=ctx.settings.code_isolation, limits=limits,
                                        labels=labels)
        except NodeExecutionError as exc:
            for line in getattr(exc, "logs", []):
                ctx.log.write(line)
            raise
        for line in logs:
            ctx.log.write(line)
        return output


__all__ = ["PythonTaskNode", "task_program"]

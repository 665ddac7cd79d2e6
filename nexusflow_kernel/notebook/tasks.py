"""``@task``: a notebook function becomes a flow node, shipped to the workers by value.

Workers cannot import a notebook, so the function travels as source text: its own ``def``
(decorators removed) plus what it uses from the notebook's globals that can be written down —
modules (as ``import`` lines), JSON values (as literals) and other plain functions (their
source, recursively). Anything else (a lambda, a closure, an open connection, a class
instance) is refused with one message that says what to do instead.

The ``python_task`` node type runs that source under the configured code isolation
(``NEXUSFLOW_CODE_ISOLATION``) through the sandbox's ``run_isolated`` — a container, a clean
subprocess, or (trusted machines only) the worker itself.

Arguments are bound by name when the node runs: a parameter called ``inputs`` gets every
parent's output, ``params`` gets the run's inputs, any other name gets the output of the parent
node with that id, else the run input with that name, else its default.
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import json
import keyword
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ..errors import NexusFlowError, NodeExecutionError, NodeTimeoutError
from ..nodes.base import NodeContext, NodeType

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MEMORY_MB = 1024


class TaskError(NexusFlowError):
    """A function cannot become a task (its code cannot be shipped to a worker)."""


class Task:
    """A notebook function made into a node; calling it still runs it here."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 timeout_s: float | None = None, memory_mb: int | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        _function_source(fn, repr(getattr(fn, "__name__", fn)))  # refuse lambdas etc. now
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def source(self) -> str:
        """Return the shipped source as of now (globals it uses are read at this moment)."""
        return ship_source(self.fn)

    def config(self) -> dict[str, Any]:
        """Return the ``python_task`` node config that carries this function (its source and
        the globals it uses, as they are now)."""
        out: dict[str, Any] = {"function": self.fn.__name__, "source": self.source}
        if self.timeout_s is not None:
            out["timeout_s"] = self.timeout_s
        if self.memory_mb is not None:
            out["memory_mb"] = self.memory_mb
        return out

    def __repr__(self) -> str:
        return f"<task {self.name!r}>"


def task(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         timeout_s: float | None = None, memory_mb: int | None = None) -> Any:
    """Make a function a task: ``@task`` or ``@task(timeout_s=60)``; add it with
    ``flow.task(fn)``. Raises ``TaskError`` at once for a lambda, a closure or a function
    without source, and when the task is added to a flow for globals that cannot be shipped."""
    def wrap(f: Callable[..., Any]) -> Task:
        return Task(f, name=name, timeout_s=timeout_s, memory_mb=memory_mb)

    return wrap if fn is None else wrap(fn)


def as_task(fn: Any) -> Task:
    """Return ``fn`` as a ``Task`` (a plain function is shipped as it is now)."""
    if isinstance(fn, Task):
        return fn
    if not callable(fn):
        raise TaskError(f"{fn!r} is not a function: a task is a function defined with def")
    return Task(fn)


# ---------------------------------------------------------------------- shipping by value
def _function_source(fn: Any, who: str) -> str:
    if not isinstance(fn, types.FunctionType):
        kind = type(fn).__name__
        raise TaskError(f"task {who}: a {kind} cannot be a task; define a function with def")
    if fn.__name__ == "<lambda>":
        raise TaskError(f"task {who}: a lambda cannot be a task (its source cannot be shipped "
                        "alone); define it with def")
    if fn.__code__.co_freevars:
        names = ", ".join(fn.__code__.co_freevars)
        raise TaskError(
            f"task {who} uses variables of an enclosing function ({names}); workers get only "
            "the function's source: define it at the top level of a cell and pass the values "
            "as run inputs or parents' outputs"
        )
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        raise TaskError(f"task {who}: the source of {fn.__name__}() cannot be read (defined "
                        "with exec or in a plain interactive prompt?); define it in a notebook "
                        "cell or a .py file") from None
    text = textwrap.dedent(text)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        raise TaskError(f"task {who}: the source of {fn.__name__}() does not parse on its "
                        "own; define it at the top level of a cell") from None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defs or defs[0].name != fn.__name__:
        raise TaskError(f"task {who}: the source of {fn.__name__}() is not a plain def "
                        "statement; define it with def at the top level of a cell")
    if isinstance(defs[0], ast.AsyncFunctionDef):
        raise TaskError(f"task {who}: async functions cannot be tasks; use a plain def")
    lines = text.splitlines()
    return "\n".join(lines[defs[0].lineno - 1:]).rstrip() + "\n"


def _global_names(code: types.CodeType) -> list[str]:
    names: list[str] = []
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval not in names:
            names.append(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += [n for n in _global_names(const) if n not in names]
    return names


def _json_literal(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return repr(value)


def ship_source(fn: Any) -> str:
    """Return self-contained source that defines ``fn`` (and what it uses) on a worker."""
    who = repr(getattr(fn, "__name__", fn))
    header: list[str] = []
    bodies: list[str] = []
    seen: set[str] = set()

    def visit(f: types.FunctionType) -> None:
        if f.__name__ in seen:
            return
        seen.add(f.__name__)
        body = _function_source(f, who)
        for name in _global_names(f.__code__):
            if name in seen or name == f.__name__:
                continue
            if name not in f.__globals__:
                if hasattr(builtins, name):
                    continue
                raise TaskError(f"task {who} uses the name {name!r}, which is not defined in "
                                "the notebook yet; define it before making the task")
            value = f.__globals__[name]
            if isinstance(value, types.ModuleType):
                module = value.__name__
                line = f"import {module}" if module == name else f"import {module} as {name}"
                if line not in header:
                    header.append(line)
                continue
            if isinstance(value, Task):
                value = value.fn
            if isinstance(value, types.FunctionType) and value.__module__ == f.__module__:
                visit(value)
                continue
            if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
                module = getattr(value, "__module__", None)
                qual = getattr(value, "__qualname__", name)
                if module and module not in ("__main__", "builtins") and "." not in qual \
                        and "<" not in qual:
                    line = (f"from {module} import {qual}" if qual == name
                            else f"from {module} import {qual} as {name}")
                    if line not in header:
                        header.append(line)
                    continue
            literal = _json_literal(value)
            if literal is not None:
                seen.add(name)
                bodies.insert(0, f"{name} = {literal}\n")
                continue
            raise TaskError(
                f"task {who} uses the global {name!r} (a {type(value).__name__}), which cannot "
                "be sent to a worker: create it inside the function, or pass it as a run input "
                "(JSON values, modules and plain functions are shipped automatically)"
            )
        bodies.append(body)

    visit(fn if not isinstance(fn, Task) else fn.fn)
    parts = [f"# task {fn.__name__}, shipped by value from a notebook by Nexus-Flow\n"]
    if header:
        parts.append("\n".join(header) + "\n")
    parts += ["\n" + b for b in bodies]
    return "".join(parts)


# ---------------------------------------------------------------------- the node type
_BIND = '''

_nexusflow_target = {name}


def main(inputs, params):
    import inspect
    kwargs = {{}}
    for p in inspect.signature(_nexusflow_target).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "inputs":
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


def task_program(function: str, source: str) -> str:
    """Return the program run for a task: its shipped source plus the argument binding."""
    return source.rstrip() + "\n" + _BIND.format(name=function)


class PythonTaskNode(NodeType):
    """Run a notebook function (``@task``) shipped by value, under the code isolation policy."""

    name = "python_task"
    title = "Python function"
    description = ("A Python function from a notebook (@task), shipped by value and run with "
                   "the configured code isolation. Arguments bind by name to parents' outputs "
                   "and run inputs.")
    category = "advanced"
    effectful = True
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
        payload = {"inputs": ctx.inputs, "params": ctx.params}
        timeout = ctx.remaining(float(config.get("timeout_s", DEFAULT_TIMEOUT_S)))
        memory = int(config.get("memory_mb", DEFAULT_MEMORY_MB))
        try:
            try:
                from nexusflow_worker.sandbox import Limits, run_isolated
            except ImportError:  # an engine-only install: the clean-subprocess policy
                output, logs = run_subprocess(program, payload, timeout_s=timeout)
            else:
                limits = Limits(timeout_s=timeout, memory_mb=memory,
                                max_output_bytes=int(ctx.settings.max_output_bytes))
                labels = {"nexusflow.run": ctx.run_id, "nexusflow.node": ctx.node_id,
                          "nexusflow.attempt": str(ctx.attempt)}
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


_RUNNER = r'''
import json, sys, traceback
envelope = json.loads(sys.stdin.read())
namespace = {"__name__": "nexusflow_task"}
try:
    exec(compile(envelope["source"], "<task>", "exec"), namespace)
    out = namespace["main"](envelope["payload"]["inputs"], envelope["payload"]["params"])
    text = json.dumps(out)
except BaseException:
    traceback.print_exc()
    sys.exit(1)
sys.stdout.write("\n" + envelope["marker"] + " " + text + "\n")
'''


def run_subprocess(program: str, payload: dict[str, Any], *,
                   timeout_s: float) -> tuple[Any, list[str]]:
    """Run ``program`` in a subprocess with a clean environment (no worker variables, a fresh
    working folder); return ``(output, log lines)``. Used when the sandbox is not installed."""
    marker = "nexusflow-task-" + os.urandom(12).hex()
    envelope = json.dumps({"source": program, "payload": payload, "marker": marker})
    with tempfile.TemporaryDirectory(prefix="nexusflow-task-") as workdir:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": workdir,
               "LANG": "C.UTF-8", "TMPDIR": workdir}
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", _RUNNER], input=envelope,
                                  capture_output=True, text=True, cwd=workdir, env=env,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise NodeTimeoutError(f"timed out after {timeout_s:g} s") from None
    logs, output, found = [], None, False
    for line in proc.stdout.splitlines():
        if line.startswith(marker + " "):
            output, found = json.loads(line[len(marker) + 1:]), True
        elif line or logs:
            logs.append(line)
    while logs and not logs[-1]:
        logs.pop()  # the blank line written before the result line
    errors = proc.stderr.splitlines()
    logs += errors
    if proc.returncode != 0 or not found:
        last = errors[-1] if errors else f"exit status {proc.returncode}"
        exc = NodeExecutionError(f"task failed: {last}", retryable=False)
        exc.logs = logs  # type: ignore[attr-defined]
        raise exc
    return output, logs


__all__ = ["PythonTaskNode", "Task", "TaskError", "as_task", "ship_source", "task",
           "task_program"]

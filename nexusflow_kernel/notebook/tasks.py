"""``@task``: a notebook function becomes a flow node, shipped to the workers by value.

Workers cannot import a notebook, so the function travels as source text: its own ``def``
(decorators removed) plus what it uses from the notebook's globals that can be written down —
modules (as ``import`` lines), JSON values (as literals) and other plain functions (their
source, recursively). Anything else (a lambda, a closure, an open connection, a class
instance) is refused with one message that says what to do instead.

The ``python_task`` node type (``nexusflow_worker.sandbox.task_node``) runs that source under
the configured code isolation.
"""

from __future__ import annotations

import ast
import builtins
import dis
import inspect
import json
import textwrap
import types
from collections.abc import Callable
from typing import Any

from ..errors import NexusFlowError


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


def call_task(fn: Callable[..., Any], inputs: dict[str, Any], params: dict[str, Any]) -> Any:
    """Call ``fn`` as the ``python_task`` node calls it on a worker: a parameter called
    ``inputs`` gets every parent's output, ``params`` the run's inputs, any other name the
    output of the parent with that id, else the run input with that name, else its default.

    The worker binds the same way inside the sandbox (``task_node.task_program``); a test
    checks that the two agree.
    """
    target = fn.fn if isinstance(fn, Task) else fn
    kwargs: dict[str, Any] = {}
    for p in inspect.signature(target).parameters.values():
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
                f"task {target.__name__}(): no parent node and no run input is called "
                f"{p.name!r} (parents and inputs: {known}; 'inputs' and 'params' get them all)")
    return target(**kwargs)


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
                owner = getattr(value, "__module__", None)
                qual = getattr(value, "__qualname__", name)
                if owner and owner not in ("__main__", "builtins") and "." not in qual \
                        and "<" not in qual:
                    line = (f"from {owner} import {qual}" if qual == name
                            else f"from {owner} import {qual} as {name}")
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

    target: Any = fn.fn if isinstance(fn, Task) else fn
    visit(target)
    parts = [f"# task {fn.__name__}, shipped by value from a notebook by Nexus-Flow\n"]
    if header:
        parts.append("\n".join(header) + "\n")
    parts += ["\n" + b for b in bodies]
    return "".join(parts)


__all__ = ["Task", "TaskError", "as_task", "call_task", "ship_source", "task"]

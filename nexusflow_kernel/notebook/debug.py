"""The notebook debug loop: a node's recorded context, running it here, testing it on a worker.

``run.debug("B")`` returns a :class:`NodeDebug`: what node B of the run saw (``inputs``,
``params``, the rendered ``config``), its code (``source``) and its error; ``run_here()`` runs it
again in this kernel on those inputs (a code node in the sandbox, under the isolation policy)
and returns its output or raises its error with the whole traceback. Nothing is written to the
run. ``ctx.test()`` and ``Flow.test()`` run one node on a worker instead, outside any run
(:class:`NodeTest`). :func:`debug_notebook` writes the notebook "Open in notebook" opens.

About masked values: workers mask every secret of a run in everything they record, and hand
children their parents' *masked* outputs. A parent that passed a secret on as data (not by
reference) gave its children ``***``, so the recorded inputs are exactly what the node saw,
``***`` included; ``run_here`` sees the same. Pass secrets by reference
(``{"$secret": NAME}`` in the node that needs the value) or give the value to ``run_here``.
"""

from __future__ import annotations

import copy
import json
import linecache
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NexusFlowError, NodeExecutionError
from ..masking import MASK
from .tasks import Task, TaskError, call_task

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..remote import RemoteEngine


_STAMP = re.compile(r"^\d\d:\d\d:\d\d ")
"""The time stamp ``NodeLog`` puts before each line."""


class NodeRunError(NodeExecutionError):
    """A node run with ``run_here`` failed; the message holds its log (the traceback)."""

    def __init__(self, message: str, logs: list[str]) -> None:
        self.logs = logs
        body = "\n".join(logs).rstrip()
        super().__init__(f"{message}\n{body}" if body else message, retryable=False)


WORKER_WAIT_S = 5.0
"""How long a test waits for a worker of its queue to appear before refusing."""


class NodeTestTimeout(NexusFlowError):
    """No worker finished a node test in time (the test may still run: ``get_test``)."""


def masked_paths(value: Any, path: str = "") -> list[str]:
    """Return the JSON pointers of the strings in ``value`` that hold a masked value."""
    out: list[str] = []
    if isinstance(value, str):
        if MASK in value:
            out.append(path or "/")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            step = str(key).replace("~", "~0").replace("/", "~1")
            out += masked_paths(item, f"{path}/{step}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out += masked_paths(item, f"{path}/{i}")
    return out


def _short(value: Any, limit: int = 400) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def load_task_function(source: str, function: str, node_id: str) -> Callable[..., Any]:
    """Define a ``@task``'s shipped source in a fresh namespace here; return its function.

    The source is registered with ``linecache``, so a traceback shows its lines.
    """
    filename = f"<task {node_id}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = "nexusflow_task_" + re.sub(r"\W", "_", node_id)
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(source, filename, "exec"), namespace)  # the node's code, in the user's kernel
    fn = namespace.get(function)
    if not callable(fn):
        raise TaskError(f"the source of node {node_id!r} does not define {function}()")
    return fn


def _json_output(result: Any) -> Any:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NodeExecutionError(f"output is not JSON-serializable: {exc} (a worker would fail "
                                 "the node with this error)", retryable=False) from None
    return result


def _resolve(value: Any, secrets: Mapping[str, str], node_id: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$secret"} and isinstance(value["$secret"], str):
            name = value["$secret"]
            if name not in secrets:
                raise NexusFlowError(
                    f"node {node_id!r} reads secret {name!r}: secrets are resolved only on "
                    f"workers, never in a kernel. Pass the value with "
                    f"run_here(secrets={{{name!r}: ...}}), or test the node on a worker with "
                    ".test()")
            return secrets[name]
        return {k: _resolve(v, secrets, node_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, secrets, node_id) for v in value]
    return value


class NodeDebug:
    """What one node of a run saw, as recorded, and ways to run it again.

    ``inputs`` (its parents' outputs, by parent id) and ``params`` (the run's inputs) are
    exactly what the node saw, as recorded; ``config`` is its config as rendered (secrets stay
    ``{"$secret": NAME}`` references; any value shown as ``***`` was masked); ``source`` the
    code of a ``@task`` or code node; ``error`` and ``log`` those of its latest attempt.
    ``masked`` lists where ``***`` stands in the inputs and params: a parent passed a secret on
    as data, and the node saw ``***`` there too (workers hand children masked outputs).
    ``recorded`` is false for a node that never ran: its inputs are then its parents' outputs
    now (``missing`` names the parents without one).
    """

    def __init__(self, context: Mapping[str, Any], *, engine: Engine | RemoteEngine) -> None:
        self.context = dict(context)
        self.engine = engine
        c = self.context
        self.run_id: str = c["run_id"]
        self.node_id: str = c["node_id"]
        self.type: str = c["type"]
        self.state: str = c["state"]
        self.attempt: int = c["attempt"]
        self.version: int = c["version"]
        self.recorded: bool = c["recorded"]
        self.missing: list[str] = list(c.get("missing") or [])
        self.inputs: dict[str, Any] = copy.deepcopy(c["inputs"])
        self.params: dict[str, Any] = copy.deepcopy(c["params"])
        self.node: dict[str, Any] = copy.deepcopy(c["node"])
        self.config: dict[str, Any] = copy.deepcopy(
            c["config"] if c.get("config_rendered") else self.node.get("config") or {})
        self.source: str | None = c.get("code")
        self.function: str | None = c.get("function")
        self.error: str | None = c.get("error")
        self.log: str | None = c.get("log")
        self.output: Any = c.get("output")
        self.masked: list[str] = masked_paths({"inputs": self.inputs, "params": self.params})
        self.last_log: str = ""
        """The log of the last ``run_here`` (prints of a code node, the node's own lines)."""

    # ------------------------------------------------------------------ running it again
    def run_here(self, *, task: Callable[..., Any] | Task | None = None,
                 source: str | None = None, inputs: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None,
                 config: Mapping[str, Any] | None = None,
                 secrets: Mapping[str, str] | None = None, **parents: Any) -> Any:
        """Run the node here on its recorded inputs; return its output or raise its error.

        A ``@task`` node runs in this kernel (its recorded source, or ``task=`` a function you
        fixed, or ``source=`` text), with its arguments bound as on a worker; a code node runs
        in the sandbox under the isolation policy (``NEXUSFLOW_CODE_ISOLATION``); other types
        run here. Keywords change what it runs on: ``inputs=`` and ``params=`` replace them,
        any other keyword replaces one parent's output (``run_here(fetch={...})``),
        ``config=`` overrides config keys, ``secrets=`` gives the values of the secrets the node
        reads (a kernel never reads the secret store). Nothing is written to the run.
        """
        ins = copy.deepcopy(dict(self.inputs if inputs is None else inputs))
        ins.update(copy.deepcopy(parents))
        prm = copy.deepcopy(dict(self.params if params is None else params))
        self.last_log = ""
        if self.type == "python_task" and config is None:
            fn = task if task is not None else load_task_function(
                source if source is not None else self.source or "",
                self.function or self.node_id, self.node_id)
            return _json_output(call_task(fn, ins, prm))
        if task is not None:
            raise TaskError(f"node {self.node_id!r} is a {self.type} node, not a @task: "
                            "task= does not apply")
        return self._run_type(ins, prm, source, config, secrets or {})

    def _run_type(self, ins: dict[str, Any], prm: dict[str, Any], source: str | None,
                  config: Mapping[str, Any] | None, secrets: Mapping[str, str]) -> Any:
        from ..expressions import render_templates
        from ..nodes import Defer, NodeContext, NodeLog, get_node_type

        node_type = get_node_type(self.type)
        if node_type is None:
            raise NexusFlowError(f"node type {self.type!r} is not installed in this kernel")
        cfg = copy.deepcopy(self.node.get("config") or {})
        cfg.update(copy.deepcopy(dict(config or {})))
        if source is not None:
            cfg["source"] = source
        rendered = render_templates(cfg, {"inputs": ins, "params": prm},
                                    exempt=node_type.template_exempt,
                                    where=f"node {self.node_id!r} /config")
        resolved = _resolve(rendered, secrets, self.node_id)
        log = NodeLog()

        def read_secret(name: str) -> str:
            return str(_resolve({"$secret": name}, secrets, self.node_id))

        ctx = NodeContext(run_id=self.run_id, node_id=self.node_id, attempt=0, config=resolved,
                          inputs=ins, params=prm, settings=self.engine.settings, log=log,
                          secrets=read_secret)
        try:
            result = node_type.run(ctx)
        except NodeExecutionError as exc:
            # Node types write the failure's log (a traceback) into the node's log first.
            lines = [_STAMP.sub("", line) for line in log.lines] or list(getattr(exc, "logs", []))
            self.last_log = "\n".join(lines)
            raise NodeRunError(f"node {self.node_id!r} ({self.type}) failed: {exc}",
                               lines) from exc
        self.last_log = "\n".join(_STAMP.sub("", line) for line in log.lines)
        if isinstance(result, Defer):
            return result
        return _json_output(result)

    # ------------------------------------------------------------------ on a worker
    def test(self, *, inputs: Mapping[str, Any] | None = None,
             params: Mapping[str, Any] | None = None,
             node: Mapping[str, Any] | None = None, timeout: float = 60.0) -> NodeTest:
        """Run the node on a worker (as in a run: isolation, secrets, masking) with the
        recorded inputs (or ``inputs``/``params``), outside the run; return the result."""
        return test_node(self.engine, node or self.node,
                         inputs=self.inputs if inputs is None else inputs,
                         params=self.params if params is None else params,
                         from_run=self.run_id, timeout=timeout)

    # ------------------------------------------------------------------ notebook
    def notebook(self, path: str | Path | None = None, *, flow_path: str | None = None) -> Path:
        """Write the debug notebook of this node (see :func:`debug_notebook`); return its path.

        ``flow_path`` is the ``.nxflow`` file to link to, relative to the notebook (default:
        the run's source file, when it has one)."""
        source_file = self.context.get("source_file") or ""
        flow = flow_path or (Path(source_file).name if source_file.endswith(".nxflow") else None)
        stem = Path(flow).stem if flow else (self.context.get("name") or "flow")
        target = Path(path) if path is not None else Path(f"{stem}-{self.node_id}-debug.ipynb")
        target.write_text(json.dumps(debug_notebook(self.context, flow), indent=1) + "\n")
        return target

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        head = (f"<NodeDebug {self.node_id!r} of run {self.run_id}: {self.type}, {self.state}, "
                f"attempt {self.attempt}, flow version {self.version}>")
        lines = [head]
        lines.append(f"  inputs{'' if self.recorded else ' (not recorded: parents now)'}: "
                     f"{_short(self.inputs)}")
        if self.missing:
            lines.append(f"  parents without an output: {', '.join(self.missing)}")
        lines.append(f"  params: {_short(self.params)}")
        shown = {k: v for k, v in self.config.items() if k not in ("source", "function")} \
            if self.source is not None else self.config
        if shown:
            lines.append(f"  config: {_short(shown)}")
        if self.source is not None:
            head = next((ln.strip() for ln in self.source.splitlines()
                         if ln.startswith(("def ", "async def "))), "")
            size = len(self.source.splitlines())
            lines.append(f"  source: {head or 'code'} … ({size} lines: .source)")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.masked:
            lines.append(
                f"  masked (***) at {', '.join(self.masked)}: a parent passed a secret on as "
                "data; the node saw *** there too (pass secrets by reference, "
                "{\"$secret\": NAME}, or give the value to run_here)")
        lines.append("  .run_here() runs it again here; .test() on a worker; .source is its code")
        return "\n".join(lines)


# ---------------------------------------------------------------------- one-node tests
class NodeTest:
    """The result of a one-node test: ``status``, ``output``, ``error``, ``log``."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.id: str = self.data["test_id"]
        self.status: str = self.data["status"]
        self.output: Any = self.data.get("output")
        self.error: str | None = self.data.get("error")
        self.log: str = self.data.get("log") or ""
        self.duration_ms: float | None = self.data.get("duration_ms")

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def raise_for_error(self) -> NodeTest:
        """Raise ``NodeExecutionError`` with the node's error if the test failed."""
        if self.status == "failed":
            raise NodeExecutionError(f"test of node {self.data.get('node_id')!r} failed: "
                                     f"{self.error}", retryable=False)
        return self

    def __repr__(self) -> str:
        took = f" in {self.duration_ms:.0f} ms" if self.duration_ms is not None else ""
        lines = [f"<NodeTest of {self.data.get('node_id')!r}: {self.status}{took}>"]
        if self.status == "succeeded":
            lines.append(f"  output: {_short(self.output)}")
        if self.error:
            lines.append(f"  error: {self.error}")
        if self.log:
            lines.append("  log:\n" + "\n".join("    " + line for line in self.log.splitlines()))
        return "\n".join(lines)


def test_node(engine: Engine | RemoteEngine, node: Mapping[str, Any], *,
              inputs: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
              flow: Mapping[str, Any] | None = None, key: str | None = None,
              source: str | None = None, from_run: str | None = None,
              timeout: float = 60.0, env: str | None = None) -> NodeTest:
    """Queue a test of ``node`` on a worker and wait for it (``NodeTestTimeout`` after
    ``timeout`` seconds, or at once when no worker serves the node's queue). ``inputs`` and
    ``params`` default to those of the node's latest run (see ``Engine.start_test``); ``env``
    is the environment it runs in (default ``dev``, as a run)."""
    from ..remote import RemoteEngine
    from ..runstate.transitions import queue_for_type
    from ..workers import NoWorkerForTest, await_test_worker, worker_count

    queue = queue_for_type(str(node.get("type")))

    def workers() -> int:
        if isinstance(engine, RemoteEngine):
            return engine.worker_count()  # the service knows its workers (one queue count)
        return worker_count(engine.settings, redis=engine.redis, queue=queue)  # logical

    try:
        await_test_worker(workers, queue, node.get("id"), WORKER_WAIT_S)
    except NoWorkerForTest as exc:
        raise NodeTestTimeout(str(exc)) from None
    test_id = engine.start_test(node, inputs=inputs, params=params, flow=flow, key=key,
                                source=source, from_run=from_run, env=env)
    data = engine.wait_test(test_id, timeout)
    if data["status"] in ("queued", "running"):
        raise NodeTestTimeout(f"the test of node {node.get('id')!r} is still {data['status']} "
                              f"after {timeout:g} s (engine.get_test({test_id!r}) shows it "
                              "later)")
    return NodeTest(data)


# ---------------------------------------------------------------------- the debug notebook
def _code(source: str) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": source}


def _markdown(source: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def _task_cell(source: str, function: str) -> str:
    """Return a @task's shipped source as an editable cell: the comment line dropped, and
    ``@task`` put back on its function."""
    lines = []
    for line in source.splitlines():
        if line.startswith("# task ") and "shipped by value" in line:
            continue
        if line.startswith(f"def {function}("):
            lines.append("@task")
        lines.append(line)
    return "\n".join(lines).strip("\n")


def debug_notebook(context: Mapping[str, Any], flow_path: str | None) -> dict[str, Any]:
    """Return the debug notebook (nbformat 4 JSON) of one node of a run.

    Its cells attach to the run, load the node's recorded context, show its inputs and run it
    here; a ``@task`` or code node's code is in an editable cell. With ``flow_path`` (the flow
    file, relative to the notebook) the flow is linked live, as the canvas is: the last cells
    write the fix into it and resume the run with the flow's current version.
    """
    run_id, node_id, kind = context["run_id"], context["node_id"], context["type"]
    function = context.get("function") or node_id
    state = context.get("state")
    title = (f"# Debug node `{node_id}` of run `{run_id[:8]}`\n\n"
             f"Node type `{kind}`, {state} (attempt {context.get('attempt')}), flow version "
             f"{context.get('version')}." + (f"\n\nError: `{context['error']}`"
                                             if context.get("error") else ""))
    cells = [_markdown(title)]
    setup = ["import nexusflow_kernel as nf", "from nexusflow_kernel import Flow, task", "",
             f"run = nf.Run.attach({run_id!r})"]
    if flow_path:
        setup += [f"f = Flow.load({flow_path!r})",
                  f"f.link({flow_path!r}, push=False)  # the canvas's live document",
                  "f.pull()"]
    setup += [f"ctx = run.debug({node_id!r})", "ctx"]
    cells.append(_code("\n".join(setup)))
    cells.append(_markdown("What the node saw, as recorded (values shown as `***` were masked "
                           "and the node saw `***` there too):"))
    cells.append(_code("ctx.inputs, ctx.params"))
    code = context.get("code")
    if kind == "python_task" and code:
        cells.append(_markdown(f"The function `{function}` as it ran. Edit it, run the cell, "
                               "then run it on the recorded inputs:"))
        cells.append(_code(_task_cell(code, function)))
        cells.append(_code(f"ctx.run_here(task={function})"))
        fix = [f"f.task({function}, id={node_id!r})  # the fixed function into the flow"]
    elif kind == "code" and code is not None:
        cells.append(_markdown("The node's code as it ran. Edit it, run the cell, then run it "
                               "in the sandbox on the recorded inputs:"))
        cells.append(_code(f"source = {code!r}\nprint(source)"))
        cells.append(_code("ctx.run_here(source=source)"))
        fix = [f"f[{node_id!r}].set(source=source)  # the fixed code into the flow"]
    else:
        cells.append(_markdown("Run it again here on the recorded inputs (change them with "
                               "keywords: `ctx.run_here(parent={...})`, `config={...}`):"))
        cells.append(_code("ctx.run_here()"))
        fix = [f"# f[{node_id!r}].set(...)  # change its config in the flow"]
    parent = context.get("parent")
    if flow_path and isinstance(parent, Mapping) and parent.get("run_id"):
        # A sub-flow's child run: retried on its own it would not tell its parent, which
        # failed with it. The parent's retry with the current flow resumes this child in
        # place with the fixed sub-flow (runstate/flowcontrol.py start_child).
        of = parent["run_id"]
        cells.append(_markdown(
            f"This run is a sub-flow's child run: node `{parent.get('node_id')}` of run "
            f"`{of[:8]}` started it. When it gives the output you want: write the fix into "
            "the sub-flow's file (open canvases show it), then retry the parent run with the "
            "current flow (on its canvas: Retry with *current flow*, or `nexusflow retry "
            f"{of} --update`): its node resumes this same child run with the fixed version; "
            "nodes that succeeded keep their outputs. (Retried on its own, a child run does "
            "not tell its parent.)"))
        cells.append(_code("\n".join([*fix, f"parent = nf.Run.attach({of!r})",
                                      "parent.summary()"])))
    elif flow_path:
        cells.append(_markdown("When it gives the output you want: write the fix into the flow "
                               "(open canvases show it) and resume the same run with the flow's "
                               "current version. Nodes that succeeded keep their outputs."))
        cells.append(_code("\n".join([*fix, "run.retry(update=True, flow=f, wait=True)",
                                      "run.summary()"])))
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                           "name": "python3"},
            "language_info": {"name": "python"},
            "nexusflow": {"run_id": run_id, "node_id": node_id},
        },
        "nbformat": 4, "nbformat_minor": 4,
    }


__all__ = ["NodeDebug", "NodeRunError", "NodeTest", "NodeTestTimeout", "debug_notebook",
           "load_task_function", "masked_paths", "test_node"]

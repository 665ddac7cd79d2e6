"""The ``nexusflow`` command line.

Errors print one line and exit non-zero: 1 a run that did not succeed, 2 bad input (the flow,
an argument) or workers that cannot run it, 3 a backend that cannot be reached, 4 a run left
waiting for a worker nobody runs (it goes on). More commands come from other packages
through the entry point group ``nexusflow.commands`` (``worker``, ``sandbox``, ...).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from ..errors import BackendUnavailable, FlowError, NexusFlowError


class RunWaiting(NexusFlowError):
    """``nexusflow run`` gave up on a run whose queued node no live worker serves."""

FINAL = ("succeeded", "failed", "canceled")
STATE_STYLE = {
    "pending": "dim", "queued": "cyan", "running": "yellow", "scheduled": "yellow",
    "waiting": "blue",
    "succeeded": "green", "failed": "red", "skipped": "grey50", "canceled": "magenta",
}


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def cli_actor() -> str:
    """Return who runs this command, recorded as the actor of what it changes: the Hub user in
    a Hub terminal (``JUPYTERHUB_USER``), else the OS user (``uid-N`` without a passwd entry).
    A secret's creator owns it: an unscoped one is changed only by them or an administrator."""
    from ..engine import local_owner

    return local_owner()


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn Nexus-Flow errors into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlowError as exc:
            _fail(str(exc), 2)
        except BackendUnavailable as exc:
            _fail(str(exc), 3)
        except RunWaiting as exc:
            _fail(str(exc), 4)
        except NexusFlowError as exc:
            _fail(str(exc), 2)
        except ValueError as exc:  # bad settings values
            _fail(str(exc), 2)

    return wrapper


class _Group(click.Group):
    """The root group; loads plugin commands lazily from the ``nexusflow.commands`` group."""

    def _plugins(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group="nexusflow.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._plugins().get(name)
        return ep.load() if ep is not None else None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nexusflow")
def main() -> None:
    """Nexus-Flow: durable DAG workflows on RQ workers, with PostgreSQL as the record."""
    logging.basicConfig(level=os.environ.get("NEXUSFLOW_LOG_LEVEL", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")


def _engine() -> Any:
    """Return the engine: the Nexus-Flow service's client when NEXUSFLOW_SERVICE_URL is set
    (a JupyterHub user's terminal), else the local one."""
    from ..remote import open_engine

    return open_engine()


def _parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--input")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def validate(flow: Path) -> None:
    """Check that a flow compiles, and the sub-flow files it calls (relative to the working
    directory, as a run of it would find them); print its nodes in run order."""
    from ..model.compiler import compile_flow
    from ..model.document import load
    from ..runstate.subflows import check_subflow_files

    compiled = compile_flow(load(flow))
    calls = check_subflow_files(compiled.document, os.getcwd())
    click.echo(f"ok: {compiled.document.name}: {len(compiled.order)} nodes, "
               f"{len(compiled.document.edges)} edges; order: {' '.join(compiled.order)}"
               + (f"; {calls} sub-flow file(s) checked" if calls else ""))


@main.command()
@click.argument("flow", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "-i", "inputs", multiple=True, metavar="KEY=VALUE",
              help="A run input (VALUE is parsed as JSON when it can be).")
@click.option("--workers", "-w", type=click.IntRange(0, 64), default=0,
              help="Start N temporary workers for this run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--detach", is_flag=True, help="Start the run and print its id.")
@click.option("--timeout", type=float, default=None, help="Stop waiting after N seconds.")
@click.option("--use-pins", is_flag=True,
              help="Nodes with a pinned output give it instead of running.")
@click.option("--no-cache", is_flag=True, help="Serve no node from the result cache.")
@click.option("--env", "env", default=None, metavar="ENV",
              help="Run in this environment (its variables, secrets and connections; "
              "default dev).")
@handle_errors
def run(flow: Path, inputs: tuple[str, ...], workers: int, as_json: bool, detach: bool,
        timeout: float | None, use_pins: bool, no_cache: bool, env: str | None) -> None:
    """Run a flow file and show its progress; exit 0 only when it succeeded.

    With ``--workers N`` the temporary workers serve every queue the flow needs (``sandbox``
    too when it has code nodes). A node that no live worker can take is reported at once
    ("waiting: no live worker serves queue ..."); after a while the command gives up (exit 4)
    and the run goes on.
    """
    from ..model.compiler import compile_flow
    from ..model.document import load
    from ..remote import RemoteEngine, local_workers_allowed
    from ..workers import (
        LocalWorkers,
        check_code_isolation,
        isolation_choice,
        live_workers,
        queues_needed,
    )

    compiled = compile_flow(load(flow))  # fail fast, before any service starts
    engine = _engine()
    engine.check()
    sup = None
    if workers and not detach:
        local_workers_allowed(engine, f"--workers {workers}")
        sup = LocalWorkers(workers, settings=engine.settings, queues=list(queues_needed(compiled)))
    try:
        if sup is not None:
            sup.wait_ready(timeout=60)
        if not isinstance(engine, RemoteEngine):  # the service's workers are its own to check
            check_code_isolation(compiled, live_workers(engine.settings, redis=engine.redis),
                                 isolation_choice(engine.configured))
        run_id = engine.start_run(compiled, inputs=_parse_inputs(inputs),
                                  source=str(flow.resolve()), use_pins=use_pins,
                                  cache=not no_cache, env=env)
        if detach:
            click.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
            return
        result = _wait(engine, run_id, compiled.order, live=not as_json, timeout=timeout)
    finally:
        if sup is not None:
            sup.stop()
    _report(result, as_json)
    sys.exit(0 if result["status"] == "succeeded" else 1)


def _wait(engine: Any, run_id: str, order: tuple[str, ...], *, live: bool,
          timeout: float | None) -> dict[str, Any]:
    """Follow a run's events until it ends; draw a live table on a terminal.

    Every second it asks which queued nodes no live worker serves: they show as waiting (on
    stderr, once each, when there is no table) and after ``NO_WORKER_WAIT_S`` of that the
    wait ends with ``RunWaiting``.
    """
    from rich.console import Console
    from rich.live import Live

    from ..defaults import NO_WORKER_WAIT_S

    deadline = time.monotonic() + timeout if timeout else None
    states: dict[str, tuple[str, int]] = {n: ("pending", 0) for n in order}
    waiting: dict[str, str] = {}
    told: set[tuple[str, str]] = set()
    cursor = "0-0"
    console = Console(stderr=True)
    show = live and console.is_terminal
    last_check, stuck_since = 0.0, None
    with Live(_table(states, waiting), console=console, refresh_per_second=8,
              transient=False) if show else _nullcontext() as view:
        while True:
            now = time.monotonic()
            if now - last_check >= 1.0:
                last_check = now
                waiting = {w["node"]: w["message"] for w in engine.report_waiting(run_id)}
                stuck_since = (stuck_since or now) if waiting else None
                for node, message in waiting.items():
                    if view is None and (node, message) not in told:
                        told.add((node, message))
                        click.echo(f"{node}: {message}", err=True)
                if stuck_since is not None and now - stuck_since > NO_WORKER_WAIT_S:
                    node, message = next(iter(waiting.items()))
                    raise RunWaiting(f"run {run_id} gave up after {NO_WORKER_WAIT_S:g} s: node "
                                     f"{node!r} is {message}; the run goes on: see `nexusflow "
                                     f"show {run_id}`")
            items = engine.read_events(run_id, cursor, block_ms=500)
            run_state = None
            for entry_id, ev in items:
                cursor = entry_id
                if ev.get("node") is None:
                    run_state = ev["state"]
                else:
                    states[ev["node"]] = (ev["state"], ev.get("attempt") or 0)
                    if ev.get("state") != "queued":
                        waiting.pop(ev["node"], None)
            if view is not None:
                view.update(_table(states, waiting))
            if run_state in FINAL or not items:
                result = engine.get_run(run_id)
                if result["status"] in FINAL:
                    if view is not None:
                        states.update({k: (v["state"], v["attempts"])
                                       for k, v in result["nodes"].items()})
                        view.update(_table(states, {}))
                    return result
            if deadline and time.monotonic() > deadline:
                raise NexusFlowError(f"run {run_id} did not finish within {timeout:g} s "
                                     "(it goes on; see `nexusflow show`)")


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _table(states: dict[str, tuple[str, int]], waiting: dict[str, str]) -> Any:
    from rich.table import Table

    done = sum(1 for s, _ in states.values() if s in ("succeeded", "failed", "skipped",
                                                      "canceled"))
    caption = "\n".join(sorted(set(waiting.values()))) or None
    table = Table(title=f"{done}/{len(states)} nodes done", show_edge=False, caption=caption,
                  caption_style="bold yellow")
    table.add_column("node")
    table.add_column("state")
    table.add_column("attempt", justify="right")
    for node, (state, attempt) in list(states.items())[:40]:
        shown = "waiting" if node in waiting else state
        table.add_row(node, f"[{STATE_STYLE.get(shown, '')}]{shown}", str(attempt or ""))
    if len(states) > 40:
        table.add_row(f"... {len(states) - 40} more", "", "")
    return table


def _report(result: dict[str, Any], as_json: bool) -> None:
    """Print a run: one JSON object, or a table, then every error in full below it."""
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    env = result.get("env")
    table = Table(title=f"run {result['run_id']}: {result['status']}"
                  + (f" (environment {env})" if env else ""))
    for col in ("node", "state", "attempts", "duration", "error"):
        table.add_column(col)
    errors = []
    for node, info in result["nodes"].items():
        dur = f"{info['duration_ms'] / 1000:.3f}s" if info.get("duration_ms") else ""
        error = info.get("error") or ""
        if error:
            errors.append((node, error))
        table.add_row(node, f"[{STATE_STYLE.get(info['state'], '')}]{info['state']}",
                      str(info["attempts"]), dur,
                      Text(error if len(error) <= 60 else error[:59] + "…"))
    console = Console()
    console.print(table)
    for node, error in errors:  # whole, and plain text (an error may hold brackets)
        console.print(Text(f"{node}: {error}"), soft_wrap=True)


def _waits(waiting: dict[str, Any]) -> str:
    """Say what a waiting node waits for, and how to end the wait."""
    kind = waiting.get("kind")
    if kind == "approval":
        who = ", ".join(waiting.get("approvers") or []) or "anyone with the runner role"
        text = f"waits for a decision ({who}): {waiting.get('message') or '(no message)'}"
        text += " -- nexusflow approve|reject RUN NODE"
    elif kind == "resume":
        text = "waits for a callback on its resume URL"
    elif kind == "subflow":
        text = f"waits for its sub-flow run {waiting.get('child')}"
    elif kind == "worker":  # queued, and no live worker serves its queue
        return str(waiting.get("message"))
    else:
        text = f"waits ({kind})"
    if waiting.get("timeout_at"):
        text += f" (times out at {waiting['timeout_at']})"
    return text


def item_counts(counts: dict[str, Any]) -> str:
    """Say how far a map node's items are: ``items 37/100 done, 2 failed, 5 running``."""
    text = f"items {counts.get('done', 0)}/{counts.get('total', 0)} done"
    for key in ("failed", "canceled", "running"):
        if counts.get(key):
            text += f", {counts[key]} {key}"
    return text


def _exit_code(status: str) -> int:
    """0 for a run that succeeded (or, for ``show``, is still running), 1 otherwise."""
    return 1 if status in ("failed", "canceled") else 0


@main.command()
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs(limit: int, as_json: bool) -> None:
    """List recent runs."""
    items = _engine().list_runs(limit=limit)
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("run", "name", "status", "started", "ended"):
        table.add_column(col)
    for r in items:
        table.add_row(r["run_id"], r["name"], f"[{STATE_STYLE.get(r['status'], '')}]"
                      f"{r['status']}", r["started_at"] or "", r["ended_at"] or "")
    Console().print(table)


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show(run_id: str, as_json: bool) -> None:
    """Show a run: its nodes, attempts, outputs and errors.

    Exits 0 when the run succeeded or is still running, 1 when it failed or was canceled.
    """
    result = _engine().get_run(run_id)
    _report(result, as_json)
    if not as_json:
        for node, info in result["nodes"].items():
            if info.get("output") is not None:
                click.echo(f"{node}: {json.dumps(info['output'], default=str)[:200]}")
            if info.get("waiting"):
                click.echo(f"{node}: {_waits(info['waiting'])}")
            if info.get("child_run"):
                click.echo(f"{node}: sub-flow run {info['child_run']} (nexusflow show "
                           f"{info['child_run']})")
            if info.get("items"):
                click.echo(f"{node}: {item_counts(info['items'])} (nexusflow items "
                           f"{result['run_id']} {node})")
    sys.exit(_exit_code(result["status"]))


@main.command()
@click.argument("run_id")
@handle_errors
def cancel(run_id: str) -> None:
    """Cancel a running run."""
    _engine().cancel_run(run_id)
    click.echo(f"canceled {run_id}")


@main.command()
@click.argument("run_id")
@click.option("--from", "from_node", default=None, help="Run this node and all after it again.")
@click.option("--update", is_flag=True,
              help="Run them with the flow's current version (the run's .nxflow file, or "
              "--flow, else the latest stored version), keeping what succeeded.")
@click.option("--flow", "flow_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="With --update: the flow file to take the version from.")
@handle_errors
def retry(run_id: str, from_node: str | None, update: bool, flow_file: Path | None) -> None:
    """Retry a finished run from its failed nodes (or from a chosen node), in the same run."""
    if flow_file is not None and not update:
        raise click.UsageError("--flow goes with --update")
    engine = _engine()
    if not update:
        engine.retry_run(run_id, from_node)
        click.echo(run_id)
        return
    if flow_file is None:
        source = engine.get_run(run_id, outputs=False)["source"] or ""
        if source.endswith(".nxflow") and os.path.isabs(source) and os.path.isfile(source):
            flow_file = Path(source)
    done = engine.retry_updated(run_id, flow_file, from_node=from_node)
    click.echo(run_id)
    what = f"from {flow_file}" if flow_file is not None else "latest stored"
    click.echo(f"version {done['version']} ({what}; was {done['previous_version']}): "
               f"running again {', '.join(done['rerun'])}", err=True)
    if done["stale"]:
        click.echo(f"kept outputs of changed nodes {', '.join(done['stale'])} (retry --from "
                   "one of them to run it again)", err=True)


@main.command()
@click.argument("run_id")
@handle_errors
def replay(run_id: str) -> None:
    """Start a new run with the same workflow version and inputs."""
    click.echo(_engine().replay_run(run_id))


def _add_services() -> None:
    try:
        from .services import services
    except ImportError:
        return
    main.add_command(services)


_add_services()


if __name__ == "__main__":
    main()

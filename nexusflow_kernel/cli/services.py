"""``nexusflow services``: start, stop and inspect the embedded PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ServiceError

_NAMES = {"postgres": "PostgreSQL", "redis": "Redis"}


def _data_dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of the embedded services (default: NEXUSFLOW_DATA_DIR or "
        "~/.local/share/nexusflow).",
    )(func)


def _resolve(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    from ..settings import Settings

    return Settings.from_env().data_dir


@click.group("services")
def services() -> None:
    """Start, stop and inspect the embedded PostgreSQL and Redis."""


@services.command("start")
@_data_dir_option
def start(data_dir: Path | None) -> None:
    """Start the embedded servers that are not running and print where they listen.

    Servers started (or found) here keep running until ``nexusflow services stop``; those that
    JupyterLab, a kernel or ``nexusflow run`` start on their own stop when the last process
    using them exits."""
    from ..services import services_status, start_services

    folder = _resolve(data_dir)
    began = time.monotonic()
    try:
        start_services(folder)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, info in services_status(folder).items():
        click.echo(f"{_NAMES[name]}: {info['url']} (pid {info['pid']})")
    click.echo(f"ready in {time.monotonic() - began:.2f}s; data folder {folder}; they run "
               "until `nexusflow services stop`")


@services.command("stop")
@_data_dir_option
def stop(data_dir: Path | None) -> None:
    """Shut the embedded servers down cleanly."""
    from ..services import stop_services

    folder = _resolve(data_dir)
    try:
        stop_services(folder)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stopped the embedded services in {folder}")


@services.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """Show whether each embedded server runs, its pid, URL (password masked), folders, and
    what keeps it running (``services start``, or the processes that use it)."""
    from ..services import services_status

    folder = _resolve(data_dir)
    report = services_status(folder)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Embedded services in {folder}")
    for column in ("service", "running", "pid", "url", "data", "kept by"):
        table.add_column(column, overflow="fold")
    for name, info in report.items():
        if not info["running"]:
            by = "-"
        elif info["kept"]:
            by = "services start"
        else:
            by = "pids " + ", ".join(str(pid) for pid in info["users"]) if info["users"] else \
                "nobody (stops when the next user leaves)"
        table.add_row(
            _NAMES[name],
            "[green]yes[/green]" if info["running"] else "[red]no[/red]",
            str(info["pid"] or "-"),
            info["url"] or "-",
            info["data"],
            by,
        )
    Console().print(table)
    click.echo("logs: " + ", ".join(info["log"] for info in report.values()))

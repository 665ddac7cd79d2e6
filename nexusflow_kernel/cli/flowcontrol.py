"""``nexusflow approve|reject RUN NODE`` and ``nexusflow pools list|set|delete``."""

from __future__ import annotations

import json
from typing import Any

import click

from .main import handle_errors


def _engine() -> Any:
    from ..remote import open_engine

    return open_engine()


def _decide(run_id: str, node_id: str, approved: bool, comment: str | None,
            as_json: bool) -> None:
    decision = _engine().decide(run_id, node_id, approved, comment=comment)
    if as_json:
        click.echo(json.dumps(decision))
        return
    verb = "approved" if decision["approved"] else "rejected"
    click.echo(f"{node_id} of run {run_id}: {verb} by {decision['decided_by']} at "
               f"{decision['decided_at']}")


def _decision_command(approved: bool) -> click.Command:
    verb = "approve" if approved else "reject"

    @click.command(name=verb)
    @click.argument("run_id")
    @click.argument("node_id")
    @click.option("--comment", "-m", default=None, help="Why (kept with the decision).")
    @click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
    @handle_errors
    def command(run_id: str, node_id: str, comment: str | None, as_json: bool) -> None:
        _decide(run_id, node_id, approved, comment, as_json)

    command.help = (f"{verb.capitalize()} the approval node NODE_ID that waits in RUN_ID "
                    "(as this user; the node's approvers, if it names any, decide).")
    return command


approve = _decision_command(True)
reject = _decision_command(False)


@click.group()
def pools() -> None:
    """Pools: bound how many nodes run in them at once, across all runs (a node's `pool`)."""


@pools.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def pools_list(as_json: bool) -> None:
    """List pools with their size, the slots in use and the nodes waiting."""
    items = _engine().list_pools()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("pool", "size", "running", "waiting", "description"):
        table.add_column(col)
    for p in items:
        table.add_row(p["name"], str(p["size"]), str(p["running"]), str(p["waiting"]),
                      p.get("description") or "")
    Console().print(table)


@pools.command(name="set")
@click.argument("name")
@click.argument("size", type=int)
@click.option("--description", "-d", default=None)
@handle_errors
def pools_set(name: str, size: int, description: str | None) -> None:
    """Create pool NAME of SIZE slots, or resize it (waiting nodes start at once)."""
    pool = _engine().set_pool(name, size, description=description)
    click.echo(f"pool {pool['name']}: size {pool['size']}, {pool['running']} running, "
               f"{pool['waiting']} waiting")


@pools.command(name="delete")
@click.argument("name")
@handle_errors
def pools_delete(name: str) -> None:
    """Delete pool NAME (refused while a node uses it)."""
    _engine().delete_pool(name)
    click.echo(f"deleted pool {name}")


__all__ = ["approve", "pools", "reject"]

"""``nexusflow approve|reject RUN NODE``, ``nexusflow pools list|set|delete`` and
``nexusflow items RUN NODE`` (a map node's items)."""

from __future__ import annotations

import json
from typing import Any

import click

from .main import handle_errors, item_counts


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


ITEM_STATES = ("queued", "running", "succeeded", "failed", "canceled")


@click.command()
@click.argument("run_id")
@click.argument("node_id")
@click.option("--state", type=click.Choice(ITEM_STATES), default=None,
              help="Only the items in this state.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@handle_errors
def items(run_id: str, node_id: str, state: str | None, offset: int, limit: int,
          as_json: bool) -> None:
    """List the items of the map node NODE_ID of RUN_ID (a page at a time, in item order):
    state, attempts, output or error."""
    page = _engine().map_items(run_id, node_id, offset=offset, limit=limit, state=state)
    if as_json:
        click.echo(json.dumps(page, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .main import STATE_STYLE

    counts = page.get("counts")
    shown = len(page["items"])
    title = (f"{node_id}: {item_counts(counts)}" if counts else
             f"{node_id}: the map has not started")
    table = Table(title=title, caption=(f"items {offset}..{offset + shown - 1} of "
                                        f"{page['total']}" + (f" {state}" if state else "")
                                        if shown else None))
    for col in ("index", "state", "attempts", "output / error"):
        table.add_column(col)
    for it in page["items"]:
        what = it["error"] if it.get("error") else json.dumps(it.get("output"), default=str)
        what = what or ""
        table.add_row(str(it["index"]), f"[{STATE_STYLE.get(it['state'], '')}]{it['state']}",
                      str(it["attempts"]), Text(what if len(what) <= 80 else what[:79] + "…"))
    Console().print(table)


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

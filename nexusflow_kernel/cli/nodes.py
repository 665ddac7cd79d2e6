"""``nexusflow nodes list``: the node types this Python environment provides, and the broken ones.

It reads the registry of this process, so it shows what a worker or a server started from the
same environment loads (node packages must be installed wherever workers run).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..nodes import listing


@click.group("nodes")
def nodes() -> None:
    """Node types: built in and from installed node packages (entry point group nexusflow.nodes)."""


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


@nodes.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with status 1 when a node package is broken (for a package's CI).",
)
def _list(as_json: bool, strict: bool) -> None:
    """List the installed node types with their package, version and category, then the
    broken ones with the reason."""
    data: dict[str, Any] = listing()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        head = ["TYPE", "TITLE", "CATEGORY", "PACKAGE", "VERSION"]
        rows = [
            [t["type"], t["title"], t["category"], t["package"], t["version"]]
            for t in data["node_types"]
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for cells in [head, *rows]:
            click.echo(_row(cells, widths))
        if data["broken"]:
            click.echo(
                f"\nbroken ({len(data['broken'])}): not registered, flows that use "
                "them do not compile"
            )
            for b in data["broken"]:
                click.echo(
                    f"  {b['type']}  {b['package']} {b['version']}  "
                    f"({b['entry_point']}): {b['reason']}"
                )
    if strict and data["broken"]:
        sys.exit(1)

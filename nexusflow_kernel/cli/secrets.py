"""``nexusflow secrets set|list|delete|keygen``: the secrets command (values are write-only)."""

from __future__ import annotations

import json
import os
import sys

import click

from ..remote import RemoteEngine, RemoteSecrets
from ..secrets import SecretStore, check_name, generate_key
from ..settings import Settings
from .main import handle_errors


def _store() -> SecretStore | RemoteSecrets:
    """Return the secrets: through the Nexus-Flow service when NEXUSFLOW_SERVICE_URL is set
    (a JupyterHub user's terminal: the service checks who may change what), else the store."""
    settings = Settings.from_env()
    if settings.service_url:
        return RemoteEngine(settings).secrets
    return SecretStore(settings)


@click.group("secrets")
def secrets_cli() -> None:
    """Manage encrypted secrets (flows refer to them as {"$secret": "NAME"})."""


@secrets_cli.command("set")
@click.argument("name")
@click.option(
    "--value", envvar="NEXUSFLOW_SECRET_VALUE", default=None,
    help="The value (prefer stdin or the prompt: a flag lands in the shell history).",
)
@click.option("--group", "groups", multiple=True,
              help="Scope the secret to a JupyterHub group (repeatable): only runs of its "
              "members may read it.")
@click.option("--unscoped", is_flag=True, help="Remove the secret's group scope.")
@handle_errors
def _set(name: str, value: str | None, groups: tuple[str, ...], unscoped: bool) -> None:
    """Store the secret NAME; the value comes from --value, standard input, or a prompt."""
    check_name(name)
    if value is None:
        if sys.stdin.isatty():
            value = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True)
        else:
            value = sys.stdin.read().rstrip("\r\n")
    scope = [] if unscoped else (list(groups) if groups else None)
    _store().set(name, value, actor=os.environ.get("USER"), groups=scope)
    click.echo(f"secret {name} stored" + (f" (groups: {', '.join(groups)})" if groups else ""))


@secrets_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def _list(as_json: bool) -> None:
    """List secret names (values are never shown)."""
    rows = _store().list()
    if as_json:
        click.echo(json.dumps({"secrets": rows}, indent=2))
        return
    for row in rows:
        scope = f"\tgroups {','.join(row['groups'])}" if row.get("groups") else ""
        click.echo(f"{row['name']}\tupdated {row['updated_at']}{scope}")


@secrets_cli.command("delete")
@click.argument("name")
@handle_errors
def _delete(name: str) -> None:
    """Delete the secret NAME."""
    _store().delete(name)
    click.echo(f"secret {name} deleted")


@secrets_cli.command("keygen")
def _keygen() -> None:
    """Print a new random key for NEXUSFLOW_SECRET_KEY."""
    click.echo(generate_key())

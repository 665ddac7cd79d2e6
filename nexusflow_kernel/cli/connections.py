"""``nexusflow connections add|test|list|remove``: stored connections (passwords write-only)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..connections import KINDS, ConnectionStore
from ..remote import RemoteConnections, RemoteEngine
from ..settings import Settings
from .main import cli_actor, handle_errors


def _store() -> ConnectionStore | RemoteConnections:
    """Return the connections: through the Nexus-Flow service when NEXUSFLOW_SERVICE_URL is
    set (the service checks who may change what), else the store."""
    settings = Settings.from_env()
    if settings.service_url:
        return RemoteEngine(settings).connections
    return ConnectionStore(settings)


_ENV = click.option(
    "--env",
    "env",
    default="",
    metavar="ENV",
    help="The environment whose connection this is (default: every environment without its own).",
)


@click.group("connections")
def connections_cli() -> None:
    """Manage stored connections (db_query's connection: NAME, the http node's too)."""


@connections_cli.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default="postgres", show_default=True)
@click.option(
    "--url",
    required=True,
    help="postgresql://user@host:5432/db, or the base URL of an http connection.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from standard input (else a prompt when the URL has a "
    "user and no password; a password in --url lands in the shell history).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME",
    help="http: a header sent with every request (repeatable); its value is read "
    "from standard input or a prompt, never from the command line.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Scope the connection to a JupyterHub group (repeatable).",
)
@click.option(
    "--trusted", is_flag=True, help="db_query may use a privileged role through it (superuser...)."
)
@_ENV
@handle_errors
def _add(
    name: str,
    kind: str,
    url: str,
    password_stdin: bool,
    headers: tuple[str, ...],
    groups: tuple[str, ...],
    trusted: bool,
    env: str,
) -> None:
    """Store the connection NAME (replacing one of the same name and environment)."""
    from urllib.parse import urlsplit

    password = None
    parts = urlsplit(url)
    if kind == "postgres" and parts.username and parts.password is None:
        if password_stdin or not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt(f"Password of {parts.username}", hide_input=True)
    head: dict[str, str] = {}
    for header in headers:
        if sys.stdin.isatty():
            head[header] = click.prompt(f"Value of header {header}", hide_input=True)
        else:
            head[header] = sys.stdin.readline().rstrip("\r\n")
    fields: dict[str, Any] = {
        "kind": kind,
        "url": url,
        "password": password,
        "headers": head or None,
        "groups": list(groups),
        "trusted": trusted,
    }
    if env and not Settings.from_env().service_url:  # the service checks it itself
        from ..engine import Engine

        Engine(Settings.from_env()).environments.get(env)  # an unknown one says so
    row = _store().add(name, env=env, actor=cli_actor(), **fields)
    click.echo(f"connection {name} stored{_where(env)}: {row['display']}")


@connections_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--env",
    "env",
    default=None,
    metavar="ENV",
    help="Only what a run in ENV uses (its own and every environment's).",
)
@handle_errors
def _list(as_json: bool, env: str | None) -> None:
    """List connections (passwords are never shown)."""
    rows = _store().list(env=env)
    if as_json:
        click.echo(json.dumps({"connections": rows}, indent=2))
        return
    for row in rows:
        scope = f"\tgroups {','.join(row['groups'])}" if row.get("groups") else ""
        click.echo(
            f"{row['name']}\t{row['env'] or '*'}\t{row['kind']}\t{row['display']}"
            f"{' (trusted)' if row.get('trusted') else ''}{scope}"
        )


@connections_cli.command("test")
@click.argument("name")
@_ENV
@handle_errors
def _test(name: str, env: str) -> None:
    """Connect with the connection NAME and say whether it works."""
    result = _store().test(name, env)
    click.echo(
        f"{name}{_where(env)}: {'ok' if result['ok'] else 'FAILED'}: "
        f"{result['message']} ({result['ms']} ms)"
    )
    if not result["ok"]:
        sys.exit(1)


@connections_cli.command("remove")
@click.argument("name")
@_ENV
@handle_errors
def _remove(name: str, env: str) -> None:
    """Delete the connection NAME."""
    _store().remove(name, env)
    click.echo(f"connection {name} removed{_where(env)}")


def _where(env: str) -> str:
    return f" (environment {env})" if env else ""

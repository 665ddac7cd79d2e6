"""``nexusflow server``: run the Nexus-Flow service; ``nexusflow server token ...``."""

from __future__ import annotations

import json
import os

import click

from nexusflow_kernel.cli.main import handle_errors


@click.group("server", invoke_without_command=True,
             context_settings={"ignore_unknown_options": True})
@click.option("--ip", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8765).")
@click.option("--base-url", default=None, help="URL prefix of the API (default /).")
@click.option("--auth", type=click.Choice(["hub", "token"]), default=None,
              help="JupyterHub tokens, or the service's own (default: hub when run by a Hub).")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="A Python config file (c.NexusFlow.*, c.NexusFlowService.*).")
@click.pass_context
def server(ctx: click.Context, ip: str | None, port: int | None, base_url: str | None,
           auth: str | None, config_file: str | None) -> None:
    """Run the Nexus-Flow service: REST API, websockets, webhooks and triggers.

    It is the one process (with the workers) that holds the database and Redis URLs and the
    secrets key; JupyterLab servers and notebooks reach it with NEXUSFLOW_SERVICE_URL.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .app import main

    argv = []
    for flag, value in (("--ip", ip), ("--port", port), ("--base-url", base_url),
                        ("--auth", auth), ("--config", config_file)):
        if value is not None:
            argv.append(f"{flag}={value}")
    main(argv)


def _tokens():  # type: ignore[no-untyped-def]
    from nexusflow_kernel.runstate.db import get_pool
    from nexusflow_kernel.services import resolve_backends
    from nexusflow_kernel.settings import Settings

    from .tokens import ApiTokens

    settings = resolve_backends(Settings.from_env())
    return ApiTokens(get_pool(settings.database_url))  # type: ignore[arg-type]


@server.group("token")
def token() -> None:
    """Make, list and revoke the service's API tokens (--auth token)."""


@token.command("create")
@click.argument("user")
@click.option("--group", "groups", multiple=True, help="A group of the user (repeatable).")
@click.option("--admin", is_flag=True, help="A Nexus-Flow administrator.")
@click.option("--expires-in", default=None, help="Lifetime such as 30d or 12h (default: none).")
@click.option("--note", default=None, help="What the token is for.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def create(user: str, groups: tuple[str, ...], admin: bool, expires_in: str | None,
           note: str | None, as_json: bool) -> None:
    """Make a token for USER and print it (it is shown only now)."""
    from .tokens import parse_duration

    made = _tokens().create(user, groups=list(groups), admin=admin, note=note,
                            expires_in=parse_duration(expires_in) if expires_in else None,
                            actor=os.environ.get("USER"))
    if as_json:
        click.echo(json.dumps(made))
    else:
        click.echo(made["token"])
        click.echo(f"token {made['token_id']} for {user}"
                   + (f", groups {', '.join(made['groups'])}" if made["groups"] else "")
                   + (", admin" if admin else "")
                   + (f", expires {made['expires_at']}" if made["expires_at"] else ""),
                   err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_tokens(as_json: bool) -> None:
    """List tokens (ids, users, groups; never a token)."""
    rows = _tokens().list()
    if as_json:
        click.echo(json.dumps({"tokens": rows}, indent=2))
        return
    for r in rows:
        extra = (f"\tgroups {','.join(r['groups'])}" if r["groups"] else "") + (
            "\tadmin" if r["admin"] else "") + (
            f"\texpires {r['expires_at']}" if r["expires_at"] else "")
        click.echo(f"{r['token_id']}\t{r['user']}{extra}")


@token.command("revoke")
@click.argument("token_id")
@handle_errors
def revoke(token_id: str) -> None:
    """Revoke the token TOKEN_ID (as `token list` shows it)."""
    _tokens().revoke(token_id)
    click.echo(f"token {token_id} revoked")

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


# ---------------------------------------------------------------------- schedules

def _schedule_client():  # type: ignore[no-untyped-def]
    """Return ``(remote engine or None, settings)``: the service's REST API when
    NEXUSFLOW_SERVICE_URL is set (it checks the caller's role), else the database."""
    from nexusflow_kernel.remote import RemoteEngine
    from nexusflow_kernel.services import resolve_backends
    from nexusflow_kernel.settings import Settings

    settings = Settings.from_env()
    if settings.service_url:
        return RemoteEngine(settings), settings
    return None, resolve_backends(settings)


def _print_schedules(rows: list, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"schedules": rows}, indent=2, default=str))
        return
    for r in rows:
        policy = r.get("misfire", "skip") + (
            f" (at most {r.get('catch_up_limit')})" if r.get("misfire") == "catch_up" else "")
        click.echo(f"{r['schedule_id']}\t{r['cron']} {r['timezone']}\tnext {r['next_fire_at']}"
                   f"\tmisfire {policy}\tskipped {r.get('skipped_firings', 0)}"
                   f"\tenv {r.get('env') or 'dev'}")


@click.group("schedules")
def schedules() -> None:
    """Cron schedules of workflows: the service fires them, with or without JupyterLab.

    Through the Nexus-Flow service when NEXUSFLOW_SERVICE_URL is set (your role on the
    workflow decides), else directly on the database (operators).
    """


@schedules.command("list")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_schedules(workflow_id: str, as_json: bool) -> None:
    """List WORKFLOW_ID's schedules (with their misfire policy)."""
    remote, settings = _schedule_client()
    if remote is not None:
        rows = remote._call("GET", f"workflows/{workflow_id}/schedules")["schedules"]
    else:
        rows = _store(settings).schedules(workflow_id=workflow_id)
    _print_schedules(rows, as_json)


@schedules.command("add")
@click.argument("workflow_id")
@click.option("--cron", required=True, help="Cron expression, e.g. '0 6 * * 1-5'.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone.")
@click.option("--inputs", "inputs_json", default="{}", help="The runs' inputs (a JSON object).")
@click.option("--version", type=int, default=None, help="Pin a version (default: the latest).")
@click.option("--env", "env", default=None,
              help="Run in this environment, the version promoted there (not with --version).")
@click.option("--misfire", type=click.Choice(["skip", "catch_up"]), default="skip",
              show_default=True,
              help="Firings missed while no service ran: run none, or catch up on them.")
@click.option("--catch-up-limit", type=click.IntRange(1, 100), default=10, show_default=True,
              help="With --misfire catch_up: the most missed firings run after one outage.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def add_schedule(workflow_id: str, cron: str, timezone: str, inputs_json: str,
                 version: int | None, env: str | None, misfire: str, catch_up_limit: int,
                 as_json: bool) -> None:
    """Run WORKFLOW_ID on a cron schedule.

    With --env, each firing runs in that environment the version promoted there (as a webhook
    or queue trigger of the environment does); creating it needs the deployer role on it.
    """
    from nexusflow_kernel.errors import NexusFlowError

    try:
        inputs = json.loads(inputs_json)
    except ValueError as exc:
        raise NexusFlowError(f"--inputs is not JSON: {exc}") from None
    if not isinstance(inputs, dict):
        raise NexusFlowError("--inputs must be a JSON object")
    body = {"cron": cron, "timezone": timezone, "inputs": inputs, "misfire": misfire,
            "catch_up_limit": catch_up_limit}
    if version is not None:
        body["version"] = version
    if env is not None:
        if version is not None:
            raise NexusFlowError("a schedule of an environment runs the version promoted "
                                 "there: give --env or --version, not both")
        body["env"] = env
    remote, settings = _schedule_client()
    if remote is not None:
        made = remote._call("POST", f"workflows/{workflow_id}/schedules", body=body)
    else:
        made = _add_direct(settings, workflow_id, body)
    if as_json:
        click.echo(json.dumps(made, default=str))
    else:
        where = f" in environment {made['env']}" if made.get("env") else ""
        click.echo(f"schedule {made['schedule_id']}{where}: next firing {made['next_fire_at']}")


def _store(settings):  # type: ignore[no-untyped-def]
    from nexusflow_kernel.runstate.db import get_pool

    from ..store import ServerStore

    return ServerStore(get_pool(settings.database_url), None)


def _add_direct(settings, workflow_id: str, body: dict) -> dict:  # type: ignore[no-untyped-def]
    """Create a schedule on the database with the checks the REST API makes."""
    from datetime import UTC, datetime

    from nexusflow_kernel.engine import Engine

    from ..triggers import misfire_policy, next_fire

    misfire, limit = misfire_policy(body)  # BadRequest names the field
    first = next_fire(body["cron"], body["timezone"], datetime.now(UTC))
    env = body.get("env")
    engine = Engine(settings)
    try:
        engine.get_workflow(workflow_id, body.get("version"))  # NotFoundError when missing
        if env is not None:  # UnknownEnvironment names it and the known ones
            env = engine.environments.get(env)["name"]
    finally:
        engine.close()
    return _store(settings).create_schedule(
        workflow_id, version=body.get("version"), env=env, cron=body["cron"],
        timezone=body["timezone"], inputs=body["inputs"], next_fire_at=first, misfire=misfire,
        catch_up_limit=limit, actor=os.environ.get("USER"))


@schedules.command("delete")
@click.argument("schedule_id")
@handle_errors
def delete_schedule(schedule_id: str) -> None:
    """Delete the schedule SCHEDULE_ID."""
    remote, settings = _schedule_client()
    if remote is not None:
        remote._call("DELETE", f"schedules/{schedule_id}")
    else:
        _store(settings).delete_trigger("nexusflow_schedules", "schedule_id", schedule_id)
    click.echo(f"schedule {schedule_id} deleted")

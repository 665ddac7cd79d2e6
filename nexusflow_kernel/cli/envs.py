"""``nexusflow envs``: environments, their variables and role grants (issue #17)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ..environments import ENV_ROLES, EnvStore
from ..remote import RemoteEngine, RemoteEnvs
from ..settings import Settings
from .main import handle_errors


def _store() -> EnvStore | RemoteEnvs:
    """The environments: through the Nexus-Flow service when NEXUSFLOW_SERVICE_URL is set
    (the service checks roles), else in the database."""
    settings = Settings.from_env()
    if settings.service_url:
        return RemoteEngine(settings).environments
    from ..engine import Engine

    return Engine(settings).environments


def _value(text: str) -> Any:
    """A variable's value: JSON when it parses (``5``, ``true``, ``[1, 2]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@click.group("envs")
def envs_cli() -> None:
    """Manage environments (dev, prod, ...): variables, role grants; runs use --env."""


@envs_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def _list(as_json: bool) -> None:
    """List environments with their variables and role grants."""
    rows = _store().list()
    if as_json:
        click.echo(json.dumps({"environments": rows}, indent=2, default=str))
        return
    for row in rows:
        roles = ", ".join(f"{r['principal']}={r['role']}" for r in row.get("roles") or [])
        click.echo(f"{row['name']}\t{'restricted' if row['restricted'] else 'open'}\t"
                   f"vars: {', '.join(sorted(row['vars'])) or '-'}\troles: {roles or '-'}")


@envs_cli.command("create")
@click.argument("name")
@click.option("--description", default=None)
@click.option("--open", "is_open", is_flag=True,
              help="Anyone may run flows in it (default: only users with a role on it).")
@handle_errors
def _create(name: str, description: str | None, is_open: bool) -> None:
    """Create the environment NAME (administrators)."""
    _store().create(name, description=description, restricted=not is_open,
                    actor=os.environ.get("USER"))
    click.echo(f"environment {name} created" + ("" if is_open else " (restricted: grant "
                                                 f"roles with `nexusflow envs grant {name}`)"))


@envs_cli.command("delete")
@click.argument("name")
@handle_errors
def _delete(name: str) -> None:
    """Delete the environment NAME with its own secrets and connections."""
    _store().delete(name)
    click.echo(f"environment {name} deleted")


@envs_cli.command("set-var")
@click.argument("env")
@click.argument("name")
@click.argument("value")
@handle_errors
def _set_var(env: str, name: str, value: str) -> None:
    """Set variable NAME of environment ENV (env['NAME'] in expressions; JSON or text)."""
    _store().set_var(env, name, _value(value))
    click.echo(f"{env}: {name} set")


@envs_cli.command("unset-var")
@click.argument("env")
@click.argument("name")
@handle_errors
def _unset_var(env: str, name: str) -> None:
    """Remove variable NAME of environment ENV."""
    _store().unset_var(env, name)
    click.echo(f"{env}: {name} removed")


@envs_cli.command("grant")
@click.argument("env")
@click.argument("principal")
@click.argument("role", type=click.Choice(ENV_ROLES))
@handle_errors
def _grant(env: str, principal: str, role: str) -> None:
    """Give PRINCIPAL (a user, '*', or group:NAME) ROLE on environment ENV."""
    _store().grant(env, principal, role, actor=os.environ.get("USER"))
    click.echo(f"{principal} is {role} on {env}")


@envs_cli.command("revoke")
@click.argument("env")
@click.argument("principal")
@handle_errors
def _revoke(env: str, principal: str) -> None:
    """Take PRINCIPAL's role on environment ENV away."""
    _store().revoke(env, principal)
    click.echo(f"{principal} has no role on {env} now")


def _engine() -> Any:
    from ..remote import open_engine

    return open_engine(Settings.from_env())


def _workflow_id(engine: Any, flow: str) -> str:
    """A workflow id, or the workflow a .nxflow file of this user is filed under."""
    import uuid

    try:
        return str(uuid.UUID(flow))
    except ValueError:
        pass
    from pathlib import Path

    from ..engine import file_workflow_key

    if not Path(flow).is_file() or isinstance(engine, RemoteEngine):
        raise click.UsageError(f"{flow!r} is neither a workflow id nor a flow file here "
                               "(through the service, give the workflow id: `nexusflow runs`)")
    found = engine.workflow_for_key(file_workflow_key(flow))
    if found is None:
        raise click.UsageError(f"{flow} was never run or saved, so it has no versions yet")
    return str(found)


@click.command("promote")
@click.argument("flow")
@click.option("--version", "version", type=click.IntRange(1), required=True)
@click.option("--env", "env", required=True, metavar="ENV")
@click.option("--dry-run", is_flag=True, help="Show what would change; promote nothing.")
@click.option("--note", default=None, help="Why (kept in the promotion history).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def promote(flow: str, version: int, env: str, dry_run: bool, note: str | None,
            as_json: bool) -> None:
    """Promote version N of FLOW (a workflow id or a .nxflow file) to environment ENV: its
    triggers of ENV run that version. A rollback is the promotion of an earlier version."""
    engine = _engine()
    wid = _workflow_id(engine, flow)
    result = engine.promote(wid, version, env, actor=os.environ.get("USER"), note=note,
                            dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    was = result["from_version"]
    if result["unchanged"]:
        click.echo(f"version {version} is already the one promoted to {env}")
        return
    click.echo(f"{env}: v{was if was is not None else '-'} -> v{version}"
               + (" (dry run: nothing promoted)" if dry_run else ""))
    for part in ("nodes", "edges"):
        for what in ("added", "removed", "changed"):
            if result[part][what]:
                click.echo(f"  {part} {what}: {', '.join(result[part][what])}")
    if result["text"]:
        click.echo(result["text"].rstrip("\n"))


@click.command("promotions")
@click.argument("flow")
@click.option("--env", "env", default=None, metavar="ENV")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def promotions(flow: str, env: str | None, as_json: bool) -> None:
    """Show which version each environment runs, and who promoted what, when."""
    engine = _engine()
    result = engine.promotions(_workflow_id(engine, flow), env)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for name, version in sorted(result["current"].items()):
        click.echo(f"{name}: v{version}")
    for row in result["history"]:
        was = row["previous_version"]
        click.echo(f"{row['promoted_at']}\t{row['env']}\tv{was if was is not None else '-'} -> "
                   f"v{row['version']}\t{row['promoted_by'] or ''}\t{row['note'] or ''}")

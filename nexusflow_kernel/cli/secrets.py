"""``nexusflow secrets set|list|delete|keygen``: the secrets command (values are write-only)."""

from __future__ import annotations

import json
import os
import sys

import click

from ..remote import RemoteEngine, RemoteSecrets
from ..secrets import SecretStore, check_name, generate_key
from ..settings import Settings
from .main import cli_actor, handle_errors


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
@click.option("--env", "env", default="", metavar="ENV",
              help="The value of environment ENV (default: of every environment without its "
              "own).")
@handle_errors
def _set(name: str, value: str | None, groups: tuple[str, ...], unscoped: bool,
         env: str) -> None:
    """Store the secret NAME; the value comes from --value, standard input, or a prompt."""
    check_name(name)
    if value is None:
        if sys.stdin.isatty():
            value = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True)
        else:
            value = sys.stdin.read().rstrip("\r\n")
    scope = [] if unscoped else (list(groups) if groups else None)
    _check_env(env)
    _store().set(name, value, actor=cli_actor(), groups=scope, env=env)
    click.echo(f"secret {name} stored" + (f" (groups: {', '.join(groups)})" if groups else "")
               + (f" for environment {env}" if env else ""))


@secrets_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--env", "env", default=None, metavar="ENV",
              help="Only what a run in ENV reads (its own and every environment's).")
@handle_errors
def _list(as_json: bool, env: str | None) -> None:
    """List secret names (values are never shown)."""
    rows = _store().list(env=env)
    if as_json:
        click.echo(json.dumps({"secrets": rows}, indent=2))
        return
    for row in rows:
        scope = f"\tgroups {','.join(row['groups'])}" if row.get("groups") else ""
        where = f"\tenv {row['env']}" if row.get("env") else ""
        click.echo(f"{row['name']}\tupdated {row['updated_at']}{where}{scope}")


@secrets_cli.command("delete")
@click.argument("name")
@click.option("--env", "env", default="", metavar="ENV", help="Environment ENV's own value.")
@handle_errors
def _delete(name: str, env: str) -> None:
    """Delete the secret NAME."""
    _store().delete(name, env)
    click.echo(f"secret {name} deleted" + (f" from environment {env}" if env else ""))


def _check_env(env: str) -> None:
    """An environment's own value goes to an environment that exists."""
    if not env or Settings.from_env().service_url:  # the service checks it itself
        return
    from ..engine import Engine

    Engine(Settings.from_env()).environments.get(env)


@secrets_cli.command("keygen")
def _keygen() -> None:
    """Print a new random key for NEXUSFLOW_SECRET_KEY."""
    click.echo(generate_key())


@secrets_cli.command("rotate-key")
@click.option("--generate", is_flag=True,
              help="Make a new key, re-encrypt under it and print it (once) on stdout.")
@handle_errors
def _rotate_key(generate: bool) -> None:
    """Re-encrypt every secret, connection and webhook secret under a new key.

    The new key is the first of NEXUSFLOW_SECRET_KEY=NEW,OLD (the others decrypt), or a new
    one with --generate. One transaction: until it commits every process reads the values under
    the old key; after it, only the new key decrypts them. Then give NEXUSFLOW_SECRET_KEY=NEW
    to the service and the workers and restart them (docs/server.md, "Rotating the key").
    """
    from pathlib import Path

    from ..errors import NexusFlowError
    from ..runstate.db import get_pool
    from ..secrets import KEY_FILE_NAME, _key_bytes, _key_from_file, rotate_key
    from ..services import resolve_backends

    settings = Settings.from_env()
    if settings.service_url:
        raise NexusFlowError("rotate-key runs where the database and the key are (the "
                             "service's or a worker's environment), not through the service")
    settings = resolve_backends(settings)
    text = settings.secret_key or _key_from_file(settings.data_dir)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    new_key = generate_key() if generate else None
    if new_key is not None:
        parts.insert(0, new_key)
    elif len(parts) < 2:
        raise NexusFlowError(
            "NEXUSFLOW_SECRET_KEY holds one key: set it to NEW,OLD (the new key first, from "
            "`nexusflow secrets keygen`) or pass --generate")
    assert settings.database_url is not None
    counts = rotate_key(get_pool(settings.database_url), [_key_bytes(p) for p in parts])
    if not settings.secret_key:  # the generated key file of a single-user setup
        path = Path(settings.data_dir) / KEY_FILE_NAME
        tmp = path.with_suffix(".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(parts[0] + "\n")
        os.replace(tmp, path)
    total = sum(counts.values())
    detail = ", ".join(f"{table}: {n}" for table, n in counts.items())
    click.echo(f"re-encrypted {total} value(s) under the new key ({detail})", err=True)
    if new_key is not None:
        click.echo(new_key)
    click.echo("now give NEXUSFLOW_SECRET_KEY=<the new key> alone to the service and the "
               "workers and restart them: the old key decrypts nothing any more"
               if settings.secret_key else "the key file now holds the new key: restart the "
               "processes that use it", err=True)

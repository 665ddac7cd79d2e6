"""``nexusflow prune --older-than 30d [--dry-run]``: delete old runs, their outputs and logs."""

from __future__ import annotations

import json

import click

from .main import handle_errors


@click.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Delete runs that ended longer ago than this: 30d, 12h, 2w ...",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Runs per transaction (each batch locks only its own rows, briefly).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def prune(older_than: str, dry_run: bool, batch_size: int, as_json: bool) -> None:
    """Delete finished runs older than --older-than: their node outputs, inputs and errors,
    attempt logs, map items, child runs and event streams (workflows, versions, secrets and
    the audit log stay). Runs on the database (the service's or a worker's environment)."""
    from ..errors import NexusFlowError
    from ..retention import parse_age
    from ..retention import prune as prune_runs
    from ..runstate.db import get_pool
    from ..services import resolve_backends
    from ..settings import Settings

    age = parse_age(older_than)
    settings = Settings.from_env()
    if settings.service_url:
        raise NexusFlowError(
            "prune runs where the database is (an operator's environment), "
            "not through the service; the service prunes daily with "
            "NEXUSFLOW_RETENTION_DAYS"
        )
    settings = resolve_backends(settings)
    assert settings.database_url is not None
    redis = None
    if not dry_run and settings.redis_url:
        import redis as redis_lib

        redis = redis_lib.Redis.from_url(settings.redis_url)
    result = prune_runs(
        get_pool(settings.database_url), age, redis=redis, dry_run=dry_run, batch_size=batch_size
    )
    out = result.as_dict()
    if as_json:
        click.echo(json.dumps(out))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {out['runs']} run(s) that ended before {out['cutoff']}: "
        f"{out['node_rows']} node row(s), {out['log_rows']} log row(s)"
        + (
            ""
            if dry_run
            else f", in {out['batches']} batch(es); "
            f"{out['deliveries']} trigger deliveries, {out['firings']} schedule "
            f"firings, {out['node_tests']} node tests"
        )
    )

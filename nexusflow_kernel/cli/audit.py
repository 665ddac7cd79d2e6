"""The audit log: who created, changed, shared, ran and cancelled what, and when.

The server writes one ``nexusflow_audit_log`` row per change it makes (``workflow.create``,
``workflow.update``, ``workflow.rollback``, ``workflow.delete``, ``role.grant``,
``role.revoke``, ``run.start``, ``run.cancel``, ``run.retry``, ``run.replay``, ``secret.set``,
``secret.delete``, and the trigger changes ``webhook.*``, ``schedule.*``, ``queue.*``), with the
Jupyter (or JupyterHub) user as the actor. ``nexusflow audit`` and ``GET /nexusflow/api/audit``
(administrators only) read it back, newest first.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from ..services import resolve_backends
from ..settings import Settings


def read_audit(pool: Any, *, limit: int = 100, actor: str | None = None,
               action: str | None = None, resource: str | None = None,
               since: datetime | None = None, before: int | None = None) -> list[dict[str, Any]]:
    """Return audit entries, newest first, filtered by actor, action (``run.*`` matches a
    prefix), resource (``workflow:<id>``, ``run:<id>``, ...), time and id (``before``)."""
    where: list[str] = ["true"]
    params: list[Any] = []
    if actor is not None:
        where.append("actor = %s")
        params.append(actor)
    if action is not None:
        if action.endswith("*"):
            where.append("starts_with(action, %s)")
            params.append(action[:-1])
        else:
            where.append("action = %s")
            params.append(action)
    if resource is not None:
        where.append("resource = %s")
        params.append(resource)
    if since is not None:
        where.append("at >= %s")
        params.append(since)
    if before is not None:
        where.append("id < %s")
        params.append(before)
    params.append(limit)
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, at, actor, action, resource, detail FROM nexusflow_audit_log WHERE "
            + " AND ".join(where) + " ORDER BY id DESC LIMIT %s", params).fetchall()
        conn.commit()
    return [{**dict(r), "at": r["at"].isoformat()} for r in rows]


@click.command("audit")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="At most this many entries.")
@click.option("--actor", help="Only this user's entries (a Jupyter or JupyterHub user name).")
@click.option("--action", help="Only this action, e.g. run.start, or a prefix such as 'run.*'.")
@click.option("--resource", help="Only this resource, e.g. workflow:<id> or run:<id>.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
                                               "%Y-%m-%dT%H:%M:%S%z"]),
              help="Only entries at or after this time (local time unless an offset is given).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def audit(limit: int, actor: str | None, action: str | None, resource: str | None,
          since: datetime | None, as_json: bool) -> None:
    """Show the audit log: who created, changed, shared, ran or cancelled what, newest first.

    Reads NEXUSFLOW_DATABASE_URL (or the embedded database); whoever can reach the database
    can read it, so run it as an operator.
    """
    from ..runstate.db import get_pool

    settings = resolve_backends(Settings.from_env())
    if since is not None and since.tzinfo is None:
        since = since.astimezone()
    rows = read_audit(get_pool(settings.database_url), limit=limit,  # type: ignore[arg-type]
                      actor=actor, action=action, resource=resource, since=since)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, default=str))
            continue
        detail = " ".join(f"{k}={v}" for k, v in sorted((row["detail"] or {}).items()))
        click.echo(f"{row['at']}\t{row['actor'] or '-'}\t{row['action']}\t{row['resource']}"
                   + (f"\t{detail}" if detail else ""))


__all__ = ["audit", "read_audit"]

"""The server's PostgreSQL tables: roles, triggers, deliveries and the audit log.

Every method is one short transaction on the shared pool (blocking: call from a thread).
"""

from __future__ import annotations

import base64
import secrets as pysecrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from nexusflow_kernel.errors import NotFoundError

from .rbac import EVERYONE, highest


def _public(row: dict[str, Any], drop: Iterable[str] = ()) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in drop:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def new_id(prefix: str) -> str:
    """Return an unguessable id such as ``wh_3kX...`` (URL-safe)."""
    return f"{prefix}_{pysecrets.token_urlsafe(18)}"


def new_hmac_secret() -> str:
    """Return a Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode()


_HOOK_DROP = ("secret", "previous_secret")


class ServerStore:
    """Roles, webhooks, queue triggers, schedules, deliveries and audit rows."""

    def __init__(self, pool: Any, secret_store: Any) -> None:
        self.pool = pool
        self.secret_store = secret_store

    def _rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            rows = conn.cursor(row_factory=dict_row).execute(sql, params).fetchall()
            conn.commit()
        return rows

    def _select(self, table: str, where: str, **equal: str | None) -> list[dict[str, Any]]:
        """Return the public rows of ``table`` matching ``where`` and every non-None filter.

        ``table``, ``where`` and the filter names are this module's own literals, never input.
        """
        filters = {k: v for k, v in equal.items() if v is not None}
        sql = f"SELECT * FROM {table} WHERE {where}"
        sql += "".join(f" AND {column} = %s" for column in filters)
        return [_public(r) for r in self._rows(sql + " ORDER BY created_at",
                                               list(filters.values()))]

    def _exec(self, sql: str, params: Any = ()) -> int:
        with self.pool.connection() as conn:
            cur = conn.execute(sql, params)
            conn.commit()
        return cur.rowcount

    # ------------------------------------------------------------------ roles

    def explicit_role(self, workflow_id: str, user: str) -> str | None:
        rows = self._rows(
            "SELECT role FROM nexusflow_roles WHERE workflow_id = %s AND principal IN (%s, %s)",
            (workflow_id, user, EVERYONE),
        )
        return highest(*(r["role"] for r in rows))

    def roles_of(self, user: str) -> dict[str, str]:
        """Return ``{workflow_id: role}`` of every explicit grant that applies to ``user``."""
        out: dict[str, str] = {}
        for r in self._rows(
            "SELECT workflow_id, role FROM nexusflow_roles WHERE principal IN (%s, %s)",
            (user, EVERYONE),
        ):
            out[r["workflow_id"]] = highest(out.get(r["workflow_id"]), r["role"]) or r["role"]
        return out

    def list_roles(self, workflow_id: str) -> list[dict[str, Any]]:
        return [_public(r) for r in self._rows(
            "SELECT principal, role, granted_by, granted_at FROM nexusflow_roles"
            " WHERE workflow_id = %s ORDER BY principal", (workflow_id,))]

    def grant(self, workflow_id: str, principal: str, role: str, actor: str | None, *,
              conn: Any = None) -> None:
        """Give ``principal`` ``role`` on a workflow (in ``conn``'s transaction if given)."""
        sql = ("INSERT INTO nexusflow_roles (workflow_id, principal, role, granted_by)"
               " VALUES (%s, %s, %s, %s) ON CONFLICT (workflow_id, principal) DO UPDATE"
               " SET role = EXCLUDED.role, granted_by = EXCLUDED.granted_by, granted_at = now()")
        args = (workflow_id, principal, role, actor)
        if conn is not None:
            conn.execute(sql, args)
        else:
            self._exec(sql, args)

    def revoke(self, workflow_id: str, principal: str) -> None:
        if not self._exec(
            "DELETE FROM nexusflow_roles WHERE workflow_id = %s AND principal = %s",
            (workflow_id, principal),
        ):
            raise NotFoundError(f"{principal!r} has no role on workflow {workflow_id}")

    def ensure_owner(self, workflow_id: str, user: str) -> None:
        """Make ``user`` the owner of ``workflow_id`` if nobody has a role on it yet."""
        self._exec(
            "INSERT INTO nexusflow_roles (workflow_id, principal, role, granted_by)"
            " SELECT %s, %s, 'owner', %s WHERE NOT EXISTS"
            " (SELECT 1 FROM nexusflow_roles WHERE workflow_id = %s)"
            " ON CONFLICT DO NOTHING",
            (workflow_id, user, user, workflow_id),
        )

    def forget_workflow(self, workflow_id: str) -> None:
        """Drop the roles and triggers of a deleted workflow."""
        with self.pool.connection() as conn:
            for table in ("nexusflow_roles", "nexusflow_webhooks", "nexusflow_queue_triggers",
                          "nexusflow_schedules"):
                conn.execute(f"DELETE FROM {table} WHERE workflow_id = %s", (workflow_id,))
            conn.commit()

    # ------------------------------------------------------------------ webhooks

    def create_webhook(self, workflow_id: str, *, version: int | None, auth: str,
                       env: str | None = None,
                       key: str | None, jwt_algorithm: str | None, jwt_audience: str | None,
                       jwt_issuer: str | None, content_types: list[str], max_body_bytes: int,
                       rate_limit: int, rate_window_s: int, wait_s: float,
                       actor: str | None) -> dict[str, Any]:
        """Create a webhook; the answer holds its secret, the only time it is shown."""
        hook_id = new_id("wh")
        secret = key if key is not None else new_hmac_secret()
        sealed = self.secret_store.cipher.encrypt(secret, f"webhook:{hook_id}")
        self._exec(
            "INSERT INTO nexusflow_webhooks (hook_id, workflow_id, version, auth, secret,"
            " jwt_algorithm, jwt_audience, jwt_issuer, content_types, max_body_bytes,"
            " rate_limit, rate_window_s, wait_s, created_by, env)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (hook_id, workflow_id, version, auth, sealed, jwt_algorithm, jwt_audience,
             jwt_issuer, content_types, max_body_bytes, rate_limit, rate_window_s, wait_s, actor,
             env),
        )
        hook = self.webhook(hook_id, with_secrets=False)
        if auth == "hmac" or key is None:
            hook["secret"] = secret
        return hook

    def webhook(self, hook_id: str, *, with_secrets: bool = True) -> dict[str, Any]:
        """Return a webhook; with ``with_secrets`` also ``secrets`` (current first, decrypted)."""
        rows = self._rows("SELECT * FROM nexusflow_webhooks WHERE hook_id = %s", (hook_id,))
        if not rows:
            raise NotFoundError(f"no webhook {hook_id!r}")
        row = rows[0]
        out = _public(row, _HOOK_DROP)
        if with_secrets:
            cipher, label = self.secret_store.cipher, f"webhook:{hook_id}"
            out["secrets"] = [cipher.decrypt(row["secret"], label)]
            if row["previous_secret"] is not None:
                out["secrets"].append(cipher.decrypt(row["previous_secret"], label))
        return out

    def list_webhooks(self, workflow_id: str) -> list[dict[str, Any]]:
        return [_public(r, _HOOK_DROP) for r in self._rows(
            "SELECT * FROM nexusflow_webhooks WHERE workflow_id = %s ORDER BY created_at",
            (workflow_id,))]

    def rotate_webhook(self, hook_id: str, key: str | None = None) -> dict[str, Any]:
        """Give a webhook a new secret; the old one stays valid until the next rotation."""
        hook = self.webhook(hook_id, with_secrets=False)
        secret = key if key is not None else new_hmac_secret()
        sealed = self.secret_store.cipher.encrypt(secret, f"webhook:{hook_id}")
        self._exec(
            "UPDATE nexusflow_webhooks SET previous_secret = secret, secret = %s"
            " WHERE hook_id = %s", (sealed, hook_id))
        hook["secret"] = secret
        return hook

    def delete_trigger(self, table: str, key: str, value: str) -> None:
        if not self._exec(f"DELETE FROM {table} WHERE {key} = %s", (value,)):
            raise NotFoundError(f"no trigger {value!r}")

    def trigger_workflow(self, table: str, key: str, value: str) -> str:
        rows = self._rows(f"SELECT workflow_id FROM {table} WHERE {key} = %s", (value,))
        if not rows:
            raise NotFoundError(f"no trigger {value!r}")
        return rows[0]["workflow_id"]

    # ------------------------------------------------------------------ deliveries

    def claim_delivery(self, trigger_id: str, delivery_id: str) -> tuple[bool, str | None]:
        """Record a delivery; return ``(new, run_id)`` — ``new`` is False for a replay."""
        with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            row = cur.execute(
                "INSERT INTO nexusflow_trigger_deliveries (trigger_id, delivery_id)"
                " VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING run_id",
                (trigger_id, delivery_id)).fetchone()
            if row is None:
                row = cur.execute(
                    "SELECT run_id FROM nexusflow_trigger_deliveries"
                    " WHERE trigger_id = %s AND delivery_id = %s",
                    (trigger_id, delivery_id)).fetchone()
                conn.commit()
                return False, row["run_id"] if row else None
            conn.commit()
            return True, None

    def set_delivery_run(self, trigger_id: str, delivery_id: str, run_id: str) -> None:
        self._exec(
            "UPDATE nexusflow_trigger_deliveries SET run_id = %s"
            " WHERE trigger_id = %s AND delivery_id = %s", (run_id, trigger_id, delivery_id))

    def release_delivery(self, trigger_id: str, delivery_id: str) -> None:
        """Forget a delivery whose run could not start, so that a retry is not a replay."""
        self._exec(
            "DELETE FROM nexusflow_trigger_deliveries"
            " WHERE trigger_id = %s AND delivery_id = %s AND run_id IS NULL",
            (trigger_id, delivery_id))

    # ------------------------------------------------------------------ queue triggers

    def create_queue_trigger(self, workflow_id: str, *, version: int | None, stream: str,
                             group: str, actor: str | None,
                             env: str | None = None) -> dict[str, Any]:
        trigger_id = new_id("qt")
        self._exec(
            "INSERT INTO nexusflow_queue_triggers (trigger_id, workflow_id, version, stream,"
            " consumer_group, created_by, env) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (trigger_id, workflow_id, version, stream, group, actor, env))
        return self.queue_triggers(trigger_id=trigger_id)[0]

    def queue_triggers(self, *, workflow_id: str | None = None,
                       trigger_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("nexusflow_queue_triggers", "enabled",
                            workflow_id=workflow_id, trigger_id=trigger_id)

    # ------------------------------------------------------------------ schedules

    def create_schedule(self, workflow_id: str, *, version: int | None, cron: str,
                        timezone: str, inputs: dict[str, Any], next_fire_at: datetime,
                        actor: str | None, misfire: str = "skip",
                        catch_up_limit: int = 10, env: str | None = None) -> dict[str, Any]:
        schedule_id = new_id("sc")
        self._exec(
            "INSERT INTO nexusflow_schedules (schedule_id, workflow_id, version, cron, timezone,"
            " inputs, next_fire_at, created_by, misfire, catch_up_limit, env)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (schedule_id, workflow_id, version, cron, timezone, Jsonb(inputs), next_fire_at,
             actor, misfire, catch_up_limit, env))
        return self.schedules(schedule_id=schedule_id)[0]

    def schedules(self, *, workflow_id: str | None = None,
                  schedule_id: str | None = None) -> list[dict[str, Any]]:
        return self._select("nexusflow_schedules", "true",
                            workflow_id=workflow_id, schedule_id=schedule_id)

    def firings(self, schedule_id: str) -> list[dict[str, Any]]:
        return [_public(r) for r in self._rows(
            "SELECT * FROM nexusflow_schedule_firings WHERE schedule_id = %s ORDER BY fire_at",
            (schedule_id,))]

    # ------------------------------------------------------------------ audit

    def audit(self, actor: str | None, action: str, resource: str,
              detail: dict[str, Any] | None = None) -> None:
        self._exec(
            "INSERT INTO nexusflow_audit_log (actor, action, resource, detail)"
            " VALUES (%s, %s, %s, %s)", (actor, action, resource, Jsonb(detail or {})))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [_public(r) for r in self._rows(
            "SELECT * FROM nexusflow_audit_log ORDER BY id DESC LIMIT %s", (limit,))]

"""JupyterHub identity: the Hub user, their groups, and ``custom:nexusflow:*`` scopes.

On a JupyterHub single-user server, Jupyter's ``current_user`` is the Hub's user model
(``JupyterHubUser.hub_user``: ``name``, ``groups``, and the ``scopes`` of the token or OAuth
session the request came with). Nexus-Flow turns it into an :class:`Identity`:

* **principals**: the user name, ``*`` (everyone) and ``group:<name>`` for each Hub group; a role
  granted to any of them on a workflow applies (the highest wins);
* **scope role**: the highest of the custom scopes ``custom:nexusflow:viewer|runner|editor|owner``
  the request holds: that role on *every* workflow (scopes with a ``!filter`` are ignored);
* **admin**: ``custom:nexusflow:admin`` (owner of every workflow, reads the audit log) or a Hub
  admin whose model says so.

Outside a Hub the identity is the plain Jupyter user name with no groups and no scopes.
The groups are also written to ``nexusflow_principals`` before a run starts, so that a worker
can check a group-scoped secret against the run's user (see ``nexusflow_kernel.secrets``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .rbac import EVERYONE, ROLES, highest

SCOPE_PREFIX = "custom:nexusflow:"
GROUP_PREFIX = "group:"
ADMIN_SCOPE = SCOPE_PREFIX + "admin"

CUSTOM_SCOPES: dict[str, dict[str, Any]] = {
    SCOPE_PREFIX + "viewer": {
        "description": "See every Nexus-Flow workflow, its versions and runs.",
    },
    SCOPE_PREFIX + "runner": {
        "description": "Start, cancel and retry runs of every Nexus-Flow workflow.",
        "subscopes": [SCOPE_PREFIX + "viewer"],
    },
    SCOPE_PREFIX + "editor": {
        "description": "Change every Nexus-Flow workflow and its triggers.",
        "subscopes": [SCOPE_PREFIX + "runner"],
    },
    SCOPE_PREFIX + "owner": {
        "description": "Delete and share every Nexus-Flow workflow.",
        "subscopes": [SCOPE_PREFIX + "editor"],
    },
    ADMIN_SCOPE: {
        "description": "Nexus-Flow administrator: owner of every workflow, reads the audit log.",
        "subscopes": [SCOPE_PREFIX + "owner"],
    },
}
"""The value for ``c.JupyterHub.custom_scopes`` (JupyterHub 3+); each includes the ones below."""


@dataclass(frozen=True)
class Identity:
    """Who makes a request: a name, Hub groups, and Nexus-Flow's custom scopes."""

    name: str
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = field(default_factory=frozenset)
    hub: bool = False
    hub_admin: bool = False

    @property
    def principals(self) -> tuple[str, ...]:
        """Return the principals whose role grants apply: the user, ``*``, their groups."""
        return (self.name, EVERYONE, *(GROUP_PREFIX + g for g in self.groups))

    @property
    def scope_role(self) -> str | None:
        """Return the highest role granted on every workflow by an unfiltered custom scope."""
        if self.admin_scope:
            return "owner"
        return highest(*(s[len(SCOPE_PREFIX):] for s in self.scopes
                         if s.startswith(SCOPE_PREFIX) and s[len(SCOPE_PREFIX):] in ROLES))

    @property
    def admin_scope(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    @property
    def admin(self) -> bool:
        """Whether the Hub makes this user a Nexus-Flow administrator."""
        return self.admin_scope or self.hub_admin


def identity_of(user: Any) -> Identity:
    """Return the :class:`Identity` of a Jupyter ``current_user`` (Hub user or plain user)."""
    model = getattr(user, "hub_user", None)
    if isinstance(model, dict) and model.get("name"):
        groups = tuple(sorted(str(g) for g in model.get("groups") or ()))
        scopes = frozenset(str(s) for s in model.get("scopes") or ())
        return Identity(str(model["name"]), groups, scopes, hub=True,
                        hub_admin=model.get("admin") is True)
    name = getattr(user, "username", None) or str(user or "anonymous")
    return Identity(name)


# ---------------------------------------------------------------------------- role lookups


def explicit_role(pool: Any, workflow_id: str, principals: Iterable[str]) -> str | None:
    """Return the highest role granted on ``workflow_id`` to any of ``principals``."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT role FROM nexusflow_roles WHERE workflow_id = %s AND principal = ANY(%s)",
            (workflow_id, list(principals))).fetchall()
        conn.commit()
    return highest(*(r["role"] for r in rows))


def workflow_role(source: Any, workflow_id: str,
                  principals: Iterable[str]) -> tuple[bool, str | None]:
    """Return ``(live, highest role granted to any of principals)`` on ``workflow_id``.

    ``live`` is False for a deleted or unknown workflow. ``source`` is a pool or, to read
    inside a transaction, a connection.
    """
    sql = ("SELECT (SELECT deleted_at IS NULL FROM workflows WHERE id = %s::uuid) AS live,"
           " ARRAY(SELECT role FROM nexusflow_roles WHERE workflow_id = %s"
           " AND principal = ANY(%s)) AS roles")
    args = (workflow_id, workflow_id, list(principals))
    import psycopg

    if not isinstance(source, psycopg.Connection):  # a pool
        with source.connection() as conn:
            row = conn.execute(sql, args).fetchone()
            conn.commit()
    else:
        row = source.execute(sql, args).fetchone()
    return bool(row["live"]), highest(*row["roles"])


def roles_of(pool: Any, principals: Iterable[str]) -> dict[str, str]:
    """Return ``{workflow_id: highest role}`` over every grant to any of ``principals``."""
    out: dict[str, str] = {}
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT workflow_id, role FROM nexusflow_roles WHERE principal = ANY(%s)",
            (list(principals),)).fetchall()
        conn.commit()
    for r in rows:
        wid, role = str(r["workflow_id"]), r["role"]
        out[wid] = highest(out.get(wid), role) or role
    return out


# ---------------------------------------------------------------------------- principals


def record_principal(pool: Any, identity: Identity) -> None:
    """Write the user's current groups to ``nexusflow_principals`` (one upsert)."""
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO nexusflow_principals (name, groups, source) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET groups = EXCLUDED.groups,"
            " source = EXCLUDED.source, updated_at = now()",
            (identity.name, list(identity.groups), "hub" if identity.hub else "local"))
        conn.commit()


__all__ = [
    "ADMIN_SCOPE",
    "CUSTOM_SCOPES",
    "GROUP_PREFIX",
    "SCOPE_PREFIX",
    "Identity",
    "explicit_role",
    "identity_of",
    "record_principal",
    "roles_of",
    "workflow_role",
]

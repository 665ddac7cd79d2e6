"""Roles per workflow: viewer < runner < editor < owner, kept in PostgreSQL.

Jupyter's authorizer decides whether a user may use a kind of resource at all
(``nexusflow:workflows``, ``nexusflow:runs`` ...); these roles decide what they may do with one
workflow and its runs. A user's role on a workflow is the highest of: their own grant, the grant
to ``*`` (everyone), ``NexusFlow.default_role``, and ``owner`` for ``NexusFlow.admin_users``.
Whoever creates a workflow (or first runs a file) becomes its owner.
"""

from __future__ import annotations

ROLES = ("viewer", "runner", "editor", "owner")
"""Roles from least to most; each includes the ones before it."""

EVERYONE = "*"

ACTIONS = {
    "read": "viewer",      # see the workflow, its versions, runs, logs, outputs, events
    "run": "runner",       # start, cancel, retry, replay runs
    "edit": "editor",      # save versions, roll back, manage triggers
    "admin": "owner",      # delete, grant roles
}


def rank(role: str | None) -> int:
    """Return the rank of ``role`` (0 for none)."""
    return ROLES.index(role) + 1 if role in ROLES else 0


def highest(*roles: str | None) -> str | None:
    """Return the highest of ``roles`` (``None`` when none is a role)."""
    best = max(roles, key=rank, default=None)
    return best if rank(best) else None


def allows(role: str | None, action: str) -> bool:
    """Return whether ``role`` may do ``action`` (a key of ``ACTIONS``)."""
    return rank(role) >= rank(ACTIONS[action])


__all__ = ["ACTIONS", "EVERYONE", "ROLES", "allows", "highest", "rank"]

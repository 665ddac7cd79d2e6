"""API tokens of a Nexus-Flow service run without a JupyterHub (``--auth token``).

A token names a user, their groups and whether they administer Nexus-Flow: the same identity
a Hub user has (``hub.Identity``), so roles, group grants and group-scoped secrets work the
same way. Only the SHA-256 of a token is kept (tokens are 256 random bits, so a plain hash is
enough); the token itself is shown once, when it is made. A token may expire.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from nexusflow_kernel.errors import NexusFlowError, NotFoundError
from nexusflow_kernel.secrets import check_group

TOKEN_PREFIX = "nfs_"

CACHE_S = 10.0
"""How long an identified token is remembered: a revoked token works at most this long."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse_duration(text: str) -> timedelta:
    """Return ``30d``, ``12h``, ``15m`` or ``90s`` as a ``timedelta``."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1, "w": 7 * 86400}
    raw = (text or "").strip().lower()
    if len(raw) < 2 or raw[-1] not in units or not raw[:-1].isdigit():
        raise NexusFlowError(f"{text!r} is not a duration: write a number and d, h, m, s or w "
                             "(30d, 12h)")
    return timedelta(seconds=int(raw[:-1]) * units[raw[-1]])


class ApiTokens:
    """Make, identify, list and revoke service tokens (blocking: call from a thread)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def create(self, user: str, *, groups: list[str] | None = None, admin: bool = False,
               expires_in: timedelta | None = None, note: str | None = None,
               actor: str | None = None) -> dict[str, Any]:
        """Make a token for ``user``; the answer holds it (the only time it is shown)."""
        if not user or len(user) > 256 or "\x00" in user:
            raise NexusFlowError("a token's user must be a name of 1 to 256 characters")
        scope = sorted({check_group(g) for g in groups or ()})
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = "tk_" + secrets.token_urlsafe(9)
        expires = datetime.now(UTC) + expires_in if expires_in is not None else None
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO nexusflow_api_tokens (token_id, token_hash, user_name, groups,"
                " admin, note, created_by, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (token_id, _digest(token), user, scope, admin, note, actor, expires))
            conn.commit()
        return {"token_id": token_id, "token": token, "user": user, "groups": scope,
                "admin": admin, "expires_at": expires.isoformat() if expires else None}

    def identify(self, token: str) -> dict[str, Any] | None:
        """Return the user model a token stands for, or ``None`` (unknown, revoked, expired).

        The model has the shape of a JupyterHub user model (``name``, ``groups``,
        ``scopes``), so ``hub.identity_of`` reads both alike.
        """
        key = _digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            model = hit[1]
        else:
            with self.pool.connection() as conn:
                row = conn.cursor(row_factory=dict_row).execute(
                    "SELECT token_id, user_name, groups, admin, expires_at"
                    " FROM nexusflow_api_tokens WHERE token_hash = %s", (key,)).fetchone()
                conn.commit()
            model = None
            if row is not None:
                model = {"kind": "user", "name": row["user_name"],
                         "groups": list(row["groups"] or ()),
                         "scopes": ["custom:nexusflow:admin"] if row["admin"] else [],
                         "token_id": row["token_id"], "expires_at": row["expires_at"]}
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now + CACHE_S, model)
        if model is None:
            return None
        expires = model.get("expires_at")
        if expires is not None and expires <= datetime.now(UTC):
            return None
        return {k: v for k, v in model.items() if k != "expires_at"}

    def list(self) -> list[dict[str, Any]]:
        """Return every token's id, user, groups, admin flag and dates (never a token)."""
        with self.pool.connection() as conn:
            rows = conn.cursor(row_factory=dict_row).execute(
                "SELECT token_id, user_name AS user, groups, admin, note, created_at,"
                " created_by, expires_at FROM nexusflow_api_tokens ORDER BY created_at"
            ).fetchall()
            conn.commit()
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
                for r in rows]

    def revoke(self, token_id: str) -> None:
        """Delete a token by its id; raise ``NotFoundError`` if there is none."""
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM nexusflow_api_tokens WHERE token_id = %s",
                               (token_id,))
            conn.commit()
        if cur.rowcount == 0:
            raise NotFoundError(f"no token {token_id!r}")
        with self._lock:
            self._cache.clear()


__all__ = ["TOKEN_PREFIX", "ApiTokens", "parse_duration"]

"""Secrets: stored encrypted in PostgreSQL, resolved by name in the worker, masked everywhere.

Masking (one path for all a run records) is in ``masking.py``; ``mask`` and ``mask_value`` are
re-exported here.

A flow never holds a secret value; a config value names one (``{"$secret": "NAME"}``) and the
worker resolves it with :meth:`SecretStore.get` right before the node runs. Values are
encrypted with AES-256-GCM, the secret's name bound in as associated data (a ciphertext copied
onto another name does not decrypt). The key comes from ``Settings.secret_key``
(``NEXUSFLOW_SECRET_KEY``): a urlsafe-base64 32-byte key (``nexusflow secrets keygen``) or any
passphrase (stretched with scrypt). Several keys separated by commas allow a rotation: the
first encrypts, all decrypt. With no key configured, one is generated into
``<data_dir>/secret.key`` (mode 0600) and a warning says so: every process that shares the data
folder finds it; workers elsewhere need ``NEXUSFLOW_SECRET_KEY``.

Every column of ciphertexts made with this cipher is listed in ``ENCRYPTED_COLUMNS`` (a
plug-in's table joins with ``register_encrypted``), and ``rotate_key`` re-encrypts all of them
under the first key in one transaction (``nexusflow secrets rotate-key``).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NexusFlowError, NodeExecutionError, NotFoundError
from .masking import MASK, MIN_MASKED_LENGTH, mask, mask_value
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from .runstate.db import Pool

logger = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"
"""File in the data folder that holds the generated key when none is configured."""

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_FORMAT = b"\x01"  # ciphertext layout: format byte, 4-byte key id, 12-byte nonce, GCM output
_SCRYPT_SALT = b"nexusflow-secrets-v1"


ENV_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
"""Environment names (``dev``, ``prod``, ``staging-eu``); ``''`` stands for every environment."""


def check_env(env: str) -> str:
    """Return ``env`` if it is a valid environment name or ``''``, else raise."""
    if env == "" or (isinstance(env, str) and ENV_PATTERN.match(env)):
        return env
    raise NexusFlowError(
        f"environment name {env!r} is invalid: lower-case letters, digits, '_' and '-', "
        "starting with a letter, at most 63")


def secret_associated(env: str, name: str) -> str:
    """Return the associated data a secret's ciphertext is bound to (its name, and its
    environment's when it has one: a ciphertext copied onto another name or environment does
    not decrypt)."""
    return f"{env}:{name}" if env else name


def connection_associated(env: str, name: str) -> str:
    """Return the associated data a connection's ciphertext is bound to."""
    return f"connection:{env}:{name}"


@dataclass(frozen=True)
class EncryptedColumn:
    """A column of ciphertexts under the secrets key, for whoever re-encrypts them all
    (``nexusflow secrets rotate-key``): ``SELECT <key columns>, <column> FROM <table>``, decrypt
    each with ``associated(*key values)``, encrypt again with the same associated data."""

    table: str
    key: tuple[str, ...]
    column: str
    associated: Callable[..., str]


ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("nexusflow_secrets", ("env", "name"), "ciphertext", secret_associated),
    EncryptedColumn("nexusflow_connections", ("env", "name"), "ciphertext",
                    connection_associated),
    EncryptedColumn("nexusflow_webhooks", ("hook_id",), "secret",
                    lambda hook_id: f"webhook:{hook_id}"),
    EncryptedColumn("nexusflow_webhooks", ("hook_id",), "previous_secret",
                    lambda hook_id: f"webhook:{hook_id}"),
)
"""Every ciphertext column Nexus-Flow keeps (a NULL value is skipped)."""


Authorize = Callable[[dict[str, Any] | None], None]
"""Who-may-change rule given to :meth:`SecretStore.set` and :meth:`SecretStore.delete`: called
with the secret as it stands, locked (``None``: there is none); it raises to refuse."""


OWNED_TABLES = {"secret": "nexusflow_secrets", "connection": "nexusflow_connections"}
"""The tables of named, scoped, owned credentials (``name``, ``env``, ``created_by``,
``scope_groups``) that ``write_owned`` and ``delete_owned`` change under ``Authorize``."""


def _locked_owned(cur: Any, what: str, name: str, env: str) -> dict[str, Any] | None:
    """Return the ``what`` (a key of ``OWNED_TABLES``) ``name`` of ``env`` (creator and
    groups), locked until the transaction ends, or ``None``."""
    from psycopg import sql

    row = cur.execute(sql.SQL(
        "SELECT created_by, scope_groups FROM {} WHERE env = %s AND name = %s FOR UPDATE"
    ).format(sql.Identifier(OWNED_TABLES[what])), (env, name)).fetchone()
    if row is None:
        return None
    return {"name": name, "env": env, "created_by": row[0], "groups": list(row[1] or [])}


def write_owned(pool: Any, what: str, name: str, env: str, authorize: Authorize | None,
                update: tuple[str, tuple[Any, ...]], insert: tuple[str, tuple[Any, ...]]) -> None:
    """Replace (``update``) or create (``insert``, ``ON CONFLICT DO NOTHING``) the ``what``
    ``name`` of ``env`` in one transaction, ``authorize`` called with it as it stands, its row
    locked: what the rule allowed is what gets replaced, and one created meanwhile by another
    request (the insert conflicting) is checked in turn. A refusal leaves everything as it was."""
    from psycopg.rows import tuple_row

    with pool.connection() as conn:
        try:
            cur = conn.cursor(row_factory=tuple_row)
            for _ in range(20):
                current = _locked_owned(cur, what, name, env)
                if authorize is not None:
                    authorize(current)
                if current is not None:
                    cur.execute(*update)
                    break
                cur.execute(*insert)
                if cur.rowcount == 1:
                    break
                # created by another request since the lock found none: check that one
            else:  # pragma: no cover - twenty creations and deletions in between
                raise NexusFlowError(f"{what} {name!r} keeps changing: try again")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def delete_owned(pool: Any, what: str, name: str, env: str,
                 authorize: Authorize | None) -> None:
    """Delete the ``what`` ``name`` of ``env`` once ``authorize`` allowed it as it stands,
    locked; ``NotFoundError`` when there is none."""
    from psycopg import sql
    from psycopg.rows import tuple_row

    with pool.connection() as conn:
        try:
            cur = conn.cursor(row_factory=tuple_row)
            current = _locked_owned(cur, what, name, env)
            if current is None:
                where = f" in environment {env!r}" if env else ""
                raise NotFoundError(f"no {what} named {name!r}{where}")
            if authorize is not None:
                authorize(current)
            cur.execute(sql.SQL("DELETE FROM {} WHERE name = %s AND env = %s").format(
                sql.Identifier(OWNED_TABLES[what])), (name, env))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


class SecretKeyError(NexusFlowError):
    """The secret key is missing, malformed, or does not decrypt a stored value."""


def generate_key() -> str:
    """Return a new random key (urlsafe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _key_bytes(text: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text.encode())
        if len(raw) == 32 and len(text) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    if len(text) < 12:
        raise SecretKeyError(
            "NEXUSFLOW_SECRET_KEY is too short: use `nexusflow secrets keygen` or a passphrase "
            "of at least 12 characters"
        )
    return hashlib.scrypt(text.encode(), salt=_SCRYPT_SALT, n=2**14, r=8, p=1, dklen=32)


def _key_from_file(data_dir: Path) -> str:
    path = Path(data_dir) / KEY_FILE_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race; use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    logger.warning(
        "no NEXUSFLOW_SECRET_KEY is configured: generated a secrets key in %s (mode 0600); "
        "back it up, and give it to workers on other machines as NEXUSFLOW_SECRET_KEY",
        path,
    )
    return key


def load_keys(secret_key: str | None, data_dir: Path) -> list[bytes]:
    """Return the AES keys from ``secret_key`` (comma-separated, first encrypts) or the key file."""
    text = secret_key if secret_key else _key_from_file(data_dir)
    keys = [_key_bytes(part) for part in text.split(",") if part.strip()]
    if not keys:
        raise SecretKeyError("NEXUSFLOW_SECRET_KEY is empty")
    return keys


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"nexusflow-key-id" + key).digest()[:4]


class Cipher:
    """AES-256-GCM with key rotation; the associated data binds a ciphertext to its name."""

    def __init__(self, keys: list[bytes]) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = [(_key_id(k), AESGCM(k)) for k in keys]

    def encrypt(self, plaintext: str, associated: str) -> bytes:
        key_id, aead = self._aead[0]
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, plaintext.encode(), associated.encode())
        return _FORMAT + key_id + nonce + sealed

    def decrypt(self, blob: bytes, associated: str) -> str:
        from cryptography.exceptions import InvalidTag

        blob = bytes(blob)
        if blob[:1] != _FORMAT:
            raise SecretKeyError(f"stored value of {associated!r} has an unknown format")
        key_id, nonce, sealed = blob[1:5], blob[5:17], blob[17:]
        for kid, aead in self._aead:
            if kid != key_id:
                continue
            try:
                return aead.decrypt(nonce, sealed, associated.encode()).decode()
            except InvalidTag:
                break
        raise SecretKeyError(
            f"secret {associated!r} cannot be decrypted with the configured NEXUSFLOW_SECRET_KEY"
        )


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name, else raise ``NexusFlowError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise NexusFlowError(
            f"secret name {name!r} is invalid: use letters, digits, '_', '.', '-' "
            "(at most 128, not starting with a digit)"
        )
    return name


GROUP_PATTERN = re.compile(r"^[^\x00-\x1f,]{1,255}$")


def check_group(group: str) -> str:
    """Return ``group`` if it is a valid Hub group name, else raise ``NexusFlowError``."""
    if not isinstance(group, str) or not GROUP_PATTERN.match(group):
        raise NexusFlowError(f"group name {group!r} is invalid (1 to 255 characters, no commas)")
    return group


class SecretScopeError(NodeExecutionError):
    """A group-scoped secret was asked for by a run whose user is in none of its groups."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def current_run_id() -> str | None:
    """Return the run of the RQ job this worker is running (``None`` outside a job)."""
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:  # pragma: no cover - rq missing or no connection
        return None
    if job is None or not str(job.func_name or "").startswith("nexusflow_worker.jobs."):
        return None
    try:
        run_id = job.args[0]
    except Exception:  # no args, or args that do not load
        return None
    return str(run_id) if isinstance(run_id, str) else None


class SecretStore:
    """Encrypted secrets in PostgreSQL: write-only through the API, readable by the worker.

    ``source`` is a ``Settings`` (its database is opened through the shared pool) or a psycopg
    ``ConnectionPool`` on an already migrated database (the key then comes from ``settings``,
    or from the environment when ``settings`` is ``None``).
    """

    def __init__(self, source: Settings | Pool, *, settings: Settings | None = None):
        from .runstate.db import get_pool

        if isinstance(source, Settings):
            settings = source
            from .services import resolve_backends

            url = source.database_url or resolve_backends(source).database_url
            assert url is not None
            self._pool = get_pool(url)
        else:
            self._pool = source
        self._settings = settings or Settings.from_env()
        self._cipher: Cipher | None = None

    @property
    def cipher(self) -> Cipher:
        """Return the cipher (the key is loaded, or generated, on first use)."""
        if self._cipher is None:
            self._cipher = Cipher(load_keys(self._settings.secret_key, self._settings.data_dir))
        return self._cipher

    def set(self, name: str, value: str, *, actor: str | None = None,
            groups: Iterable[str] | None = None, env: str = "",
            authorize: Authorize | None = None) -> None:
        """Store ``value`` under ``name`` (encrypted), replacing any earlier value.

        ``groups`` scopes the secret to those Hub groups (``[]``: unscoped); ``None`` keeps
        the scope an existing secret has (a new one is unscoped). ``env``: the environment
        whose value this is (``''``: the value of every environment without its own).
        ``actor`` is recorded as ``updated_by``, and as ``created_by`` (the secret's owner)
        when the secret is new; a replacement keeps the creator.

        ``authorize`` (the service's rule of who may change what) is called with the
        secret as it stands (``{"name", "env", "created_by", "groups"}``, ``None`` when there
        is none) in the transaction that writes, the row locked: what it allowed is what gets
        replaced (a secret created meanwhile by someone else is checked in turn). Whatever it
        raises leaves everything as it was.
        """
        check_name(name)
        check_env(env)
        if not isinstance(value, str):
            raise NexusFlowError(f"the value of secret {name!r} must be a string")
        scope = None if groups is None else sorted({check_group(g) for g in groups})
        blob = self.cipher.encrypt(value, secret_associated(env, name))
        write_owned(
            self._pool, "secret", name, env, authorize,
            update=("UPDATE nexusflow_secrets SET ciphertext = %s, updated_at = now(),"
                    " updated_by = %s, scope_groups = COALESCE(%s::text[], scope_groups)"
                    " WHERE env = %s AND name = %s", (blob, actor, scope, env, name)),
            insert=("INSERT INTO nexusflow_secrets (env, name, ciphertext, created_by,"
                    " updated_by, scope_groups)"
                    " VALUES (%s, %s, %s, %s, %s, COALESCE(%s::text[], '{}'))"
                    " ON CONFLICT (env, name) DO NOTHING",
                    (env, name, blob, actor, actor, scope)))

    def list(self, *, usable_by: Iterable[str] | None = None,
             env: str | None = None) -> list[dict[str, Any]]:
        """Return secrets' names, environments, scopes and timestamps (never a value), sorted
        by name then environment.

        With ``usable_by`` (a user's groups), only the secrets a run of that user may read:
        the unscoped ones and those scoped to one of the groups. ``None``: every secret.
        ``env``: only that environment's values and the ones of every environment (``''``).
        """
        from psycopg.rows import dict_row

        sql = ("SELECT name, env, created_at, created_by, updated_at, updated_by,"
               " scope_groups AS groups FROM nexusflow_secrets WHERE true")
        args: builtins.list[Any] = []
        if usable_by is not None:
            sql += " AND (scope_groups = '{}' OR scope_groups && %s::text[])"
            args.append(sorted(set(usable_by)))
        if env is not None:
            sql += " AND env IN ('', %s)"
            args.append(env)
        with self._pool.connection() as conn:
            rows = conn.cursor(row_factory=dict_row).execute(sql + " ORDER BY name, env",
                                                             args).fetchall()
            conn.commit()
        return [_row_dict(r) for r in rows]

    def groups_of(self, name: str, env: str = "") -> builtins.list[str] | None:
        """Return the scope groups of secret ``name`` (``[]``: unscoped; ``None``: no secret)."""
        from psycopg.rows import tuple_row

        with self._pool.connection() as conn:
            row = conn.cursor(row_factory=tuple_row).execute(
                "SELECT scope_groups FROM nexusflow_secrets WHERE name = %s AND env = %s",
                (name, env)).fetchone()
            conn.commit()
        return None if row is None else list(row[0] or [])

    def delete(self, name: str, env: str = "", *, authorize: Authorize | None = None) -> None:
        """Delete the secret ``name`` (of ``env``); raise ``NotFoundError`` if there is none.
        ``authorize`` as for :meth:`set`, called with the locked secret before it goes."""
        delete_owned(self._pool, "secret", name, env, authorize)

    def get(self, name: str, *, run_id: str | None = None, env: str | None = None,
            principal: str | None = None) -> str:
        """Return the decrypted value of ``name``; raise ``NotFoundError`` if there is none.

        The value is the environment's own (``env``, by default the environment of the run)
        or else the one of every environment. A group-scoped secret is returned only to a run
        whose user (``created_by``) is in one of its groups, as last recorded from the Hub in
        ``nexusflow_principals``; the run is ``run_id`` or, in a worker, the run of the
        current RQ job. Otherwise (no run, a user outside the groups, a trigger-started run)
        ``SecretScopeError`` is raised. With ``principal`` (a one-node test, which has no run),
        the scope is checked against that user as it would be against a run of theirs.
        """
        from psycopg.rows import tuple_row

        if principal is None:
            run_id = run_id or current_run_id()
        if env is None:
            env = self.run_env(run_id)
        with self._pool.connection() as conn:
            row = conn.cursor(row_factory=tuple_row).execute(
                "SELECT ciphertext, scope_groups, env FROM nexusflow_secrets"
                " WHERE name = %s AND env IN ('', %s) ORDER BY env DESC LIMIT 1", (name, env)
            ).fetchone()
            conn.commit()
        if row is None:
            where = f" (in environment {env!r} or for every environment)" if env else ""
            raise NotFoundError(f"no secret named {name!r}{where} (set it with `nexusflow "
                                "secrets set`)")
        if row[1]:
            self._check_scope(name, list(row[1]), run_id, principal=principal)
        return self.cipher.decrypt(row[0], secret_associated(row[2], name))

    def run_env(self, run_id: str | None) -> str:
        """Return the environment run ``run_id`` runs in (``''`` with no run)."""
        if not run_id:
            return ""
        from psycopg.rows import tuple_row

        with self._pool.connection() as conn:
            row = conn.cursor(row_factory=tuple_row).execute(
                "SELECT env FROM executions WHERE id = %s", (run_id,)).fetchone()
            conn.commit()
        return str(row[0]) if row else ""

    def _check_scope(self, name: str, groups: Iterable[str], run_id: str | None,
                     what: str = "secret", *, principal: str | None = None) -> None:
        """Raise ``SecretScopeError`` unless the run's user (or ``principal``, for a test) is
        in one of ``groups``."""
        from psycopg.rows import tuple_row

        need = ", ".join(groups)
        if principal is not None:
            with self._pool.connection() as conn:
                found = conn.cursor(row_factory=tuple_row).execute(
                    "SELECT groups FROM nexusflow_principals WHERE name = %s", (principal,)
                ).fetchone()
                conn.commit()
            if not set(groups) & set(found[0] or () if found else ()):
                who = (f"the test's user {principal!r} is" if principal
                       else "a test without a user is")
                raise SecretScopeError(
                    f"{what} {name!r} is scoped to group(s) {need}; {who} not in any of them")
            return
        if run_id is None:
            raise SecretScopeError(
                f"{what} {name!r} is scoped to group(s) {need}: only a run may read it")
        with self._pool.connection() as conn:
            row = conn.cursor(row_factory=tuple_row).execute(
                "SELECT e.created_by, p.groups FROM executions e LEFT JOIN nexusflow_principals p"
                " ON p.name = e.created_by WHERE e.id = %s", (run_id,)
            ).fetchone()
            conn.commit()
        user, user_groups = (row[0], list(row[1] or ())) if row else (None, [])
        if not set(groups) & set(user_groups):
            raise SecretScopeError(
                f"{what} {name!r} is scoped to group(s) {need}; the run's user {user!r} is not "
                "in any of them")

    def value_for_run(self, name: str, run_id: str) -> str | None:
        """Return ``name``'s value as run ``run_id`` may read it, for masking that run's record.

        ``None`` when the run could not have read it (no such secret, a group scope its user
        is not in, a key that does not decrypt it): then the value never entered the run.
        """
        try:
            return self.get(name, run_id=run_id)
        except (NotFoundError, SecretScopeError):
            return None
        except SecretKeyError as exc:
            logger.warning("cannot mask secret %r in run %s: %s", name, run_id, exc)
            return None

    def get_many(self, names: Iterable[str]) -> dict[str, str]:
        """Return ``{name: value}`` for ``names``; raise ``NotFoundError`` for a missing one."""
        return {name: self.get(name) for name in dict.fromkeys(names)}


def register_encrypted(column: EncryptedColumn) -> None:
    """Add a column of ciphertexts (of a plug-in's table) to ``ENCRYPTED_COLUMNS``, so that a
    key rotation cannot miss it. Its table, key and column are identifiers of the code."""
    global ENCRYPTED_COLUMNS
    for ident in (column.table, *column.key, column.column):
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", ident):
            raise ValueError(f"{ident!r} is not a plain SQL identifier")
    if column not in ENCRYPTED_COLUMNS:
        ENCRYPTED_COLUMNS = (*ENCRYPTED_COLUMNS, column)


def rotate_key(pool: Pool, keys: list[bytes]) -> dict[str, int]:
    """Re-encrypt every ciphertext of ``ENCRYPTED_COLUMNS`` under ``keys[0]``; return how
    many values per table.

    ``keys`` decrypt (the new key first, then the old ones). One transaction: each table is
    locked against writes (``SHARE ROW EXCLUSIVE``: readers go on, with the old ciphertexts,
    until the commit), every value is decrypted and sealed again with the same associated data,
    and a value no key decrypts raises ``SecretKeyError`` naming it, with nothing changed.
    """
    from psycopg.rows import tuple_row

    cipher = Cipher(keys)
    counts: dict[str, int] = {}
    with pool.connection() as conn:
        try:
            cur = conn.cursor(row_factory=tuple_row)
            locked: set[str] = set()
            for col in sorted(ENCRYPTED_COLUMNS, key=lambda c: (c.table, c.column)):
                found = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (col.table,)).fetchone()
                if not found or not found[0]:
                    continue
                if col.table not in locked:
                    cur.execute(f"LOCK TABLE {col.table} IN SHARE ROW EXCLUSIVE MODE")
                    locked.add(col.table)
                keys_sql = ", ".join(col.key)
                rows = cur.execute(f"SELECT {keys_sql}, {col.column} FROM {col.table}"
                                   f" WHERE {col.column} IS NOT NULL").fetchall()
                updates = []
                for row in rows:
                    key, blob = row[:-1], row[-1]
                    associated = col.associated(*key)
                    try:
                        plain = cipher.decrypt(blob, associated)
                    except SecretKeyError:
                        raise SecretKeyError(
                            f"{col.table} {associated!r} cannot be decrypted with any of the "
                            "keys given: nothing was re-encrypted") from None
                    updates.append((cipher.encrypt(plain, associated), *key))
                if updates:
                    where = " AND ".join(f"{k} = %s" for k in col.key)
                    cur.executemany(f"UPDATE {col.table} SET {col.column} = %s WHERE {where}",
                                    updates)
                counts[col.table] = counts.get(col.table, 0) + len(updates)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return counts


def _row_dict(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


__all__ = [
    "MASK",
    "Authorize",
    "delete_owned",
    "write_owned",
    "MIN_MASKED_LENGTH",
    "Cipher",
    "SecretKeyError",
    "SecretScopeError",
    "SecretStore",
    "ENCRYPTED_COLUMNS",
    "EncryptedColumn",
    "check_env",
    "connection_associated",
    "secret_associated",
    "check_group",
    "check_name",
    "current_run_id",
    "generate_key",
    "load_keys",
    "mask",
    "mask_value",
    "register_encrypted",
    "rotate_key",
]

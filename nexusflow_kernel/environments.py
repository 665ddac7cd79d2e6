"""Environments: named places a run runs in (``dev``, ``prod``), with their own variables,
secrets, connections and role grants; and the versions of a workflow promoted to each.

A run runs in one environment (``executions.env``; ``dev`` by default). Its variables are read
when it starts and kept with it (``executions.env_vars``: ``env['NAME']`` in its expressions and
templates); its secrets and connections resolve, in the worker, to the environment's own value
of the name, else the value of every environment (``env = ''`` in their tables). Starting a run
in an environment named explicitly checks, before anything is stored, that the environment
exists and that every variable, secret and connection the flow names is there, and says which
are missing, by node.

Roles on an environment (``runner``, ``deployer``) are checked by the server: running in a
``restricted`` environment needs one (``dev`` is not restricted); promoting to it, and changing
its variables, secrets and connections, needs ``deployer``. Administrators may do everything.

Promotion (``promote``) records that version N of a workflow is the one an environment runs:
its triggers (webhooks, schedules, queues bound to the environment) start that version, never
the latest draft. Every promotion is kept (who, when, from which version): a rollback is the
promotion of an earlier version, and ``promote(dry_run=True)`` says what would change.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import NexusFlowError, NotFoundError
from .secrets import NAME_PATTERN, check_env

if TYPE_CHECKING:  # pragma: no cover
    from .runstate.db import Conn, Pool

DEFAULT_ENV = "dev"

ENV_ROLES = ("runner", "deployer")
"""Roles on an environment, least first: ``runner`` runs flows in it; ``deployer`` also
promotes versions to it and changes its variables, secrets and connections."""

MAX_VAR_BYTES = 64 * 1024

_ENV_REF = re.compile(r"""\benv\s*\[\s*(['"])([^'"\\]{1,128})\1\s*\]""")


class EnvironmentError(NexusFlowError):  # noqa: A001 - the module's own, not the builtin
    """An environment is unknown, or misses what a flow needs, or a promotion is refused."""


class UnknownEnvironment(EnvironmentError, NotFoundError):
    """No environment of that name."""


def env_rank(role: str | None) -> int:
    return ENV_ROLES.index(role) + 1 if role in ENV_ROLES else 0


def variable_refs(value: Any) -> set[str]:
    """Return the names read as ``env['NAME']`` in the strings of a JSON-like value."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "env" in item:
                found |= {m.group(2) for m in _ENV_REF.finditer(item)}
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def check_var_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise EnvironmentError(
            f"variable name {name!r} is invalid: use letters, digits, '_', '.', '-' "
            "(at most 128, not starting with a digit)")
    return name


def _unknown(name: str, known: Iterable[str]) -> EnvironmentError:
    exc = UnknownEnvironment(f"unknown environment {name!r} (environments: "
                           f"{', '.join(sorted(known)) or 'none'}; an administrator creates "
                           f"one with `nexusflow envs create {name}`)")
    return exc


class EnvStore:
    """Environments, their variables, role grants and promotions, in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # ------------------------------------------------------------------ environments
    def ensure_dev(self, conn: Any = None) -> None:
        """Create the ``dev`` environment if it is missing (it always exists)."""
        sql = ("INSERT INTO nexusflow_environments (name, description, restricted, created_by)"
               " VALUES ('dev', 'the default environment', false, 'nexusflow')"
               " ON CONFLICT DO NOTHING")
        if conn is not None:
            conn.execute(sql)
            return
        with self.pool.connection() as c:
            c.execute(sql)
            c.commit()

    def list(self) -> list[dict[str, Any]]:
        self.ensure_dev()
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT name, description, restricted, vars, created_at, created_by"
                " FROM nexusflow_environments ORDER BY name = 'dev' DESC, name").fetchall()
            roles = conn.execute("SELECT env, principal, role FROM nexusflow_env_roles"
                                 " ORDER BY env, principal").fetchall()
        out = []
        for row in rows:
            item = _plain(row)
            item["roles"] = [{"principal": r["principal"], "role": r["role"]}
                             for r in roles if r["env"] == row["name"]]
            out.append(item)
        return out

    def get(self, name: str, conn: Conn | None = None) -> dict[str, Any]:
        """Return environment ``name``; ``EnvironmentError`` naming the known ones if none."""
        if name == DEFAULT_ENV:
            self.ensure_dev(conn)

        def read(c: Any) -> Any:
            return c.execute("SELECT name, description, restricted, vars, created_at,"
                             " created_by FROM nexusflow_environments WHERE name = %s",
                             (name,)).fetchone()

        if conn is not None:
            row = read(conn)
        else:
            with self.pool.connection() as c:
                row = read(c)
        if row is None:
            raise _unknown(name, self.names(conn))
        return _plain(row)

    def names(self, conn: Conn | None = None) -> builtins.list[str]:
        sql = "SELECT name FROM nexusflow_environments ORDER BY name"
        if conn is not None:
            return [r["name"] for r in conn.execute(sql)]
        with self.pool.connection() as c:
            return [r["name"] for r in c.execute(sql)]

    def create(self, name: str, *, description: str | None = None, restricted: bool = True,
               actor: str | None = None) -> dict[str, Any]:
        if not name:
            raise EnvironmentError("an environment needs a name")
        check_env(name)
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO nexusflow_environments (name, description, restricted, created_by)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING name",
                (name, description, restricted, actor)).fetchone()
            conn.commit()
        if row is None:
            raise EnvironmentError(f"environment {name!r} exists already")
        return self.get(name)

    def delete(self, name: str) -> None:
        if name == DEFAULT_ENV:
            raise EnvironmentError("the dev environment cannot be deleted")
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM nexusflow_environments WHERE name = %s", (name,))
            if cur.rowcount:
                conn.execute("DELETE FROM nexusflow_secrets WHERE env = %s", (name,))
                conn.execute("DELETE FROM nexusflow_connections WHERE env = %s", (name,))
            conn.commit()
        if cur.rowcount == 0:
            raise _unknown(name, self.names())

    # ------------------------------------------------------------------ variables
    def set_var(self, env: str, name: str, value: Any) -> None:
        check_var_name(name)
        text = json.dumps(value)
        if len(text.encode()) > MAX_VAR_BYTES:
            raise EnvironmentError(f"variable {name!r} is over {MAX_VAR_BYTES} bytes")
        if env == DEFAULT_ENV:
            self.ensure_dev()
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE nexusflow_environments SET vars = vars || jsonb_build_object(%s::text,"
                " %s::jsonb) WHERE name = %s", (name, text, env))
            conn.commit()
        if cur.rowcount == 0:
            raise _unknown(env, self.names())

    def unset_var(self, env: str, name: str) -> None:
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE nexusflow_environments SET vars = vars - %s WHERE name = %s"
                " AND vars ? %s", (name, env, name))
            conn.commit()
        if cur.rowcount == 0:
            self.get(env)  # an unknown environment says so
            raise NotFoundError(f"environment {env!r} has no variable {name!r}")

    # ------------------------------------------------------------------ roles
    def grant(self, env: str, principal: str, role: str, *, actor: str | None = None) -> None:
        if role not in ENV_ROLES:
            raise EnvironmentError(f"role {role!r} is not an environment role (use "
                                   f"{' or '.join(ENV_ROLES)})")
        if not principal or len(principal) > 256 or "\x00" in principal:
            raise EnvironmentError("a principal is a user name, '*' or 'group:<name>'")
        self.get(env)
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO nexusflow_env_roles (env, principal, role, granted_by)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (env, principal) DO UPDATE SET"
                " role = EXCLUDED.role, granted_by = EXCLUDED.granted_by, granted_at = now()",
                (env, principal, role, actor))
            conn.commit()

    def revoke(self, env: str, principal: str) -> None:
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM nexusflow_env_roles WHERE env = %s"
                               " AND principal = %s", (env, principal))
            conn.commit()
        if cur.rowcount == 0:
            self.get(env)
            raise NotFoundError(f"{principal!r} has no role on environment {env!r}")

    def role_of(self, env: str, principals: Iterable[str]) -> str | None:
        """Return the highest role any of ``principals`` holds on ``env``."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT role FROM nexusflow_env_roles WHERE env = %s"
                                " AND principal = ANY(%s)", (env, list(principals))).fetchall()
        best = max((r["role"] for r in rows), key=env_rank, default=None)
        return best

    # ------------------------------------------------------------------ runs
    def for_run(self, conn: Conn, env: str | None, plan: Any, *,
                local_connections: Iterable[str] = ()) -> tuple[str, dict[str, Any]]:
        """Return ``(environment, its variables)`` for a run of ``plan`` starting in ``env``.

        ``None``: the default environment, unchecked (as before environments). A named one
        must exist and hold every variable, secret and connection the flow names (a secret or
        connection of every environment counts; a connection the starting process has as
        ``NEXUSFLOW_CONNECTION_<NAME>`` too): else one error names what is missing, by node.
        """
        name = env or DEFAULT_ENV
        try:
            check_env(name)
        except NexusFlowError:
            raise _unknown(name, self.names(conn)) from None
        row = conn.execute("SELECT vars FROM nexusflow_environments WHERE name = %s",
                           (name,)).fetchone()
        if row is None and name != DEFAULT_ENV:  # dev always exists (its row may come later)
            raise _unknown(name, self.names(conn))
        variables = dict(row["vars"] or {}) if row is not None else {}
        if env is None:
            return name, variables
        missing = self._missing(conn, name, plan, variables, set(local_connections))
        if missing:
            raise EnvironmentError(
                f"the flow cannot run in environment {name!r}: " + "; ".join(missing))
        return name, variables

    @staticmethod
    def _missing(conn: Conn, env: str, plan: Any, variables: Mapping[str, Any],
                 local_connections: set[str]) -> builtins.list[str]:
        from .nodes import get_node_type

        needs: builtins.list[tuple[str, str, str]] = []  # (node, kind, name)
        for node_id in plan.order:
            node = plan.nodes[node_id]
            node_type = get_node_type(node.type)
            needs += [(node_id, "variable", v) for v in sorted(variable_refs(node.config))]
            if node_type is None:
                continue
            needs += [(node_id, "secret", s) for s in sorted(node_type.secret_names(node.config))]
            needs += [(node_id, "connection", c)
                      for c in sorted(node_type.connection_names(node.config))]
        secrets = {s for (_n, k, s) in needs if k == "secret"}
        conns = {c for (_n, k, c) in needs if k == "connection"}
        have_secrets = {r["name"] for r in conn.execute(
            "SELECT name FROM nexusflow_secrets WHERE name = ANY(%s) AND env IN ('', %s)",
            (sorted(secrets), env))} if secrets else set()
        have_conns = {r["name"] for r in conn.execute(
            "SELECT name FROM nexusflow_connections WHERE name = ANY(%s) AND env IN ('', %s)",
            (sorted(conns), env))} if conns else set()
        out = []
        for node_id, kind, name in needs:
            if kind == "variable" and name not in variables:
                out.append(f"node {node_id!r} reads variable env[{name!r}], which it does not "
                           f"have (`nexusflow envs set-var {env} {name} VALUE`)")
            elif kind == "secret" and name not in have_secrets:
                out.append(f"node {node_id!r} needs secret {name!r}, which it does not have "
                           f"(`nexusflow secrets set {name} --env {env}`)")
            elif kind == "connection" and name not in have_conns \
                    and name.lower() not in local_connections:
                out.append(f"node {node_id!r} needs connection {name!r}, which it does not "
                           f"have (`nexusflow connections add {name} --env {env} ...`)")
        return out


    # ------------------------------------------------------------------ promotions
    @staticmethod
    def promoted_version(conn: Conn, workflow_id: str, env: str) -> int | None:
        """Return the version of ``workflow_id`` promoted to ``env`` (``None``: none yet)."""
        row = conn.execute("SELECT version FROM nexusflow_promotions WHERE workflow_id = %s"
                           " AND env = %s ORDER BY id DESC LIMIT 1",
                           (workflow_id, env)).fetchone()
        return None if row is None else int(row["version"])

    def promotions(self, workflow_id: str,
                   env: str | None = None) -> builtins.list[dict[str, Any]]:
        """Return the promotion history of a workflow (newest first), of one environment or
        of all: who promoted which version where, when, and what was there before."""
        sql = ("SELECT id, workflow_id, env, version, previous_version, promoted_by,"
               " promoted_at, note FROM nexusflow_promotions WHERE workflow_id = %s")
        args: builtins.list[Any] = [workflow_id]
        if env is not None:
            sql += " AND env = %s"
            args.append(env)
        with self.pool.connection() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [{**_plain(r), "workflow_id": str(r["workflow_id"])} for r in rows]

    def current_promotions(self, workflow_id: str) -> dict[str, int]:
        """Return ``{env: version}`` of the versions promoted to each environment."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (env) env, version FROM nexusflow_promotions"
                " WHERE workflow_id = %s ORDER BY env, id DESC", (workflow_id,)).fetchall()
        return {r["env"]: int(r["version"]) for r in rows}

    @staticmethod
    def record_promotion(conn: Conn, workflow_id: str, env: str, version: int,
                         previous: int | None, actor: str | None,
                         note: str | None) -> dict[str, Any]:
        row = conn.execute(
            "INSERT INTO nexusflow_promotions (workflow_id, env, version, previous_version,"
            " promoted_by, note) VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING id, promoted_by, promoted_at",
            (workflow_id, env, version, previous, actor, note)).fetchone()
        assert row is not None
        return _plain(row)

    def missing_for(self, conn: Conn, env: str, plan: Any) -> builtins.list[str]:
        """Return what ``env`` lacks for ``plan`` (variables, secrets, connections)."""
        row = conn.execute("SELECT vars FROM nexusflow_environments WHERE name = %s",
                           (env,)).fetchone()
        variables = dict(row["vars"] or {}) if row is not None else {}
        return self._missing(conn, env, plan, variables, set())


def graph_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """Return the nodes and edges added, removed and changed from ``old`` to ``new`` (and the
    flow-level fields that changed)."""
    out: dict[str, Any] = {}
    for part in ("nodes", "edges"):
        a = {i["id"]: i for i in (old or {}).get(part) or []}
        b = {i["id"]: i for i in new.get(part) or []}
        out[part] = {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
                     "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k])}
    keys = (set(old or {}) | set(new)) - {"nodes", "edges", "layout"}
    out["fields"] = sorted(k for k in keys if (old or {}).get(k) != new.get(k)) if old else []
    return out


def _plain(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if hasattr(value, "isoformat"):
            out[key] = value.isoformat()
    return out


__all__ = ["DEFAULT_ENV", "ENV_ROLES", "EnvStore", "EnvironmentError", "UnknownEnvironment",
           "graph_changes",
           "check_var_name",
           "env_rank", "variable_refs"]

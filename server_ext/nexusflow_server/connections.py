"""REST handlers of stored connections: metadata for the users whose runs may use them, never
a password; changes by who may change them (the rules of group-scoped secrets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.errors import NexusFlowError
from nexusflow_kernel.secrets import check_env, check_group, check_name

from .base import BadRequest, Forbidden, NexusFlowHandler, field


class ConnectionBase(NexusFlowHandler):
    auth_resource = "nexusflow:secrets"

    def env_arg(self) -> str:
        """Return the ``?env=`` query argument ('' for every environment), checked."""
        env = self.get_query_argument("env", "") or ""
        try:
            return check_env(env)
        except NexusFlowError as exc:
            raise BadRequest(str(exc), "?env") from None

    def may_change(
        self, name: str, env: str, groups: list[str] | None
    ) -> Callable[[dict[str, Any] | None], None]:
        """Return the rule the store applies to the connection as it stands (locked, in the
        transaction that writes or deletes; blocking: an environment is checked here).

        Administrators change, test and delete any connection; another user only one scoped
        to a group of theirs, and only into their own groups (a connection every run may use
        is the administrators': they alone create one, so its creator is one of them; an
        environment's own, its deployers')."""
        from .environments import require_env

        if env:  # an environment's own: its deployers' (an unknown one says so)
            require_env(self, env, "deploy")
            return _anyone
        if self.is_admin:
            return _anyone
        mine = set(self.identity.groups)

        def authorize(current: dict[str, Any] | None) -> None:
            held = None if current is None else current["groups"]
            if held is not None and not held:
                raise Forbidden(
                    f"connection {name!r} is for every run: only an administrator may change, "
                    "test or delete it"
                )
            if held and not mine & set(held):
                raise Forbidden(
                    f"connection {name!r} belongs to group(s) {', '.join(held)}; "
                    "you are in none of them: only their members or an administrator may "
                    "change, test or delete it"
                )
            if groups is not None and not groups:
                raise Forbidden(
                    "scope the connection to a group of yours ('groups'): a connection "
                    "for every run is added by an administrator"
                )
            outside = sorted(set(groups or ()) - mine)
            if outside:
                raise Forbidden(
                    f"you may scope a connection only to your own groups, not "
                    f"{', '.join(outside)}"
                )

        return authorize

    def check_may_change(self, name: str, env: str) -> None:
        """Apply the rule to the connection as it stands, for a route that changes nothing
        (``test``). Blocking."""
        authorize = self.may_change(name, env, None)
        held = self.nf.connections().groups_of(name, env)
        authorize(None if held is None else {"name": name, "env": env, "groups": held})


def _anyone(current: dict[str, Any] | None) -> None:
    """The rule of administrators and of an environment's deployers: any connection."""


class ConnectionsHandler(ConnectionBase):
    @authorized
    async def get(self) -> None:
        env = self.get_query_argument("env", None)
        if env is not None:
            env = self.env_arg()
        usable_by = None if self.is_admin else self.identity.groups
        rows = await self.sync(lambda: self.nf.connections().list(usable_by=usable_by, env=env))
        self.reply({"connections": rows})


class ConnectionHandler(ConnectionBase):
    @authorized
    async def get(self, name: str) -> None:
        check_name(name)
        env = self.env_arg()
        row = await self.sync(lambda: self.nf.connections().describe(name, env))
        if (
            row["groups"]
            and not self.is_admin
            and not set(row["groups"]) & set(self.identity.groups)
        ):
            raise Forbidden(
                f"connection {name!r} belongs to group(s) "
                f"{', '.join(row['groups'])}; you are in none of them"
            )
        self.reply(row)

    @authorized
    async def put(self, name: str) -> None:
        check_name(name)
        env = self.env_arg()
        body = self.body()
        kind = field(body, "kind", str, default="postgres")
        url = field(body, "url", str, required=True)
        password = field(body, "password", str)
        headers = field(body, "headers", dict)
        trusted = field(body, "trusted", bool, default=False)
        groups = field(body, "groups", list, default=[])
        if not isinstance(url, str) or not url:
            raise BadRequest("'url' is required", "/url")
        for i, group in enumerate(groups):
            if not isinstance(group, str):
                raise BadRequest("'groups' must list group names", f"/groups/{i}")
            try:
                check_group(group)
            except NexusFlowError as exc:
                raise BadRequest(str(exc), f"/groups/{i}") from None
        if trusted and not self.is_admin:
            raise Forbidden(
                "only an administrator may mark a connection trusted (it lets "
                "db_query use a privileged role)"
            )
        authorize = await self.sync(self.may_change, name, env, groups)

        def add() -> Any:
            try:
                return self.nf.connections().add(
                    name,
                    kind=kind,
                    url=url,
                    password=password,
                    headers=headers,
                    env=env,
                    groups=groups,
                    trusted=trusted,
                    actor=self.user_name,
                    authorize=authorize,
                )
            except NexusFlowError as exc:
                if getattr(exc, "pointer", None):
                    raise BadRequest(str(exc), exc.pointer) from None  # type: ignore[attr-defined]
                raise

        row = await self.sync(add)
        await self.audit(
            "connection.set",
            f"connection:{env}:{name}",
            kind=kind,
            groups=sorted(set(groups)),
            trusted=trusted,
        )
        self.reply(row)

    @authorized
    async def delete(self, name: str) -> None:
        check_name(name)
        env = self.env_arg()
        authorize = await self.sync(self.may_change, name, env, None)
        await self.sync(lambda: self.nf.connections().remove(name, env, authorize=authorize))
        await self.audit("connection.delete", f"connection:{env}:{name}")
        self.set_status(204)
        self.finish()


class ConnectionTestHandler(ConnectionBase):
    @authorized
    async def post(self, name: str) -> None:
        check_name(name)
        env = self.env_arg()
        await self.sync(self.check_may_change, name, env)
        result = await self.sync(lambda: self.nf.connections().test(name, env))
        await self.audit("connection.test", f"connection:{env}:{name}", ok=result["ok"])
        self.reply(result)

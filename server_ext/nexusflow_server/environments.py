"""REST handlers of environments (issue #17): create and list them, their variables and role
grants, and the check every run start, retry and replay in an environment goes through.

Roles on an environment: ``runner`` runs flows in it (needed when it is ``restricted``: every
environment but ``dev`` unless made otherwise), ``deployer`` also promotes versions to it and
changes its variables, secrets and connections. Administrators may do everything; creating,
deleting and granting is theirs alone.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.environments import ENV_ROLES, EnvironmentError, check_var_name, env_rank
from nexusflow_kernel.errors import NexusFlowError
from nexusflow_kernel.secrets import check_env

from .base import BadRequest, Forbidden, NexusFlowHandler, field

ENV_ACTIONS = {"run": "runner", "deploy": "deployer"}


def checked_env(value: Any, pointer: str) -> str:
    """Return an environment name from a request, or raise ``BadRequest`` at ``pointer``."""
    if not isinstance(value, str) or not value:
        raise BadRequest("an environment is a name such as 'prod'", pointer)
    try:
        return check_env(value)
    except NexusFlowError as exc:
        raise BadRequest(str(exc), pointer) from None


def require_env(handler: Any, env: str, action: str) -> None:
    """Raise unless ``handler``'s user may ``action`` ('run' or 'deploy') in ``env``; an
    unknown environment says so, naming the known ones (blocking)."""
    store = handler.nf.engine().environments
    info = store.get(env)
    if handler.is_admin:
        return
    if action == "run" and not info["restricted"]:
        return
    role = store.role_of(env, handler.identity.principals)
    if env_rank(role) >= env_rank(ENV_ACTIONS[action]):
        return
    need = ENV_ACTIONS[action]
    what = "running flows in" if action == "run" else "promoting to and changing"
    raise Forbidden(f"{what} environment {env!r} needs the {need} role on it"
                    + (f" (yours: {role})" if role else " (you have none)")
                    + "; an administrator grants it with `nexusflow envs grant`")


class EnvBase(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    def need_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{what} is for Nexus-Flow administrators")

    @property
    def envs(self) -> Any:
        return self.nf.engine().environments


class EnvironmentsHandler(EnvBase):
    @authorized
    async def get(self) -> None:
        self.reply({"environments": await self.sync(lambda: self.envs.list())})

    @authorized
    async def post(self) -> None:
        body = self.body()
        name = checked_env(field(body, "name", str, required=True), "/name")
        description = field(body, "description", str)
        restricted = field(body, "restricted", bool, default=True)
        self.need_admin("creating an environment")
        row = await self.sync(lambda: self.envs.create(
            name, description=description, restricted=restricted, actor=self.user_name))
        await self.audit("env.create", f"env:{name}", restricted=restricted)
        self.reply(row, 201)


class EnvironmentHandler(EnvBase):
    @authorized
    async def get(self, env: str) -> None:
        env = checked_env(env, "/env")
        self.reply(await self.sync(lambda: self.envs.get(env)))

    @authorized
    async def delete(self, env: str) -> None:
        env = checked_env(env, "/env")
        self.need_admin("deleting an environment")
        await self.sync(lambda: self.envs.delete(env))
        await self.audit("env.delete", f"env:{env}")
        self.set_status(204)
        self.finish()


class EnvVarHandler(EnvBase):
    @authorized
    async def put(self, env: str, name: str) -> None:
        env = checked_env(env, "/env")
        body = self.body()
        if "value" not in body:
            raise BadRequest("'value' is required", "/value")
        try:
            check_var_name(name)
        except EnvironmentError as exc:
            raise BadRequest(str(exc), "/name") from None
        await self.sync(require_env, self, env, "deploy")
        await self.sync(lambda: self.envs.set_var(env, name, body["value"]))
        await self.audit("env.set_var", f"env:{env}", name=name)
        self.set_status(204)
        self.finish()

    @authorized
    async def delete(self, env: str, name: str) -> None:
        env = checked_env(env, "/env")
        await self.sync(require_env, self, env, "deploy")
        await self.sync(lambda: self.envs.unset_var(env, name))
        await self.audit("env.unset_var", f"env:{env}", name=name)
        self.set_status(204)
        self.finish()


class EnvRoleHandler(EnvBase):
    @authorized
    async def put(self, env: str, principal: str) -> None:
        env = checked_env(env, "/env")
        role = field(self.body(), "role", str, required=True)
        if role not in ENV_ROLES:
            raise BadRequest(f"'role' must be one of {', '.join(ENV_ROLES)}", "/role")
        self.need_admin("granting a role on an environment")
        await self.sync(lambda: self.envs.grant(env, principal, role, actor=self.user_name))
        await self.audit("env.grant", f"env:{env}", principal=principal, role=role)
        self.reply({"env": env, "principal": principal, "role": role})

    @authorized
    async def delete(self, env: str, principal: str) -> None:
        env = checked_env(env, "/env")
        self.need_admin("revoking a role on an environment")
        await self.sync(lambda: self.envs.revoke(env, principal))
        await self.audit("env.revoke", f"env:{env}", principal=principal)
        self.set_status(204)
        self.finish()


class PromoteHandler(EnvBase):
    """``POST /workflows/{id}/promote`` ``{"version", "env", "note"?, "dry_run"?}``: what changes
    in the environment, and (unless ``dry_run``) the promotion recorded. Needs a role that reads
    the workflow and the deployer role on the environment."""

    @authorized
    async def post(self, workflow_id: str) -> None:
        from .base import check_uuid

        workflow_id = check_uuid(workflow_id, "workflow")
        body = self.body()
        version = field(body, "version", int, required=True)
        if version < 1:
            raise BadRequest("'version' must be 1 or more", "/version")
        env = checked_env(field(body, "env", str, required=True), "/env")
        note = field(body, "note", str)
        if note is not None and len(note) > 2000:
            raise BadRequest("'note' may hold 2000 characters at most", "/note")
        dry_run = field(body, "dry_run", bool, default=False)
        await self.require(workflow_id, "read")
        await self.sync(require_env, self, env, "deploy")
        result = await self.engine_do(lambda e: e.promote(
            workflow_id, version, env, actor=self.user_name, note=note, dry_run=dry_run))
        if not dry_run and not result["unchanged"]:
            await self.audit("workflow.promote", f"workflow:{workflow_id}", env=env,
                             version=version, previous=result["from_version"])
        self.reply(result)


class PromotionsHandler(EnvBase):
    @authorized
    async def get(self, workflow_id: str) -> None:
        from .base import check_uuid

        workflow_id = check_uuid(workflow_id, "workflow")
        env = self.get_query_argument("env", None)
        if env is not None:
            env = checked_env(env, "?env")
        await self.require(workflow_id, "read")
        self.reply(await self.engine_do(lambda e: e.promotions(workflow_id, env)))

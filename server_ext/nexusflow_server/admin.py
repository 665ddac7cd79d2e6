"""REST handlers for the catalog, the OpenAPI document, secrets, roles, triggers and audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.errors import NexusFlowError
from nexusflow_kernel.secrets import check_group, check_name

from . import rbac
from .base import BadRequest, Forbidden, NexusFlowHandler, check_uuid, field
from .webhooks import ALGORITHMS, CONTENT_TYPES, check_jwt_key


class NodeTypesHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self) -> None:
        from nexusflow_kernel.nodes import listing

        # The types this server's environment provides (each with its package and version)
        # and the node packages that are broken, with the reason (the palette lists both).
        self.reply(await self.sync(listing))


class OpenAPIHandler(NexusFlowHandler):
    auth_resource = "nexusflow:api"

    @authorized
    async def get(self) -> None:
        from .openapi import openapi_document

        self.reply(openapi_document(self.base_url))


class SecretsHandler(NexusFlowHandler):
    auth_resource = "nexusflow:secrets"

    @authorized
    async def get(self) -> None:
        # Only what the user's runs may read: unscoped secrets and those of their Hub groups
        # (administrators see all). The names of other teams' secrets are theirs.
        usable_by = None if self.is_admin else self.identity.groups
        env = self.get_query_argument("env", None)
        if env is not None:
            env = _env_arg(env)
        rows = await self.sync(lambda: self.nf.secrets().list(usable_by=usable_by, env=env))
        self.reply({"secrets": rows})


class SecretHandler(NexusFlowHandler):
    auth_resource = "nexusflow:secrets"

    @authorized
    async def put(self, name: str) -> None:
        check_name(name)
        env = _env_arg(self.get_query_argument("env", "") or "")
        body = self.body()
        value = field(body, "value", str, required=True)
        if len(value.encode()) > 64 * 1024:
            raise BadRequest("a secret value may be at most 64 KiB", "/value", status=413)
        groups = field(body, "groups", list)
        if groups is not None:
            for i, group in enumerate(groups):
                if not isinstance(group, str):
                    raise BadRequest("'groups' must list group names", f"/groups/{i}")
                try:
                    check_group(group)
                except NexusFlowError as exc:
                    raise BadRequest(str(exc), f"/groups/{i}") from None
        authorize = await self.sync(self._may_change, name, groups, env)
        await self.sync(lambda: self.nf.secrets().set(name, value, actor=self.user_name,
                                                      groups=groups, env=env,
                                                      authorize=authorize))
        await self.audit("secret.set", f"secret:{name}",
                         **({"groups": sorted(set(groups))} if groups is not None else {}),
                         **({"env": env} if env else {}))
        self.set_status(204)
        self.finish()

    @authorized
    async def delete(self, name: str) -> None:
        check_name(name)
        env = _env_arg(self.get_query_argument("env", "") or "")
        authorize = await self.sync(self._may_change, name, None, env)
        await self.sync(lambda: self.nf.secrets().delete(name, env, authorize=authorize))
        await self.audit("secret.delete", f"secret:{name}", **({"env": env} if env else {}))
        self.set_status(204)
        self.finish()

    def _may_change(self, name: str, groups: list[str] | None,
                    env: str = "") -> Callable[[dict[str, Any] | None], None]:
        """Return the rule the store applies to the secret as it stands, locked, before it
        writes or deletes (blocking: an environment is checked here).

        Anyone with the permission creates a new name. An existing secret: a group-scoped one
        is changed by members of one of its groups; an unscoped one (every run reads it) only
        by the user who created it, so nobody replaces another's ``DB_URL`` with a URL of
        theirs; an environment's own (``?env=``) by the environment's deployers. Administrators
        change any. A secret is scoped only to groups one is in, and a group's secret is made
        readable by every run (unscoped) only by an administrator: a member could otherwise
        hand the team's credential to every user's runs."""
        if env:  # an environment's own: its deployers' (an unknown one says so)
            from .environments import require_env

            require_env(self, env, "deploy")
        admin, me, mine = self.is_admin, self.user_name, set(self.identity.groups)

        def authorize(current: dict[str, Any] | None) -> None:
            if admin:
                return
            if current is not None:
                held = current["groups"]
                if held and not mine & set(held):
                    raise Forbidden(f"secret {name!r} belongs to group(s) {', '.join(held)}; "
                                    "you are in none of them: only their members or an "
                                    "administrator may change or delete it")
                owner = current["created_by"]
                if not held and not env and owner != me:
                    who = (f"its creator {owner!r} or an administrator" if owner else
                           "an administrator (it has no recorded creator)")
                    raise Forbidden(f"secret {name!r} is unscoped (every run may read it) and "
                                    f"not yours: only {who} may replace or delete it")
                if held and groups is not None and not groups:
                    raise Forbidden(f"secret {name!r} belongs to group(s) {', '.join(held)}: "
                                    "only an administrator may make it readable by every run "
                                    "(groups [])")
            outside = sorted(set(groups or ()) - mine)
            if outside:
                raise Forbidden(f"you may scope a secret only to your own groups, not "
                                f"{', '.join(outside)}")

        return authorize


def _env_arg(value: str) -> str:
    """Return the ``?env=`` of a secrets request ('' for every environment), checked."""
    from nexusflow_kernel.secrets import check_env

    try:
        return check_env(value)
    except NexusFlowError as exc:
        raise BadRequest(str(exc), "?env") from None


class RolesHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        roles = await self.sync(self.nf.store().list_roles, workflow_id)
        mine = await self.sync(self.role_on, workflow_id)
        self.reply({"roles": roles, "your_role": mine, "default_role": self.nf.default_role})


class RoleHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    def _principal(self, principal: str) -> str:
        if not principal or len(principal) > 256 or "\x00" in principal:
            raise BadRequest("principal must be a user name of 1 to 256 characters", "/principal")
        return principal

    @authorized
    async def put(self, workflow_id: str, principal: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        principal = self._principal(principal)
        role = field(self.body(), "role", str, required=True)
        if role not in rbac.ROLES:
            raise BadRequest(f"'role' must be one of {', '.join(rbac.ROLES)}", "/role")
        await self.require(workflow_id, "admin")
        await self.engine_do(lambda e: e.get_workflow(workflow_id))
        await self.sync(self.nf.store().grant, workflow_id, principal, role, self.user_name)
        await self.audit("role.grant", f"workflow:{workflow_id}", principal=principal, role=role)
        self.reply({"principal": principal, "role": role})

    @authorized
    async def delete(self, workflow_id: str, principal: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        principal = self._principal(principal)
        await self.require(workflow_id, "admin")
        await self.sync(self.nf.store().revoke, workflow_id, principal)
        await self.audit("role.revoke", f"workflow:{workflow_id}", principal=principal)
        self.set_status(204)
        self.finish()


class TriggerBase(NexusFlowHandler):
    auth_resource = "nexusflow:triggers"

    async def workflow_for_edit(self, workflow_id: str, version: int | None) -> str:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "edit")
        await self.engine_do(lambda e: e.get_workflow(workflow_id, version))  # 404 if missing
        return workflow_id

    async def trigger_env(self, body: dict[str, Any], version: int | None) -> str | None:
        """Return the environment a new trigger runs in (``None``: dev, its version or the
        latest). A trigger of an environment runs the version promoted there, so it names no
        version; creating one needs the deployer role on the environment."""
        env = field(body, "env", str)
        if env is None:
            return None
        from .environments import checked_env, require_env

        env = checked_env(env, "/env")
        if version is not None:
            raise BadRequest("a trigger of an environment runs the version promoted there: "
                             "give 'env' or 'version', not both", "/version")
        await self.sync(require_env, self, env, "deploy")
        return env


def _version(body: dict[str, Any]) -> int | None:
    version = field(body, "version", int)
    if version is not None and version < 1:
        raise BadRequest("'version' must be 1 or more", "/version")
    return version


class WebhooksHandler(TriggerBase):
    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        self.reply({"webhooks": await self.sync(self.nf.store().list_webhooks, workflow_id)})

    @authorized
    async def post(self, workflow_id: str) -> None:
        body = self.body()
        nf = self.nf
        version = _version(body)
        auth = field(body, "auth", str, default="hmac")
        if auth not in ("hmac", "jwt"):
            raise BadRequest("'auth' must be 'hmac' or 'jwt'", "/auth")
        algorithm = field(body, "jwt_algorithm", str)
        audience = field(body, "jwt_audience", str)
        issuer = field(body, "jwt_issuer", str)
        key = field(body, "jwt_key", str)
        if auth == "jwt":
            if algorithm not in ALGORITHMS:
                raise BadRequest(f"'jwt_algorithm' must be one of {', '.join(ALGORITHMS)}",
                                 "/jwt_algorithm")
            if not audience:
                raise BadRequest("'jwt_audience' is required for JWT webhooks", "/jwt_audience")
            key = check_jwt_key(algorithm, key)
        else:
            algorithm = audience = issuer = key = None
        types = field(body, "content_types", list, default=["application/json"])
        if not types or any(t not in CONTENT_TYPES for t in types):
            raise BadRequest(f"'content_types' must list some of {', '.join(CONTENT_TYPES)}",
                             "/content_types")
        max_body = field(body, "max_body_bytes", int, default=nf.webhook_max_body_bytes)
        rate = field(body, "rate_limit", int, default=nf.webhook_rate_limit)
        window = field(body, "rate_window_s", int, default=nf.webhook_rate_window_s)
        wait_s = float(field(body, "wait_s", float, default=0.0))
        for name, value, low, high in (("max_body_bytes", max_body, 1, 64 * 1024 * 1024),
                                       ("rate_limit", rate, 1, 1_000_000),
                                       ("rate_window_s", window, 1, 86_400),
                                       ("wait_s", wait_s, 0, nf.webhook_max_wait_s)):
            if not low <= value <= high:
                raise BadRequest(f"'{name}' must be in {low}..{high}", f"/{name}")
        workflow_id = await self.workflow_for_edit(workflow_id, version)
        env = await self.trigger_env(body, version)
        hook = await self.sync(
            self.nf.store().create_webhook, workflow_id, version=version, env=env, auth=auth,
            key=key,
            jwt_algorithm=algorithm, jwt_audience=audience, jwt_issuer=issuer,
            content_types=sorted(set(types)), max_body_bytes=max_body, rate_limit=rate,
            rate_window_s=window, wait_s=wait_s, actor=self.user_name)
        hook["url"] = self.base_url.rstrip("/") + f"/nexusflow/hooks/{hook['hook_id']}"
        await self.audit("webhook.create", f"webhook:{hook['hook_id']}", workflow_id=workflow_id)
        self.reply(hook, 201)


class WebhookHandler(TriggerBase):
    @authorized
    async def delete(self, hook_id: str) -> None:
        store = self.nf.store()
        wid = await self.sync(store.trigger_workflow, "nexusflow_webhooks", "hook_id", hook_id)
        await self.require(wid, "edit")
        await self.sync(store.delete_trigger, "nexusflow_webhooks", "hook_id", hook_id)
        await self.audit("webhook.delete", f"webhook:{hook_id}")
        self.set_status(204)
        self.finish()


class WebhookRotateHandler(TriggerBase):
    @authorized
    async def post(self, hook_id: str) -> None:
        store = self.nf.store()
        wid = await self.sync(store.trigger_workflow, "nexusflow_webhooks", "hook_id", hook_id)
        await self.require(wid, "edit")
        hook = await self.sync(store.webhook, hook_id, with_secrets=False)
        key = None
        if hook["auth"] == "jwt":
            key = check_jwt_key(hook["jwt_algorithm"], field(self.body(), "jwt_key", str))
        hook = await self.sync(store.rotate_webhook, hook_id, key)
        await self.audit("webhook.rotate", f"webhook:{hook_id}")
        self.reply(hook)


class SchedulesHandler(TriggerBase):
    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        self.reply({"schedules": await self.sync(self.nf.store().schedules,
                                                 workflow_id=workflow_id)})

    @authorized
    async def post(self, workflow_id: str) -> None:
        from .triggers import misfire_policy, next_fire

        body = self.body()
        version = _version(body)
        cron = field(body, "cron", str, required=True)
        timezone = field(body, "timezone", str, default="UTC")
        inputs = field(body, "inputs", dict, default={})
        misfire, limit = misfire_policy(body)
        first = next_fire(cron, timezone, datetime.now(UTC))
        workflow_id = await self.workflow_for_edit(workflow_id, version)
        env = await self.trigger_env(body, version)
        schedule = await self.sync(
            self.nf.store().create_schedule, workflow_id, version=version, env=env, cron=cron,
            timezone=timezone, inputs=inputs, next_fire_at=first, misfire=misfire,
            catch_up_limit=limit, actor=self.user_name)
        await self.audit("schedule.create", f"schedule:{schedule['schedule_id']}", cron=cron,
                         misfire=misfire)
        self.reply(schedule, 201)


class ScheduleHandler(TriggerBase):
    @authorized
    async def delete(self, schedule_id: str) -> None:
        store = self.nf.store()
        wid = await self.sync(store.trigger_workflow, "nexusflow_schedules", "schedule_id",
                              schedule_id)
        await self.require(wid, "edit")
        await self.sync(store.delete_trigger, "nexusflow_schedules", "schedule_id", schedule_id)
        await self.audit("schedule.delete", f"schedule:{schedule_id}")
        self.set_status(204)
        self.finish()


class QueuesHandler(TriggerBase):
    @authorized
    async def get(self, workflow_id: str) -> None:
        workflow_id = check_uuid(workflow_id, "workflow")
        await self.require(workflow_id, "read")
        self.reply({"queues": await self.sync(self.nf.store().queue_triggers,
                                              workflow_id=workflow_id)})

    @authorized
    async def post(self, workflow_id: str) -> None:
        from .triggers import create_group

        body = self.body()
        version = _version(body)
        stream = field(body, "stream", str, required=True)
        group = field(body, "group", str, default="nexusflow")
        for name, value in (("stream", stream), ("group", group)):
            if not 0 < len(value) <= 200 or "\x00" in value:
                raise BadRequest(f"'{name}' must be 1 to 200 characters", f"/{name}")
        workflow_id = await self.workflow_for_edit(workflow_id, version)
        env = await self.trigger_env(body, version)
        await self.sync(create_group, self.nf.engine().redis, stream, group)
        trigger = await self.sync(self.nf.store().create_queue_trigger, workflow_id,
                                  version=version, env=env, stream=stream, group=group,
                                  actor=self.user_name)
        await self.audit("queue.create", f"queue:{trigger['trigger_id']}", stream=stream)
        self.reply(trigger, 201)


class QueueHandler(TriggerBase):
    @authorized
    async def delete(self, trigger_id: str) -> None:
        store = self.nf.store()
        wid = await self.sync(store.trigger_workflow, "nexusflow_queue_triggers", "trigger_id",
                              trigger_id)
        await self.require(wid, "edit")
        await self.sync(store.delete_trigger, "nexusflow_queue_triggers", "trigger_id",
                        trigger_id)
        await self.audit("queue.delete", f"queue:{trigger_id}")
        self.set_status(204)
        self.finish()


class AuditHandler(NexusFlowHandler):
    auth_resource = "nexusflow:audit"

    @authorized
    async def get(self) -> None:
        from nexusflow_kernel.cli.audit import read_audit

        if not self.is_admin:
            raise Forbidden("the audit log is for Nexus-Flow administrators (NexusFlow.admin_users"
                            " or the Hub scope custom:nexusflow:admin)")
        limit = self.query_int("limit", default=100, low=1, high=1000)
        before = self.query_int("before", low=1, high=2**62)
        filters: dict[str, str | None] = {}
        for name in ("actor", "action", "resource", "since"):
            raw = self.get_query_argument(name, None) or None
            if raw is not None and (len(raw) > 256 or "\x00" in raw):
                raise BadRequest(f"query parameter {name!r} must be 1 to 256 characters",
                                 f"?{name}")
            filters[name] = raw
        since = None
        if filters["since"] is not None:
            try:
                since = datetime.fromisoformat(filters["since"])
            except ValueError:
                raise BadRequest("'since' must be an ISO 8601 time", "?since") from None
        entries = await self.sync(read_audit, self.nf.store().pool, limit=limit,
                                  actor=filters["actor"], action=filters["action"],
                                  resource=filters["resource"], since=since, before=before)
        self.reply({"entries": entries})

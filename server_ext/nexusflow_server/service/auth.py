"""Who calls the service: a JupyterHub token (``HubAuth``) or a service token (``ApiTokens``).

Both identity providers plug into Jupyter Server's handler machinery, so the REST and
websocket handlers of the extension run unchanged: ``current_user`` is a user whose
``hub_user`` model (name, groups, scopes) ``hub.identity_of`` reads. The service accepts
tokens only (``Authorization: token ...`` or ``Bearer``), never cookies, so no request can be
forged from a browser (no XSRF surface). A request without a token, or with one that is
unknown, revoked or expired, is answered 401; a Hub user without the service's access scope
(``access:services!service=<name>``) 403.

**The files' owner.** A single-user server that forwards a run of one of its files adds its
own token (``X-NexusFlow-Server-Token``, the server's ``JUPYTERHUB_API_TOKEN``): its user owns
the file, so the run is filed under that user's file even when someone the server is shared
with started it (``NexusFlowHandler.key_owner``). Without it, the caller owns what they send.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth import Authorizer, IdentityProvider, User
from tornado import web
from traitlets import Instance, default

from ..base import SERVER_TOKEN_HEADER


class ServiceUser(User):
    """A caller of the service, with the Hub-shaped model ``hub.identity_of`` reads."""

    hub_user: dict[str, Any]

    def __init__(self, model: dict[str, Any]) -> None:
        self.hub_user = model
        super().__init__(username=str(model["name"]))


def _is_public(handler: Any) -> bool:
    from ..base import PublicHandler

    return isinstance(handler, PublicHandler)


def _header_token(handler: Any, header: str = "Authorization") -> str:
    raw = (handler.request.headers.get(header) or "").strip()
    if header != "Authorization":
        return raw
    kind, _, value = raw.partition(" ")
    return value.strip() if kind.lower() in ("token", "bearer") else ""


def _unauthorized(message: str) -> web.HTTPError:
    return web.HTTPError(401, message)


class HubIdentity(IdentityProvider):
    """Identify callers with the JupyterHub API (``jupyterhub.services.auth.HubAuth``).

    HubAuth reads its configuration from the environment the Hub gives a service
    (``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_NAME``, the access
    scopes) and caches each token's model for ``HubAuth.cache_max_age`` seconds (60 here): a
    revoked Hub token works at most that long.
    """

    hub_auth = Instance("jupyterhub.services.auth.HubAuth")

    @default("hub_auth")
    def _default_hub_auth(self) -> Any:
        from jupyterhub.services.auth import HubAuth

        return HubAuth(parent=self, cache_max_age=60)

    async def _model(self, token: str) -> dict[str, Any] | None:
        try:
            return await self.hub_auth.user_for_token(token, sync=False)
        except web.HTTPError as exc:  # the Hub is down or refused our own token
            raise web.HTTPError(503, f"cannot check the token with JupyterHub: "
                                f"{exc.log_message}") from None

    async def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        if _is_public(handler):
            return None
        token = self.hub_auth.get_token(handler, in_cookie=False)
        if not token:
            raise _unauthorized("a JupyterHub token is required (Authorization: token ...)")
        model = await self._model(token)
        if not model:
            raise _unauthorized("the token is not valid: unknown, revoked or expired")
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise web.HTTPError(403, f"{model.get('kind', 'user')} {model.get('name')!r} may "
                                "not use this service (it needs one of the scopes "
                                f"{', '.join(sorted(self.hub_auth.access_scopes))})")
        handler._token_authenticated = True
        proof = _header_token(handler, SERVER_TOKEN_HEADER)
        if proof:
            owner = await self._model(proof)
            if not owner or owner.get("kind", "user") != "user":
                raise _unauthorized(f"{SERVER_TOKEN_HEADER} is not a Hub user's token")
            handler._nf_key_owner = str(owner["name"])
        return ServiceUser(model)


class TokenIdentity(IdentityProvider):
    """Identify callers by the service's own tokens (``nexusflow server token create``)."""

    def _tokens(self, handler: Any) -> Any:
        nf = handler.settings["nexusflow"]
        tokens = getattr(nf, "api_tokens", None)
        if tokens is None:
            from .tokens import ApiTokens

            tokens = nf.api_tokens = ApiTokens(nf.store().pool)
        return tokens

    async def _model(self, handler: Any, token: str) -> dict[str, Any] | None:
        nf = handler.settings["nexusflow"]
        return await nf.run_sync(lambda: self._tokens(handler).identify(token))

    async def get_user(self, handler: Any) -> User | None:  # type: ignore[override]
        if _is_public(handler):
            return None
        token = _header_token(handler)
        if not token:
            raise _unauthorized("a Nexus-Flow token is required (Authorization: token ...; "
                                "`nexusflow server token create` makes one)")
        model = await self._model(handler, token)
        if model is None:
            raise _unauthorized("the token is not valid: unknown, revoked or expired")
        handler._token_authenticated = True
        proof = _header_token(handler, SERVER_TOKEN_HEADER)
        if proof:
            owner = await self._model(handler, proof)
            if owner is None:
                raise _unauthorized(f"{SERVER_TOKEN_HEADER} is not a valid token")
            handler._nf_key_owner = str(owner["name"])
        return ServiceUser(model)


class ServiceAuthorizer(Authorizer):
    """Let every identified caller use the API; the roles per workflow decide the rest."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return user is not None


__all__ = ["SERVER_TOKEN_HEADER", "HubIdentity", "ServiceAuthorizer", "ServiceUser",
           "TokenIdentity"]

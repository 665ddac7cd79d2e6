"""The Nexus-Flow service: the extension's handlers in a small tornado app of their own.

One process serves the REST API, the event websockets, the webhooks and the trigger loops
(schedules, queue consumers), holds the PostgreSQL and Redis credentials and the secrets key,
and is the only one besides the workers that does. It is the same ``NexusFlow`` app and the
same handler set as the Jupyter server extension (``routes.service_handlers``: everything but
the files' live documents, which stay in each user's server), served by a tornado
``Application`` whose settings give the handlers what Jupyter Server would: an identity
provider (a JupyterHub token through ``HubAuth``, or the service's own tokens), an authorizer,
and the base URL.

Run it registered with a JupyterHub as a service (``python -m nexusflow_server.service``, the
Hub passes ``JUPYTERHUB_SERVICE_URL`` and the rest), or on its own for a small team
(``nexusflow server --auth token``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any
from urllib.parse import urlsplit

from tornado import web
from traitlets import Enum, Int, Unicode, default
from traitlets.config import Application

from ..app import NexusFlow

logger = logging.getLogger("nexusflow.service")


def url_path_join(*pieces: str) -> str:
    """Join URL path pieces with single slashes (keeps a leading and a trailing slash)."""
    out = "/".join(p.strip("/") for p in pieces if p.strip("/"))
    lead = "/" if pieces and pieces[0].startswith("/") else ""
    trail = "/" if pieces and pieces[-1].endswith("/") else ""
    return lead + out + (trail if out else "")


def make_app(nf: NexusFlow, *, identity_provider: Any, authorizer: Any,
             base_url: str = "/", log_function: Any = None) -> web.Application:
    """Return the tornado application serving ``nf``'s handlers under ``base_url``."""
    from ..routes import service_handlers

    base_url = "/" + base_url.strip("/") + "/" if base_url.strip("/") else "/"
    routes = [(url_path_join(base_url, pattern), handler, {"name": nf.name})
              for pattern, handler in service_handlers()]
    settings = {
        "base_url": base_url,
        nf.name: nf,
        f"{nf.name}_config": nf.config,
        "config": nf.config,
        "serverapp": None,  # no Jupyter contents: runs from a path are refused (need_files)
        "identity_provider": identity_provider,
        "authorizer": authorizer,
        "allow_remote_access": True,  # behind the Hub's proxy or a load balancer
        "xsrf_cookies": False,  # token authentication only: no cookie, no XSRF
        "websocket_max_message_size": 16 * 1024 * 1024,
    }
    if log_function is not None:
        settings["log_function"] = log_function
    return web.Application(routes, **settings)


def _hub_service_url() -> tuple[str | None, int | None]:
    raw = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if not raw:
        return None, None
    parts = urlsplit(raw)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class NexusFlowService(Application):
    """``nexusflow server``: the Nexus-Flow service (REST API, websockets, webhooks, triggers)."""

    name = "nexusflow-server"
    description = __doc__
    classes = [NexusFlow]

    ip = Unicode(config=True, help="Address to listen on (Hub: from JUPYTERHUB_SERVICE_URL).")
    port = Int(config=True, help="Port to listen on (Hub: from JUPYTERHUB_SERVICE_URL).")
    base_url = Unicode(
        config=True,
        help="URL prefix of the API (Hub: JUPYTERHUB_SERVICE_PREFIX, /services/<name>/).")
    auth = Enum(
        ["hub", "token"], config=True,
        help="Who may call: 'hub' (JupyterHub tokens, with the service's access scope) or "
        "'token' (the service's own tokens: `nexusflow server token create`). Default: 'hub' "
        "when run as a Hub service (JUPYTERHUB_API_TOKEN set), else 'token'.")
    config_file = Unicode("", config=True, help="A Python config file (c.NexusFlow.* ...).")

    aliases = {
        "ip": "NexusFlowService.ip", "port": "NexusFlowService.port",
        "base-url": "NexusFlowService.base_url", "auth": "NexusFlowService.auth",
        "config": "NexusFlowService.config_file",
    }

    @default("ip")
    def _default_ip(self) -> str:
        return os.environ.get("NEXUSFLOW_SERVICE_IP") or _hub_service_url()[0] or "127.0.0.1"

    @default("port")
    def _default_port(self) -> int:
        raw = os.environ.get("NEXUSFLOW_SERVICE_PORT")
        return int(raw) if raw else (_hub_service_url()[1] or 8765)

    @default("base_url")
    def _default_base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"

    @default("auth")
    def _default_auth(self) -> str:
        return os.environ.get("NEXUSFLOW_SERVICE_AUTH") or (
            "hub" if os.environ.get("JUPYTERHUB_API_TOKEN") else "token")

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        self._service_defaults()

    def _service_defaults(self) -> None:
        """What differs from a single-user server: nobody owns everything, no files."""
        nf_config = self.config.NexusFlow
        if "default_role" not in nf_config and not os.environ.get("NEXUSFLOW_DEFAULT_ROLE"):
            nf_config.default_role = "none"  # a workflow is private until shared
        if "file_owner" not in nf_config:
            nf_config.file_owner = ""  # files belong to whoever sends them (or proves it)

    def make_nexusflow(self) -> NexusFlow:
        nf = NexusFlow(config=self.config, log=self.log)
        nf.initialize_settings()
        return nf

    def identity_provider(self) -> Any:
        from .auth import HubIdentity, TokenIdentity

        return HubIdentity(config=self.config) if self.auth == "hub" else TokenIdentity(
            config=self.config)

    def start(self) -> None:
        asyncio.run(self.serve())

    async def serve(self, ready: asyncio.Event | None = None,
                    stop: asyncio.Event | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or ``stop`` is set); ``ready`` is set once listening."""
        from tornado.httpserver import HTTPServer

        from .auth import ServiceAuthorizer

        nf = self.make_nexusflow()
        app = make_app(nf, identity_provider=self.identity_provider(),
                       authorizer=ServiceAuthorizer(config=self.config), base_url=self.base_url,
                       log_function=_log_request)
        server = HTTPServer(app, xheaders=True, max_body_size=nf.max_request_bytes + 4096)
        server.listen(self.port, self.ip)
        self.log.info("Nexus-Flow service on http://%s:%s%s (auth: %s)", self.ip, self.port,
                      app.settings["base_url"], self.auth)
        await nf._start_jupyter_server_extension(None)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            self.log.info("Nexus-Flow service stopping")
            server.stop()
            await nf.stop_extension()


def _log_request(handler: Any) -> None:
    """Log each request at a level by its status (like Jupyter Server), never a token."""
    status = handler.get_status()
    request = handler.request
    took = 1000.0 * request.request_time()
    level = logging.DEBUG if status < 400 else (logging.WARNING if status < 500
                                                else logging.ERROR)
    user = getattr(handler, "_jupyter_current_user", None)
    who = getattr(user, "username", None) or "-"
    logger.log(level, "%d %s %s (%s@%s) %.2fms", status, request.method, request.path, who,
               request.remote_ip, took)


def main(argv: list[str] | None = None) -> None:
    """Run the service (``python -m nexusflow_server.service``)."""
    logging.basicConfig(level=os.environ.get("NEXUSFLOW_LOG_LEVEL", "INFO").upper(),
                        format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    app = NexusFlowService.instance()
    app.initialize(argv)
    app.start()


__all__ = ["NexusFlowService", "main", "make_app"]

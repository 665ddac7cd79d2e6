"""One settings model with three front doors: CLI flags, ``NEXUSFLOW_*`` variables, traitlets.

Every process (CLI, workers, the Jupyter server extension, a notebook kernel) builds its
``Settings`` with :meth:`Settings.from_env`; the CLI and the server extension then override
fields with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import defaults

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _env_choice(name: str) -> bool | None:
    """Read an optional boolean: unset or blank means "not chosen" (``None``)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    return _env_bool(name, False)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def default_data_dir() -> Path:
    """Return the folder for embedded services and local state (``NEXUSFLOW_DATA_DIR``)."""
    raw = os.environ.get("NEXUSFLOW_DATA_DIR")
    if raw:
        return Path(raw).expanduser()
    home_share = os.path.join(os.path.expanduser("~"), ".local", "share")
    base = os.environ.get("XDG_DATA_HOME") or home_share
    return Path(base) / "nexusflow"


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")


def mask_url(url: str | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (for messages and logs)."""
    if not url:
        return "<unset>"
    masked = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", url)
    return re.sub(r"(?i)(password=)[^&\s]+", r"\1***", masked)


@dataclass(frozen=True)
class Settings:
    """Where the backends are and how the engine behaves; immutable, cheap to copy."""

    database_url: str | None = None
    """PostgreSQL URL of the metadata database; ``None`` means the embedded server."""
    redis_url: str | None = None
    """Redis URL of the transport; ``None`` means the embedded server."""
    data_dir: Path = field(default_factory=default_data_dir)
    """Folder of the embedded services and local state."""
    queue_name: str = defaults.QUEUE_NAME
    sandbox_queue_name: str = defaults.SANDBOX_QUEUE_NAME
    lease_s: float = defaults.LEASE_S
    heartbeat_s: float = defaults.HEARTBEAT_S
    reconcile_interval_s: float = defaults.RECONCILE_INTERVAL_S
    requeue_grace_s: float = defaults.REQUEUE_GRACE_S
    max_output_bytes: int = defaults.MAX_OUTPUT_BYTES
    io_slots: int = defaults.IO_SLOTS
    """I/O-bound map items a worker process keeps waiting at once (``NEXUSFLOW_IO_SLOTS``)."""
    connections: dict[str, str] = field(default_factory=dict)
    """Named database connections for ``db_query`` nodes (``NEXUSFLOW_CONNECTION_<NAME>``)."""
    trusted_connections: frozenset[str] = frozenset()
    """Connections whose role may be privileged (``NEXUSFLOW_CONNECTION_<NAME>_TRUSTED=1``):
    a ``db_query`` node refuses a superuser or server-file role on any other."""
    allow_private_http: bool | None = None
    """Whether ``http`` nodes may reach loopback, private and link-local addresses
    (``NEXUSFLOW_ALLOW_PRIVATE_HTTP``). Unset (``None``): only in the single-user zero-config
    mode (both backends embedded, so no other user shares these workers); with configured
    backends, which several users may share, the default is to refuse. The worker that runs
    the node reads it from its own configuration; see ``allows_private_http``."""
    code_isolation: str = "auto"
    """How code runs: ``docker``, ``process``, ``none`` or ``auto`` (docker when it answers)."""
    secret_key: str | None = None
    """Key that encrypts stored secrets (``NEXUSFLOW_SECRET_KEY``)."""
    service_url: str | None = None
    """URL of the Nexus-Flow service (``NEXUSFLOW_SERVICE_URL``): notebooks and the CLI then
    reach runs through its API (no database, Redis or key here); ``None``: this process opens
    the backends itself."""
    service_token: str | None = None
    """Token for the service (``NEXUSFLOW_SERVICE_TOKEN``; on a JupyterHub the user's
    ``JUPYTERHUB_API_TOKEN`` when unset)."""
    public_url: str | None = None
    """The Jupyter server's URL as external systems reach it (``NEXUSFLOW_PUBLIC_URL``):
    ``resume_url()`` gives a wait node's callback URL under it (a path without it)."""
    ai_base_url: str | None = None
    """OpenAI-compatible endpoint (``NEXUSFLOW_AI_BASE_URL``, e.g. ``https://api.openai.com/v1``):
    the default ``base_url`` of ``ai`` nodes run by workers with these settings, and the model
    "describe a flow" asks (docs/ai.md)."""
    ai_model: str | None = None
    """Model that "describe a flow" asks (``NEXUSFLOW_AI_MODEL``)."""
    ai_key_secret: str | None = None
    """Name of the stored secret holding the API key "describe a flow" sends
    (``NEXUSFLOW_AI_KEY_SECRET``); unset: no key (a local server)."""

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Build settings from ``NEXUSFLOW_*`` environment variables, then ``overrides``."""
        env = os.environ
        prefix, trusted_suffix = "NEXUSFLOW_CONNECTION_", "_TRUSTED"
        connections = {
            key[len(prefix) :].lower(): value
            for key, value in env.items()
            if key.startswith(prefix) and not key.endswith(trusted_suffix) and value
        }
        trusted = frozenset(
            key[len(prefix) : -len(trusted_suffix)].lower()
            for key in env
            if key.startswith(prefix) and key.endswith(trusted_suffix)
            and _env_bool(key, False)
        )
        settings = cls(
            database_url=env.get("NEXUSFLOW_DATABASE_URL") or None,
            redis_url=env.get("NEXUSFLOW_REDIS_URL") or None,
            data_dir=default_data_dir(),
            queue_name=env.get("NEXUSFLOW_QUEUE") or defaults.QUEUE_NAME,
            sandbox_queue_name=env.get("NEXUSFLOW_SANDBOX_QUEUE") or defaults.SANDBOX_QUEUE_NAME,
            lease_s=_env_float("NEXUSFLOW_LEASE_S", defaults.LEASE_S),
            heartbeat_s=_env_float("NEXUSFLOW_HEARTBEAT_S", defaults.HEARTBEAT_S),
            reconcile_interval_s=_env_float(
                "NEXUSFLOW_RECONCILE_INTERVAL_S", defaults.RECONCILE_INTERVAL_S
            ),
            requeue_grace_s=_env_float("NEXUSFLOW_REQUEUE_GRACE_S", defaults.REQUEUE_GRACE_S),
            max_output_bytes=int(
                _env_float("NEXUSFLOW_MAX_OUTPUT_BYTES", defaults.MAX_OUTPUT_BYTES)
            ),
            io_slots=max(1, int(_env_float("NEXUSFLOW_IO_SLOTS", defaults.IO_SLOTS))),
            connections=connections,
            trusted_connections=trusted,
            allow_private_http=_env_choice("NEXUSFLOW_ALLOW_PRIVATE_HTTP"),
            code_isolation=env.get("NEXUSFLOW_CODE_ISOLATION") or "auto",
            secret_key=env.get("NEXUSFLOW_SECRET_KEY") or None,
            service_url=env.get("NEXUSFLOW_SERVICE_URL") or None,
            service_token=(env.get("NEXUSFLOW_SERVICE_TOKEN") or env.get("JUPYTERHUB_API_TOKEN")
                           or None),
            public_url=env.get("NEXUSFLOW_PUBLIC_URL") or None,
            ai_base_url=env.get("NEXUSFLOW_AI_BASE_URL") or None,
            ai_model=env.get("NEXUSFLOW_AI_MODEL") or None,
            ai_key_secret=env.get("NEXUSFLOW_AI_KEY_SECRET") or None,
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def embedded(self) -> bool:
        """Whether either backend falls back to the embedded services."""
        return self.database_url is None or self.redis_url is None

    def allows_private_http(self) -> bool:
        """Return whether http nodes run with these settings may reach private addresses.

        An explicit ``allow_private_http`` wins; unset, only the zero-config mode (no backend
        URL configured: private embedded services, one user) allows it. Resolving the
        backends (``services.resolve_backends``) pins the answer before it fills in the
        embedded services' URLs, so the workers it launches keep it.
        """
        if self.allow_private_http is not None:
            return self.allow_private_http
        return self.database_url is None and self.redis_url is None

    def to_env(self) -> dict[str, str]:
        """Return the ``NEXUSFLOW_*`` variables from which a child process rebuilds these
        settings with :meth:`from_env` (the one recipe for every process we launch)."""
        env = {
            "NEXUSFLOW_DATA_DIR": str(self.data_dir),
            "NEXUSFLOW_QUEUE": self.queue_name,
            "NEXUSFLOW_SANDBOX_QUEUE": self.sandbox_queue_name,
            "NEXUSFLOW_LEASE_S": repr(self.lease_s),
            "NEXUSFLOW_HEARTBEAT_S": repr(self.heartbeat_s),
            "NEXUSFLOW_RECONCILE_INTERVAL_S": repr(self.reconcile_interval_s),
            "NEXUSFLOW_REQUEUE_GRACE_S": repr(self.requeue_grace_s),
            "NEXUSFLOW_MAX_OUTPUT_BYTES": str(self.max_output_bytes),
            "NEXUSFLOW_IO_SLOTS": str(self.io_slots),
            "NEXUSFLOW_ALLOW_PRIVATE_HTTP": "1" if self.allows_private_http() else "0",
            "NEXUSFLOW_CODE_ISOLATION": self.code_isolation,
        }
        if self.database_url:
            env["NEXUSFLOW_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["NEXUSFLOW_REDIS_URL"] = self.redis_url
        if self.secret_key:
            env["NEXUSFLOW_SECRET_KEY"] = self.secret_key
        if self.service_url:  # the token is a user's credential: never handed on
            env["NEXUSFLOW_SERVICE_URL"] = self.service_url
        if self.public_url:
            env["NEXUSFLOW_PUBLIC_URL"] = self.public_url
        for name, value in (("NEXUSFLOW_AI_BASE_URL", self.ai_base_url),
                            ("NEXUSFLOW_AI_MODEL", self.ai_model),
                            ("NEXUSFLOW_AI_KEY_SECRET", self.ai_key_secret)):
            if value:
                env[name] = value
        for name, url in self.connections.items():
            env[f"NEXUSFLOW_CONNECTION_{name.upper()}"] = url
        for name in self.trusted_connections:
            env[f"NEXUSFLOW_CONNECTION_{name.upper()}_TRUSTED"] = "1"
        return env

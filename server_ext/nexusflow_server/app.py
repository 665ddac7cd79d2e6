"""The ``NexusFlow`` server extension app: configuration, lifecycle and background services."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, List, Set, Unicode, default

from nexusflow_kernel.settings import Settings, default_data_dir

from .rbac import ROLES

_TRUE = {"1", "true", "yes", "on"}

if TYPE_CHECKING:  # pragma: no cover
    from nexusflow_kernel.engine import Engine


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _env_bool(name: str, fallback: bool | None) -> bool | None:
    value = _env(name)
    return fallback if value is None else value.strip().lower() in _TRUE


def _env_num(name: str, fallback: float) -> float:
    value = _env(name)
    return fallback if value is None else float(value)


class NexusFlow(ExtensionApp):
    """Serve Nexus-Flow's REST API, event websockets, triggers and local workers."""

    name = "nexusflow"
    extension_url = "/nexusflow/api/openapi.json"
    load_other_extensions = True

    database_url = Unicode(
        None, allow_none=True, config=True,
        help="PostgreSQL URL of the metadata database (NEXUSFLOW_DATABASE_URL); "
        "unset: the embedded server.",
    )
    redis_url = Unicode(
        None, allow_none=True, config=True,
        help="Redis URL of the transport (NEXUSFLOW_REDIS_URL); unset: the embedded server.",
    )
    data_dir = Unicode(
        None, allow_none=True, config=True,
        help="Folder of the embedded services and local state (NEXUSFLOW_DATA_DIR).",
    )
    local_workers = Bool(
        None, allow_none=True, config=True,
        help="Start and supervise `nexusflow worker` processes with the server "
        "(NEXUSFLOW_LOCAL_WORKERS); default: on when the embedded services are used.",
    )
    local_worker_processes = Int(
        config=True,
        help="Processes of the supervised local worker (NEXUSFLOW_LOCAL_WORKER_PROCESSES).",
    )
    worker_command = List(
        Unicode(), config=True,
        help="Command that starts the local worker; default: this Python's "
        "`-m nexusflow_worker --processes N --queues default,sandbox` (every queue a flow "
        "may need).",
    )
    worker_restart_backoff_s = Float(
        1.0, config=True, help="First delay before a dead worker restarts."
    )
    secret_key = Unicode(
        None, allow_none=True, config=True,
        help="Key that encrypts stored secrets (NEXUSFLOW_SECRET_KEY); unset: a key generated "
        "into the data folder.",
    )
    allow_private_http = Bool(
        None, allow_none=True, config=True,
        help="Whether http nodes may reach private and loopback addresses "
        "(NEXUSFLOW_ALLOW_PRIVATE_HTTP); default: only with the embedded services. Passed to "
        "the workers this server supervises; shared workers read their own setting.",
    )
    ai_base_url = Unicode(
        None, allow_none=True, config=True,
        help="OpenAI-compatible endpoint that 'describe a flow' asks, and the default base_url "
        "of ai nodes on the workers this server supervises (NEXUSFLOW_AI_BASE_URL), e.g. "
        "https://api.openai.com/v1 or http://127.0.0.1:11434/v1 (docs/ai.md).",
    )
    ai_model = Unicode(
        None, allow_none=True, config=True,
        help="Model that 'describe a flow' asks (NEXUSFLOW_AI_MODEL).",
    )
    ai_key_secret = Unicode(
        None, allow_none=True, config=True,
        help="Name of the stored (unscoped) secret holding the API key 'describe a flow' sends "
        "(NEXUSFLOW_AI_KEY_SECRET); unset: no key. The browser never sends a key.",
    )
    default_role = Enum(
        ["none", *ROLES], config=True,
        help="Role every user has on a workflow without an explicit grant "
        "(NEXUSFLOW_DEFAULT_ROLE). "
        "'owner' suits a single-user server; set 'none' or 'viewer' on a shared one.",
    )
    admin_users = Set(Unicode(), config=True, help="Users who are owners of every workflow.")
    file_owner = Unicode(
        config=True,
        help="Whose files this server serves (default: the Hub user JUPYTERHUB_USER, else the "
        "OS user): a run started from a path is filed under this owner and the file's absolute "
        "path, and this user counts as the owner of those workflows.",
    )
    max_request_bytes = Int(
        config=True, help="Largest JSON request body of the REST API (NEXUSFLOW_MAX_REQUEST_BYTES)."
    )
    webhook_max_body_bytes = Int(
        config=True, help="Default body limit of a webhook (NEXUSFLOW_WEBHOOK_MAX_BODY_BYTES)."
    )
    webhook_rate_limit = Int(
        config=True,
        help="Default requests per window of one webhook (NEXUSFLOW_WEBHOOK_RATE_LIMIT).",
    )
    webhook_rate_window_s = Int(60, config=True, help="Default rate-limit window of a webhook.")
    webhook_ip_rate_limit = Int(
        config=True, help="Requests per minute one client address may send to all webhooks."
    )
    webhook_rate_limit_fail_open = Bool(
        False, config=True,
        help="Accept webhook requests when Redis cannot decide the rate limit (default: 503).",
    )
    webhook_tolerance_s = Int(300, config=True, help="Accepted clock skew of a signed webhook.")
    webhook_max_wait_s = Float(
        30.0, config=True, help="Longest a webhook caller may wait for the result."
    )
    triggers = Bool(
        True, config=True, help="Run the schedule and queue-trigger loops in this server."
    )
    trigger_poll_s = Float(
        1.0, config=True, help="How often schedules and queue triggers are polled."
    )
    misfire_grace_s = Float(
        60.0, config=True,
        help="A schedule's firing found later than this after its time (no service was "
        "running) is missed: its schedule's misfire policy (skip or catch_up) decides.",
    )
    retention_days = Int(
        config=True,
        help="Delete runs that ended more than this many days ago, with their outputs and "
        "logs, once a day (NEXUSFLOW_RETENTION_DAYS; 0: keep everything). One replica of the "
        "service prunes per day, in batches (`nexusflow prune` does the same by hand).",
    )
    retention_interval_s = Float(
        86400.0, config=True, help="How often the retention pass runs (retention_days)."
    )
    retention_check_s = Float(
        60.0, config=True, help="How often a replica checks whether the retention pass is due."
    )
    waiting_poll_s = Float(
        2.0, config=True,
        help="How often running runs are checked for queued nodes no live worker serves.",
    )
    queue_claim_idle_s = Float(
        60.0, config=True,
        help="After this long unacknowledged, a queue message of a dead consumer is taken over.",
    )
    server_id = Unicode(
        config=True, help="Name of this server among several (queue consumer name)."
    )
    service_url = Unicode(
        None, allow_none=True, config=True,
        help="URL of the Nexus-Flow service (NEXUSFLOW_SERVICE_URL). When set, this server "
        "opens no backend and holds no secrets key: the API is forwarded to the service with "
        "each caller's own token (on a JupyterHub, their Hub token), runs of a file send the "
        "flow as this server reads it, and the service runs the triggers.",
    )
    service_token = Unicode(
        None, allow_none=True, config=True,
        help="Token for the service when the caller has none of their own (not on a Hub): "
        "NEXUSFLOW_SERVICE_TOKEN.",
    )

    metrics_token = Unicode(
        None, allow_none=True, config=True,
        help="Token that may read GET <base>/nexusflow/metrics (NEXUSFLOW_METRICS_TOKEN), as "
        "'Authorization: Bearer <token>' (Prometheus's credentials); administrators' own "
        "tokens may too.",
    )

    @default("metrics_token")
    def _default_metrics_token(self) -> str | None:
        return _env("NEXUSFLOW_METRICS_TOKEN")

    @default("service_url")
    def _default_service_url(self) -> str | None:
        return _env("NEXUSFLOW_SERVICE_URL")

    @default("service_token")
    def _default_service_token(self) -> str | None:
        return _env("NEXUSFLOW_SERVICE_TOKEN")

    @property
    def remote(self) -> bool:
        """Whether this server forwards to the Nexus-Flow service (``service_url``)."""
        return bool(self.service_url)

    @default("local_worker_processes")
    def _default_processes(self) -> int:
        return int(_env_num("NEXUSFLOW_LOCAL_WORKER_PROCESSES", 2))

    @default("retention_days")
    def _default_retention_days(self) -> int:
        return int(_env_num("NEXUSFLOW_RETENTION_DAYS", 0))

    @default("default_role")
    def _default_default_role(self) -> str:
        return _env("NEXUSFLOW_DEFAULT_ROLE") or "owner"

    @default("max_request_bytes")
    def _default_max_request(self) -> int:
        return int(_env_num("NEXUSFLOW_MAX_REQUEST_BYTES", 40 * 1024 * 1024))

    @default("webhook_max_body_bytes")
    def _default_hook_body(self) -> int:
        return int(_env_num("NEXUSFLOW_WEBHOOK_MAX_BODY_BYTES", 1024 * 1024))

    @default("webhook_rate_limit")
    def _default_hook_rate(self) -> int:
        return int(_env_num("NEXUSFLOW_WEBHOOK_RATE_LIMIT", 60))

    @default("webhook_ip_rate_limit")
    def _default_ip_rate(self) -> int:
        return int(_env_num("NEXUSFLOW_WEBHOOK_IP_RATE_LIMIT", 600))

    @default("file_owner")
    def _default_file_owner(self) -> str:
        from nexusflow_kernel.engine import local_owner

        return local_owner()

    @default("server_id")
    def _default_server_id(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    # ------------------------------------------------------------------ settings and engine

    def engine_settings(self) -> Settings:
        """Return the engine ``Settings``: environment first, then the traitlets set here."""
        base = Settings.from_env()
        overrides: dict[str, Any] = {
            "database_url": self.database_url or _env("NEXUSFLOW_DATABASE_URL"),
            "redis_url": self.redis_url or _env("NEXUSFLOW_REDIS_URL"),
            "data_dir": Path(self.data_dir) if self.data_dir else default_data_dir(),
            "secret_key": self.secret_key or base.secret_key,
            "allow_private_http": (
                base.allow_private_http if self.allow_private_http is None
                else self.allow_private_http
            ),
            "ai_base_url": self.ai_base_url or base.ai_base_url,
            "ai_model": self.ai_model or base.ai_model,
            "ai_key_secret": self.ai_key_secret or base.ai_key_secret,
        }
        return replace(base, **overrides)

    def initialize_settings(self) -> None:
        self.settings_model = self.engine_settings()
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._store: Any = None
        self._secrets: Any = None
        self._limiter: Any = None
        self.trigger_loops: Any = None
        self.api_executor = ThreadPoolExecutor(32, thread_name_prefix="nexusflow-api")
        self.stream_executor = ThreadPoolExecutor(256, thread_name_prefix="nexusflow-stream")
        self._tasks: list[asyncio.Task[Any]] = []
        self.supervisor: Any = None
        self.service: Any = None
        self._metrics: Any = None
        self.stopping = threading.Event()

    def initialize_handlers(self) -> None:
        if self.remote:
            from .forward import forward_handlers

            self.handlers.extend(forward_handlers())
            return
        from .routes import handlers

        self.handlers.extend(handlers())

    def service_client(self) -> Any:
        """Return the client of the Nexus-Flow service (``service_url``), made on first use."""
        if self.service is None:
            from .forward import ServiceClient

            self.service = ServiceClient(
                self.service_url or "", token=self.service_token,
                server_token=_env("JUPYTERHUB_API_TOKEN") or self.service_token)
        return self.service

    def engine(self) -> Engine:
        """Return the engine, created on first use (blocking: call from a worker thread)."""
        if self.remote:
            from nexusflow_kernel.errors import BackendUnavailable

            raise BackendUnavailable("this server forwards to the Nexus-Flow service "
                                     f"({self.service_url}) and opens no backend")
        with self._engine_lock:
            if self._engine is None:
                from nexusflow_kernel.engine import Engine

                self._engine = Engine(self.settings_model)
                self.settings_model = self._engine.settings
            return self._engine

    def store(self) -> Any:
        """Return the server tables' store (roles, triggers, audit) on the engine's database."""
        if self._store is None:
            from nexusflow_kernel.runstate.db import get_pool

            from .store import ServerStore

            url = self.engine().settings.database_url
            self._store = ServerStore(get_pool(url), self.secrets())
        return self._store

    def secrets(self) -> Any:
        """Return the secret store (same database and key as the workers)."""
        if self._secrets is None:
            from nexusflow_kernel.runstate.db import get_pool
            from nexusflow_kernel.secrets import SecretStore

            settings = self.engine().settings
            self._secrets = SecretStore(get_pool(settings.database_url), settings=settings)
        return self._secrets

    def connections(self) -> Any:
        """Return the connection store (the secret store's database and key)."""
        from nexusflow_kernel.connections import ConnectionStore

        store = self.secrets()
        return ConnectionStore(store._pool, secrets=store)

    def metrics(self) -> Any:
        """Return this app's Prometheus metrics (``metrics.ServiceMetrics``)."""
        if self._metrics is None:
            with self._engine_lock:
                if self._metrics is None:
                    from .metrics import ServiceMetrics

                    self._metrics = ServiceMetrics(self)
        return self._metrics

    def rate_limiter(self) -> Any:
        """Return the webhook rate limiter on the engine's Redis."""
        if self._limiter is None:
            from .ratelimit import RateLimiter

            self._limiter = RateLimiter(self.engine().redis)
        return self._limiter

    async def run_sync(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call in the API thread pool (never on the IO loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.api_executor, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ lifecycle

    def _want_local_workers(self) -> bool:
        flag = self.local_workers
        if flag is None:
            flag = _env_bool("NEXUSFLOW_LOCAL_WORKERS", None)
        if flag is None:
            flag = self.engine_settings().embedded
        return bool(flag)

    def worker_argv(self) -> list[str]:
        """Return the command line of the supervised local worker."""
        if self.worker_command:
            return list(self.worker_command)
        from nexusflow_kernel.workers import worker_argv

        return worker_argv(self.local_worker_processes, queues=("default", "sandbox"))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.ready = asyncio.Event()
        if self.remote:
            self.log.info("Nexus-Flow: forwarding to the service at %s", self.service_url)
            self.ready.set()
            return
        self._tasks.append(asyncio.create_task(self._start_background()))

    async def _start_background(self) -> None:
        """Create the engine, then start the local workers and the trigger loops."""
        try:
            await self.run_sync(self.engine)
        except Exception as exc:  # the API answers 503 until the backends are reachable
            self.log.error("Nexus-Flow engine unavailable: %s", exc)
            self.ready.set()
            return
        if self._want_local_workers():
            from nexusflow_kernel.workers import worker_env

            from .supervisor import WorkerSupervisor

            env = worker_env(self.engine().settings)
            self.supervisor = WorkerSupervisor(
                self.worker_argv(), env, self.log, backoff_s=self.worker_restart_backoff_s
            )
            self.supervisor.start()
            self.log.info("Nexus-Flow: supervising local worker: %s", " ".join(self.worker_argv()))
        if self.triggers:
            from .triggers import TriggerLoops

            self.trigger_loops = TriggerLoops(self)
            self._tasks.append(asyncio.create_task(self.trigger_loops.run()))
        self._tasks.append(asyncio.create_task(self._report_waiting()))
        if self.retention_days > 0:
            self._tasks.append(asyncio.create_task(self._retention()))
        self.ready.set()

    def retention_pass(self) -> dict[str, Any] | None:
        """Prune runs older than ``retention_days`` if no replica did in the last interval;
        return what was deleted (``None``: not this replica's turn). Blocking."""
        from datetime import timedelta

        from nexusflow_kernel.retention import claim_pass, prune, record_pass

        engine = self.engine()
        if not claim_pass(engine.pool, "prune", self.retention_interval_s, self.server_id):
            return None
        result = prune(engine.pool, timedelta(days=self.retention_days), redis=engine.redis,
                       pause_s=0.05).as_dict()
        record_pass(engine.pool, "prune", result)
        self.log.info("Nexus-Flow retention: deleted %d run(s) that ended before %s",
                      result["runs"], result["cutoff"])
        return result

    async def _retention(self) -> None:
        """Run the retention pass once a day (one replica per interval)."""
        while not self.stopping.is_set():
            try:
                await self.run_sync(self.retention_pass)
            except Exception as exc:  # an outage: the next check tries again
                self.log.warning("Nexus-Flow retention pass failed: %s", exc)
            await asyncio.sleep(self.retention_check_s)

    async def _report_waiting(self) -> None:
        """Say, in the run's event stream, when a queued node has no live worker to take it
        (``Engine.report_waiting``): the canvas shows the sentence on the node."""
        while not self.stopping.is_set():
            try:
                await self.run_sync(self.engine().report_waiting)
            except Exception as exc:  # Redis or PostgreSQL away: the next pass tries again
                self.log.debug("Nexus-Flow: waiting report failed: %s", exc)
            await asyncio.sleep(self.waiting_poll_s)

    async def stop_extension(self) -> None:
        self.stopping.set()
        if self.supervisor is not None:
            await self.supervisor.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.service is not None:
            await self.service.close()
        self.api_executor.shutdown(wait=False, cancel_futures=True)
        self.stream_executor.shutdown(wait=False, cancel_futures=True)
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)

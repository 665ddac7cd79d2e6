"""The ``code`` node type: Python or bash written by the flow's author, run in the sandbox.

Importing this module never imports the Docker SDK: the node registry loads it in every
process, the Jupyter server included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nexusflow_kernel.errors import NodeExecutionError
from nexusflow_kernel.nodes.base import NodeContext, NodeType

from .protocol import MAX_RUN_S, Limits

SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 256
DEFAULT_CPUS = 1.0


class CodeNode(NodeType):
    """Run Python or bash in the sandbox; inputs arrive as JSON, the output leaves as JSON."""

    name = "code"
    title = "Code"
    description = (
        "Python or bash in an isolated container: no network, read-only root, resource limits. "
        "Gets {inputs, params, env} as JSON; returns JSON."
    )
    category = "advanced"
    icon = "</>"
    queue = "sandbox"
    effectful = True
    runs_code = True
    template_exempt: ClassVar[tuple[str, ...]] = ("source",)
    """Code is never a template: a run input would become code (the code gets them as JSON)."""
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["language", "source"],
        "additionalProperties": False,
        "properties": {
            "language": {
                "type": "string",
                "enum": ["python", "bash"],
                "default": "python",
                "title": "Language",
            },
            "source": {
                "type": "string",
                "title": "Code",
                "description": "Python: define main(inputs, params) or set `output`; the "
                "environment's variables are the dict `env`. Bash: read JSON ({inputs, params, "
                "env}) on stdin, print the JSON output as the last stdout line.",
                "maxLength": 1_000_000,
            },
            "image": {
                "type": "string",
                "title": "Image",
                "description": "A local image built FROM the sandbox image, named "
                "nexusflow-sandbox<suffix>:<tag> (default: the sandbox image of this release).",
                "pattern": r"^nexusflow-sandbox[A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$",
                "maxLength": 256,
            },
            "timeout_s": {
                "type": "number",
                "title": "Timeout (s)",
                "exclusiveMinimum": 0,
                "maximum": MAX_RUN_S,
                "default": DEFAULT_TIMEOUT_S,
            },
            "memory_mb": {
                "type": "integer",
                "title": "Memory (MB)",
                "minimum": 16,
                "maximum": 65536,
                "default": DEFAULT_MEMORY_MB,
            },
            "cpus": {
                "type": "number",
                "title": "CPUs",
                "exclusiveMinimum": 0,
                "maximum": 64,
                "default": DEFAULT_CPUS,
            },
            "secrets": {
                "type": "array",
                "title": "Secrets",
                "description": "Names of the secrets the code may read, as environment "
                "variables of the same name.",
                "items": {"type": "string", "pattern": SECRET_NAME, "maxLength": 128},
                "uniqueItems": True,
                "default": [],
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Reject Python that does not compile and empty bash scripts."""
        source = config.get("source")
        if not isinstance(source, str):
            return []
        if config.get("language", "python") == "bash":
            return [] if source.strip() else [("/source", "the bash script is empty")]
        try:
            compile(source, "<code>", "exec")
        except SyntaxError as exc:
            return [("/source", f"Python does not compile: line {exc.lineno}: {exc.msg}")]
        except ValueError as exc:  # NUL bytes
            return [("/source", f"Python does not compile: {exc}")]
        return []

    def secret_names(self, config: Mapping[str, Any]) -> set[str]:
        """Add the declared ``secrets`` (read through ``ctx.secrets``) to the references."""
        names = config.get("secrets") or []
        return super().secret_names(config) | {n for n in names if isinstance(n, str)}

    def run(self, ctx: NodeContext) -> Any:
        """Run the code under the configured isolation policy and return its JSON output.

        The worker masks the declared secrets' values in the logs, output and error it records
        (one masking path for the whole run: ``nexusflow_kernel.masking``).
        """
        from .isolation import run_isolated

        config = ctx.config
        limits = Limits(
            timeout_s=ctx.remaining(float(config.get("timeout_s", DEFAULT_TIMEOUT_S))),
            memory_mb=int(config.get("memory_mb", DEFAULT_MEMORY_MB)),
            cpus=float(config.get("cpus", DEFAULT_CPUS)),
            max_output_bytes=int(ctx.settings.max_output_bytes),
        )
        env = self._secrets(ctx, list(config.get("secrets") or []))
        labels = {
            "nexusflow.run": ctx.run_id,
            "nexusflow.node": ctx.node_id,
            "nexusflow.attempt": str(ctx.attempt),
        }
        try:
            output, logs = run_isolated(
                config.get("language", "python"),
                config["source"],
                # env: the variables of the run's environment (env['NAME'] in expressions)
                {"inputs": ctx.inputs, "params": ctx.params, "env": dict(ctx.env or {})},
                policy=ctx.settings.code_isolation,
                limits=limits,
                env=env,
                labels=labels,
                image=config.get("image") or None,
            )
        except NodeExecutionError as exc:
            for line in getattr(exc, "logs", []):
                ctx.log.write(line)
            raise
        for line in logs:
            ctx.log.write(line)
        return output

    @staticmethod
    def _secrets(ctx: NodeContext, names: list[str]) -> dict[str, str]:
        """Resolve the declared secrets through the engine's ``ctx.secrets``."""
        if not names:
            return {}
        if ctx.secrets is None:
            raise NodeExecutionError(
                f"node {ctx.node_id} declares secrets ({', '.join(names)}) but this worker has "
                "no secret store",
                retryable=False,
            )
        env: dict[str, str] = {}
        for name in names:
            try:
                value = ctx.secrets(name)
            except Exception as exc:
                raise NodeExecutionError(
                    f"secret {name!r} of node {ctx.node_id} cannot be read: {exc}",
                    retryable=False,
                ) from None
            if value is None:
                raise NodeExecutionError(
                    f"secret {name!r} of node {ctx.node_id} is not defined", retryable=False
                )
            env[name] = str(value)
        return env

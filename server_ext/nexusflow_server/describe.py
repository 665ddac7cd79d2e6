"""REST handler of "describe a flow": the server asks its configured model for a flow.

The endpoint, the model and the key (a stored secret named in the server's configuration)
are the server's: the browser sends words, never a key or a URL. The answer is a proposal
the canvas shows; nothing is saved or run here.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized

from nexusflow_kernel.errors import NodeExecutionError

from .base import BadRequest, NexusFlowHandler, field


class ModelUnavailable(BadRequest):
    """The configured model could not be asked (unreachable, an error status, a timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=502)


class DescribeHandler(NexusFlowHandler):
    auth_resource = "nexusflow:workflows"

    @authorized
    async def get(self) -> None:
        """Say whether a model is configured, and which (never the key)."""
        from nexusflow_kernel.describe import describe_info

        self.reply(describe_info(self.nf.settings_model))

    @authorized
    async def post(self) -> None:
        from nexusflow_kernel.describe import MAX_REQUEST_CHARS, AiNotConfigured

        body = self.body()
        text = field(body, "text", str, required=True)
        name = field(body, "name", str)
        if not text.strip():
            raise BadRequest("describe the flow you want: 'text' is empty", "/text")
        if len(text) > MAX_REQUEST_CHARS:
            raise BadRequest(f"'text' is {len(text)} characters, over the limit of "
                             f"{MAX_REQUEST_CHARS}", "/text", status=413)
        if name is not None and len(name) > 200:
            raise BadRequest("'name' may have at most 200 characters", "/name")
        try:
            proposal = await self.engine_do(lambda e: e.describe_flow(text, name=name))
        except AiNotConfigured as exc:
            raise BadRequest(str(exc)) from None
        except NodeExecutionError as exc:  # the chat client: the key is scrubbed already
            raise ModelUnavailable(f"the model could not be asked: {exc}") from None
        await self.audit("flow.describe", "describe", model=proposal["model"],
                         attempts=proposal["attempts"],
                         nodes=len(proposal["flow"].get("nodes") or []))
        self.reply(proposal)

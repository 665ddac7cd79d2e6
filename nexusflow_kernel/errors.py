"""Exceptions raised by Nexus-Flow.

The hierarchy::

    NexusFlowError                    every error Nexus-Flow raises on purpose
     ├── FlowError                    the flow document is not runnable; names the place
     │    ├── FlowSyntaxError         malformed JSON
     │    ├── FlowSchemaError         a field breaks the JSON Schema
     │    ├── FlowLimitError          over the size, node-count or nesting limits
     │    ├── DuplicateIdError        two nodes or two edges share an id
     │    ├── DanglingEdgeError       an edge names a node that does not exist
     │    ├── CycleError              the graph has a cycle (listed)
     │    ├── UnknownNodeTypeError    a node type that is not in the registry
     │    ├── NodeConfigError         a node's config is wrong for its type
     │    └── DescribeError           a model's answer to "describe a flow" is not a runnable flow
     ├── ExpressionError              an expression does not parse or raises
     ├── NodeExecutionError           a node failed while running
     │    └── NodeTimeoutError        a node ran past its timeout
     ├── BackendUnavailable           PostgreSQL or Redis cannot be reached
     ├── NotFoundError                no such run, workflow or node
     ├── RunStateError                the run is not in a state that allows this
     ├── ServiceError                 the embedded services failed to start or stop
     ├── AuthenticationError          the Nexus-Flow service did not accept the credentials
     └── PermissionDenied             the action is refused (a role, an approval's approvers)

    WorkerShutdown (BaseException)    a stop request; ``except Exception`` cannot swallow it

Every message is one sentence that says what is wrong and where.
"""

from __future__ import annotations

from typing import Any


class NexusFlowError(Exception):
    """Base class of every error Nexus-Flow raises on purpose."""

    def __str__(self) -> str:  # one line, always
        return " ".join(super().__str__().split())


class FlowError(NexusFlowError):
    """The flow document cannot be run; ``pointer`` is the JSON pointer of the fault."""

    def __init__(self, message: str, pointer: str = "", *, source: str | None = None) -> None:
        self.pointer = pointer
        self.source = source
        where = f"{source or 'flow'}{' at ' + pointer if pointer else ''}"
        self.message = message
        super().__init__(f"{where}: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description (for HTTP error bodies and ``--json`` output)."""
        return {"error": type(self).__name__, "message": self.message, "pointer": self.pointer}


class FlowSyntaxError(FlowError):
    """The document is not valid JSON."""


class FlowSchemaError(FlowError):
    """A field of the document breaks the flow JSON Schema."""


class FlowLimitError(FlowError):
    """The document is over a size, count or nesting limit."""


class DuplicateIdError(FlowError):
    """Two nodes or two edges share an id."""


class DanglingEdgeError(FlowError):
    """An edge refers to a node that does not exist, or to a handle the node lacks."""


class CycleError(FlowError):
    """The graph has a cycle; ``cycle`` lists its node ids, first repeated at the end, and
    ``edge`` is the id of the edge that closes it (the one ``pointer`` names)."""

    def __init__(self, cycle: list[str], pointer: str = "/edges", *, source: str | None = None,
                 edge: str | None = None):
        self.cycle = cycle
        self.edge = edge
        closes = f" (closed by edge {edge!r})" if edge is not None else ""
        super().__init__("cycle " + " -> ".join(cycle) + closes, pointer, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "cycle": self.cycle, "edge": self.edge}


class UnknownNodeTypeError(FlowError):
    """A node names a type that is not in the node registry."""


class NodeConfigError(FlowError):
    """A node's config does not fit its type's config schema."""


class ExpressionError(NexusFlowError):
    """An expression or ``{{ template }}`` failed to parse or to evaluate."""


class DescribeError(FlowError):
    """The model's answer to "describe a flow" is not a runnable flow, even after it was shown
    the compiler's error once. ``answer`` is its last answer (text), ``attempts`` each answer's
    fault (``{"message", "pointer"}``); nothing of the answer is applied."""

    def __init__(self, message: str, pointer: str = "", *, answer: str = "",
                 attempts: list[dict[str, str]] | None = None) -> None:
        self.answer = answer
        self.attempts = attempts or []
        super().__init__(message, pointer, source="model answer")

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "answer": self.answer, "attempts": self.attempts}


class NodeExecutionError(NexusFlowError):
    """A node failed while running; ``retryable`` says whether another attempt may help.

    ``retry_after`` (seconds) is the least the next attempt must wait, when the other side
    said so (an HTTP ``Retry-After``); the worker waits at least that long, within the node's
    ``retry.max_backoff_s``.
    """

    def __init__(self, message: str, *, retryable: bool = True,
                 retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class NodeTimeoutError(NodeExecutionError):
    """A node ran past its ``timeout_s``."""


class BackendUnavailable(NexusFlowError):
    """PostgreSQL or Redis cannot be reached (the URL in the message has its password masked)."""


class ParamValueError(NexusFlowError):
    """A run's input is not one of the values its param allows (its ``enum``)."""

    def __init__(self, message: str, pointer: str = "") -> None:
        self.pointer = pointer
        super().__init__(message)


class NotFoundError(NexusFlowError):
    """No such run, workflow, version or node."""


class RunStateError(NexusFlowError):
    """The run is not in a state that allows the requested action."""


class ServiceError(NexusFlowError):
    """An embedded service failed to start, stop or answer."""


class AuthenticationError(NexusFlowError):
    """The Nexus-Flow service did not accept the token (missing, unknown, revoked, expired)."""


class PermissionDenied(NexusFlowError):
    """The action is refused: the user's role does not allow it (the Nexus-Flow service), or
    the user is not among an approval node's approvers."""


class WorkerShutdown(BaseException):
    """Ask a worker to stop; derives from BaseException so ``except Exception`` lets it pass."""


__all__ = [
    "AuthenticationError",
    "BackendUnavailable",
    "CycleError",
    "DanglingEdgeError",
    "DescribeError",
    "DuplicateIdError",
    "ExpressionError",
    "FlowError",
    "FlowLimitError",
    "FlowSchemaError",
    "FlowSyntaxError",
    "NexusFlowError",
    "NodeConfigError",
    "NodeExecutionError",
    "NodeTimeoutError",
    "NotFoundError",
    "ParamValueError",
    "PermissionDenied",
    "RunStateError",
    "ServiceError",
    "UnknownNodeTypeError",
    "WorkerShutdown",
]

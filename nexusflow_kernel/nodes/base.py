"""The node type contract: what a node type declares and what it gets when it runs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..settings import Settings


@dataclass(frozen=True)
class Defer:
    """Returned by a node that must wait: the worker lets go and the node resumes at ``until``.

    ``until`` is a UNIX timestamp. The wait goes through the supervisor's timer; no worker sleeps.
    ``state`` is kept with the node and handed back as ``NodeContext.resume_state``.
    """

    until: float
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Returned by a node that waits for something outside the workers: the node becomes
    ``waiting``, holding no worker and no lease, until the run state resolves it.

    ``kind`` says what resolves it: ``subflow`` (the child run it starts ends), ``approval``
    (a person decides), ``resume`` (an external system calls its resume URL). ``state`` is kept
    with the node (``NodeContext.resume_state``); ``until`` is a UNIX time after which the
    node runs again with that state, to fail with its timeout (``None``: no timeout).
    """

    kind: str
    state: dict[str, Any] = field(default_factory=dict)
    until: float | None = None


class NodeLog:
    """Collects a node attempt's log lines (stored with the attempt, masked for secrets).

    ``mask`` (the worker's masker of the run) is applied to each write before it is split
    into stamped lines, so a value that spans lines (a PEM key) is masked whole. Text that
    arrives in pieces (a model's answer, token by token) goes through ``stream``: the pieces
    form one stamped block, masked whole when it closes (at the next ``write`` or ``text``),
    so a secret cut across two pieces is still masked. ``live`` (set by the worker) is told
    after each write, so a running node's log can be shown while it grows.
    """

    def __init__(self, limit: int = 256 * 1024,
                 mask: Callable[[str], str] | None = None) -> None:
        self.lines: list[str] = []
        self._size = 0
        self._limit = limit
        self._cut = False
        self.mask = mask
        self.live: Callable[[NodeLog], None] | None = None
        self._open: list[str] = []  # pieces of the streamed block, as they came
        self._open_size = 0
        self._open_stamp = ""

    def __call__(self, message: str, *args: Any) -> None:
        self.write(message % args if args else message)

    def write(self, text: str) -> None:
        self._close()
        self._add(str(text), time.strftime("%H:%M:%S"))
        self._tell()

    def stream(self, piece: str) -> None:
        """Append ``piece`` to the open streamed block (opened by the first piece)."""
        if not piece:
            return
        if not self._open:
            self._open_stamp = time.strftime("%H:%M:%S")
        room = self._limit - self._size - self._open_size
        if room <= 0:
            return
        self._open.append(piece[:room])
        self._open_size += min(len(piece), room)
        self._tell()

    def end_stream(self) -> None:
        """Close the open streamed block (its lines join the log)."""
        self._close()

    def text(self) -> str:
        """Return the log so far, the open streamed block included."""
        if not self._open:
            return "\n".join(self.lines)
        return "\n".join([*self.lines, *self._stamped(self._masked("".join(self._open)),
                                                      self._open_stamp)])

    def _close(self) -> None:
        if self._open:
            block, self._open, self._open_size = "".join(self._open), [], 0
            self._add(block, self._open_stamp)

    def _masked(self, text: str) -> str:
        return self.mask(text) if self.mask is not None else text

    @staticmethod
    def _stamped(text: str, stamp: str) -> list[str]:
        return [f"{stamp} {line}" for line in text.splitlines() or [""]]

    def _add(self, text: str, stamp: str) -> None:
        for stamped in self._stamped(self._masked(text), stamp):
            if self._size + len(stamped) > self._limit:
                if not self._cut:
                    self.lines.append("[log cut: over the size limit]")
                    self._cut = True
                return
            self._size += len(stamped) + 1
            self.lines.append(stamped)

    def _tell(self) -> None:
        if self.live is not None:
            self.live(self)


@dataclass
class NodeContext:
    """Everything a node type's ``run`` gets: its config, upstream outputs and run params."""

    run_id: str
    node_id: str
    attempt: int
    config: dict[str, Any]
    """The node's config with ``{{ }}`` templates rendered and secrets resolved."""
    inputs: dict[str, Any]
    """Outputs of the node's direct parents, by parent node id."""
    params: dict[str, Any]
    """The run's inputs."""
    settings: Settings
    log: NodeLog = field(default_factory=NodeLog)
    deadline: float | None = None
    """``time.time()`` after which the attempt is over (the node's ``timeout_s``)."""
    timeout_s: float | None = None
    """The node's own ``timeout_s`` as written (``deadline`` is what is left of it once the
    worker has rendered the config), for messages that name it."""
    resume_state: dict[str, Any] | None = None
    """State saved by a previous ``Defer`` of this node, or ``None`` on a first start."""
    secrets: Callable[[str], str] | None = None
    connections: Callable[[str], Any] | None = None
    """Return a stored connection (``connections.Connection``: ``kind``, ``url``, ``headers``,
    ``trusted``) in the run's environment; its values are masked in the record. ``None``:
    no store (``db_query`` then reads ``NEXUSFLOW_CONNECTION_<NAME>`` only)."""
    env: dict[str, Any] = field(default_factory=dict)
    """The variables of the run's environment (``env['NAME']`` in expressions)."""
    resume_token: Callable[[str], str] | None = None
    """Return the resume token of a ``wait`` node of this run (``None``: no secrets key)."""
    names: dict[str, Any] = field(default_factory=dict)
    """More names for the node's expressions and templates: a map item's ``item`` and
    ``index`` (``inputs`` and ``params`` are always there)."""

    @property
    def idempotency_key(self) -> str:
        """Return the key that stays the same across every attempt of this node in this run
        (of this item, for a map item)."""
        if "index" in self.names:
            return f"{self.run_id}:{self.node_id}:{self.names['index']}"
        return f"{self.run_id}:{self.node_id}"

    def remaining(self, default: float) -> float:
        """Return the seconds left before the deadline (``default`` when there is none)."""
        if self.deadline is None:
            return default
        return max(0.001, min(default, self.deadline - time.time()))


class NodeType:
    """Base of every node type. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    """The ``type`` string used in flow documents."""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    category: ClassVar[str] = "core"
    """The palette group the type is listed under."""
    icon: ClassVar[str] = ""
    """Shown in the palette, the inspector and on the node: an emoji or a symbol (at most 8
    characters), or a ``data:image/svg+xml;base64,...`` / ``data:image/png;base64,...`` URI."""
    docs_url: ClassVar[str] = ""
    """An http(s) address of the type's documentation, linked from the palette and inspector."""
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    """JSON Schema of the node's ``config``; the canvas inspector is generated from it."""
    output_handles: ClassVar[tuple[str, ...]] = ()
    """Named output handles (a Condition has ``true`` and ``false``); empty means one output."""
    template_exempt: ClassVar[tuple[str, ...]] = ()
    """Config keys that hold expressions themselves and are not rendered as templates."""
    queue: ClassVar[str] = "default"
    """``default`` or ``sandbox``: which RQ queue runs this type."""
    effectful: ClassVar[bool] = False
    """Whether the node acts on the outside world (it gets an idempotency key to pass on)."""
    subflow_key: ClassVar[str | None] = None
    """The config key that names another flow to run (a ``.nxflow`` path or a workflow
    reference); the engine resolves and pins it when the run starts."""
    runs_code: ClassVar[bool] = False
    """Whether the node runs user code under the workers' code isolation (``code``, ``@task``):
    a run checks that the workers serving its queue can run code before it starts."""
    io_bound: ClassVar[bool] = False
    """Whether an attempt mostly waits on the network or another server (HTTP, SQL): a worker
    runs such map items concurrently in threads instead of one after another."""
    map_item: ClassVar[bool] = True
    """Whether a map node may run this type once per item (not a map itself, nor a type that
    waits without a worker)."""

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Return ``(pointer inside config, message)`` for faults the schema cannot see."""
        return []

    def secret_names(self, config: Mapping[str, Any]) -> set[str]:
        """Return the names of the secrets a node of this type may resolve with ``config``.

        The worker masks their values in everything the run records. The default finds the
        ``{"$secret": NAME}`` references; a type that asks ``ctx.secrets`` for other names
        (the code node's ``secrets`` list) must add them.
        """
        from ..masking import secret_refs

        return secret_refs(config)

    def connection_names(self, config: Mapping[str, Any]) -> set[str]:
        """Return the stored connections a node of this type may resolve with ``config``
        (their passwords are masked in everything the run records, like secrets)."""
        name = config.get("connection")
        return {name} if isinstance(name, str) and "{{" not in name else set()

    def branch(self, output: Any) -> str | None:
        """Return the output handle taken for ``output`` (only for types with handles)."""
        return None

    def run(self, ctx: NodeContext) -> Any:
        """Run one attempt and return the JSON-serializable output (or a ``Defer``)."""
        raise NotImplementedError

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Return the catalog entry of this type (served to the canvas palette)."""
        return {
            "type": cls.name,
            "title": cls.title or cls.name,
            "description": cls.description,
            "category": cls.category,
            "icon": cls.icon,
            "docs_url": cls.docs_url,
            "config_schema": cls.config_schema,
            "output_handles": list(cls.output_handles),
            "queue": cls.queue,
        }


logger = logging.getLogger("nexusflow.nodes")

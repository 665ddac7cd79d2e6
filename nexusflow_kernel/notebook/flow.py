"""Build flows from Python: ``Flow``, node handles and ``a >> b``.

A ``Flow`` holds the same document the canvas edits (``*.nxflow``)::

    f = Flow("etl", params={"n": {"type": "integer", "default": 21}})
    a = f.transform("A", "params['n'] * 2")
    c = f.condition("C", "inputs['A'] > 10")
    a >> c
    c.true >> f.transform("big", "'big'")
    c.false >> f.transform("small", "'small'")
    f.validate()          # the compiler's FlowError, with the JSON pointer of the fault
    f.save("etl.nxflow")  # the canonical document
    run = f.run(inputs={"n": 5})

Nodes without a position are laid out in layers (a node sits one row below its deepest
parent), so a flow built in code looks tidy when opened on the canvas. Importing this module
never imports ipywidgets: the inline canvas is loaded when a flow is displayed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DanglingEdgeError, DuplicateIdError, NotFoundError, UnknownNodeTypeError
from ..model.document import TRIGGER_RULES, dumps_canonical, load_document, parse_flow_text, save
from .flownodes import FlowControlNodes, flow_reference

if TYPE_CHECKING:  # pragma: no cover
    from ..model.compiler import CompiledFlow
    from ..settings import Settings
    from .debug import NodeTest
    from .live import LiveLink
    from .run import Run
    from .tasks import Task

LAYER_GAP_Y = 120
"""Vertical distance between two layers of the automatic layout (canvas pixels)."""
NODE_GAP_X = 220
"""Horizontal distance between two nodes of one layer."""

_NODE_FIELDS = ("label", "retry", "timeout", "trigger_rule", "position", "description",
                "recovers", "pool", "pin", "cache")


class NodeHandle:
    """A node of a ``Flow``: connect it with ``>>``, change it with ``set``.

    ``a >> b`` adds the edge A → B and returns ``b`` (so ``a >> b >> c`` chains);
    ``a >> [b, c]`` fans out and ``[a, b] >> c`` fans in. A Condition's branches are
    ``cond.true`` and ``cond.false``.
    """

    __slots__ = ("flow", "id")

    def __init__(self, flow: Flow, node_id: str) -> None:
        self.flow = flow
        self.id = node_id

    @property
    def node(self) -> dict[str, Any]:
        """Return the node's document entry (a live dict: prefer ``set`` for changes)."""
        return self.flow._node(self.id)

    @property
    def type(self) -> str:
        return self.node["type"]

    @property
    def config(self) -> dict[str, Any]:
        return self.node.setdefault("config", {})

    @property
    def true(self) -> Branch:
        """The ``true`` output of a Condition node."""
        return self.branch("true")

    @property
    def false(self) -> Branch:
        """The ``false`` output of a Condition node."""
        return self.branch("false")

    @property
    def approved(self) -> Branch:
        """The ``approved`` output of an Approval node."""
        return self.branch("approved")

    @property
    def rejected(self) -> Branch:
        """The ``rejected`` output of an Approval node."""
        return self.branch("rejected")

    def branch(self, handle: str) -> Branch:
        """Return the named output handle ``handle`` of this node."""
        handles = _output_handles(self.type)
        if handle not in handles:
            allowed = ", ".join(repr(h) for h in handles) or "none"
            raise DanglingEdgeError(
                f"node {self.id!r} ({self.type}) has no output {handle!r} (outputs: {allowed})"
            )
        return Branch(self, handle)

    def set(self, **fields: Any) -> NodeHandle:
        """Change config values (and ``label``, ``retry``, ``timeout``, ``trigger_rule``,
        ``position``, ``description``); a value of ``None`` removes the key."""
        node = self.node
        config, extra = _split_fields(fields)
        for key, value in extra.items():
            target = "timeout_s" if key == "timeout" else key
            if value is None:
                node.pop(target, None)
            else:
                node[target] = _check_field(self.id, key, value)
        cfg = node.setdefault("config", {})
        for key, value in config.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        if "position" in extra:
            self.flow._auto.discard(self.id)
            if extra["position"] is None:
                self.flow._auto.add(self.id)
        self.flow._changed()
        return self

    def __rshift__(self, other: Any) -> Any:
        self.flow._connect_to(self, None, other)
        return other

    def __rrshift__(self, other: Any) -> NodeHandle:
        for source in _as_list(other):
            _as_source(source).__rshift__(self)
        return self

    def __repr__(self) -> str:
        node = self.node
        label = f" {node['label']!r}" if node.get("label") else ""
        return f"<node {self.id!r} ({node['type']}){label}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeHandle) and other.flow is self.flow and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.flow), self.id))


class Branch:
    """One named output of a node (``cond.true``); ``branch >> node`` adds the edge."""

    __slots__ = ("handle", "node")

    def __init__(self, node: NodeHandle, handle: str) -> None:
        self.node = node
        self.handle = handle

    def __rshift__(self, other: Any) -> Any:
        self.node.flow._connect_to(self.node, self.handle, other)
        return other

    def __repr__(self) -> str:
        return f"<output {self.handle!r} of node {self.node.id!r}>"


class Flow(FlowControlNodes):
    """A flow document built in Python; the same document a ``.nxflow`` file holds.

    ``on_failure`` names a flow started when a run fails (a path or a stored workflow);
    ``max_active_runs`` bounds the runs of this flow running at once (more wait, queued)."""

    def __init__(self, name: str = "flow", *, description: str | None = None,
                 params: Mapping[str, Any] | None = None, on_failure: Any = None,
                 max_active_runs: int | None = None) -> None:
        self.name = name
        self.description = description
        self.params: dict[str, Any] = dict(params or {})
        self.on_failure = None if on_failure is None else flow_reference(on_failure)
        self.max_active_runs = max_active_runs
        self.metadata: dict[str, Any] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._edges: list[dict[str, Any]] = []
        self._auto: set[str] = set()
        self._live: LiveLink | None = None
        self._widgets: list[Any] = []
        self.path: Path | None = None
        self._synced: dict[str, Any] | None = None
        """The document as last read from or written to ``path`` (the merge base of a link)."""

    # ------------------------------------------------------------------ nodes
    def node(self, type: str, id: str, *, label: str | None = None,
             retry: Mapping[str, Any] | None = None, timeout: float | None = None,
             trigger_rule: str | None = None, position: Mapping[str, float] | None = None,
             description: str | None = None, recovers: bool | None = None,
             pool: str | None = None, pin: Mapping[str, Any] | None = None,
             cache: Mapping[str, Any] | float | None = None, **config: Any) -> NodeHandle:
        """Add a node of any registered type; keyword arguments other than the node fields
        (``label``, ``retry``, ``timeout``, ``trigger_rule``, ``position``, ``description``,
        ``recovers``, ``pool``, ``pin``, ``cache``) form its ``config``. Adding an id again
        replaces that node and keeps its edges. ``trigger_rule="one_failed"`` (or
        ``"all_failed"``) makes an error handler, which sees a failed parent as
        ``{"state": "failed", "error": ...}``; ``recovers=True`` keeps the failures it handles
        from failing the run. ``pool`` names a pool (``nexusflow pools set NAME SIZE``) that
        bounds its nodes across runs. ``pin={"output": ...}`` is used instead of running the
        node in runs started with pins; ``cache=600`` (or ``{"ttl_s": 600}``) serves a result
        of the same work from the last 10 minutes instead of running the node."""
        from ..nodes import broken_reason, get_node_type, node_types

        if not isinstance(id, str) or not id:
            raise DuplicateIdError(f"a node id must be a non-empty string, not {id!r}")
        if get_node_type(type) is None:
            broken = broken_reason(type)
            if broken is not None:
                raise UnknownNodeTypeError(
                    f"node {id!r}: type {type!r} comes from a broken package ({broken})")
            known = ", ".join(node_types())
            raise UnknownNodeTypeError(f"node {id!r}: unknown type {type!r} (known: {known})")
        entry: dict[str, Any] = {"id": id, "type": type}
        for key, value in (("label", label), ("description", description), ("retry", retry),
                           ("timeout", timeout), ("trigger_rule", trigger_rule),
                           ("recovers", recovers or None), ("pool", pool), ("pin", pin),
                           ("cache", cache)):
            if value is not None:
                entry["timeout_s" if key == "timeout" else key] = _check_field(id, key, value)
        if position is not None:
            entry["position"] = {"x": float(position["x"]), "y": float(position["y"])}
            self._auto.discard(id)
        else:
            old = self._nodes.get(id, {}).get("position")
            if old is not None and id not in self._auto:
                entry["position"] = old
            else:
                self._auto.add(id)
        entry["config"] = copy.deepcopy(dict(config))
        self._nodes[id] = entry
        self._changed()
        return NodeHandle(self, id)

    def transform(self, id: str, expression: str, **fields: Any) -> NodeHandle:
        """Add a Transform node: its output is ``expression`` (a safe Python expression over
        ``inputs['<parent>']`` and ``params['<name>']``)."""
        return self.node("transform", id, expression=expression, **fields)

    def condition(self, id: str, expression: str, **fields: Any) -> NodeHandle:
        """Add a Condition node; connect its branches with ``cond.true >> x``,
        ``cond.false >> y``."""
        return self.node("condition", id, expression=expression, **fields)

    def delay(self, id: str, seconds: float | str | None = None, *, until: str | None = None,
              **fields: Any) -> NodeHandle:
        """Add a Delay node: wait ``seconds`` (or ``until`` an ISO date-time) without holding
        a worker."""
        if until is not None:
            fields["until"] = until
        if seconds is not None:
            fields["seconds"] = seconds
        return self.node("delay", id, **fields)

    def http(self, id: str, url: str, method: str = "GET", **fields: Any) -> NodeHandle:
        """Add an HTTP Request node (config keys: ``headers``, ``query``, ``json``, ``body``,
        ``timeout_s`` and the others of its schema)."""
        return self.node("http", id, url=url, method=method.upper(), **fields)

    def db_query(self, id: str, connection: str, sql: str, params: Any = None, *,
                 read_only: bool = True, **fields: Any) -> NodeHandle:
        """Add a Database Query node: one SQL statement on the connection named ``connection``
        (``NEXUSFLOW_CONNECTION_<NAME>`` on the workers); values go in ``params``."""
        if params is not None:
            fields["params"] = params
        return self.node("db_query", id, connection=connection, sql=sql, read_only=read_only,
                         **fields)

    def ai(self, id: str, prompt: str, model: str, *, key_secret: str | None = None,
           **fields: Any) -> NodeHandle:
        """Add an AI node: ``prompt`` (a ``{{ template }}``) to ``model`` on an OpenAI-compatible
        server (``base_url``, default the workers' ``NEXUSFLOW_AI_BASE_URL``), the key in the
        stored secret ``key_secret``; ``system``, ``json_schema``, ``temperature``,
        ``max_tokens``, ``stream`` and the others of its schema as keywords (docs/ai.md)."""
        if key_secret is not None:
            fields["api_key"] = {"$secret": key_secret}
        return self.node("ai", id, prompt=prompt, model=model, **fields)

    def code(self, id: str, source: str, language: str = "python", **fields: Any) -> NodeHandle:
        """Add a Code node (Python or bash run in the sandbox)."""
        return self.node("code", id, source=source, language=language, **fields)

    def task(self, fn: Callable[..., Any] | Task, id: str | None = None,
             **fields: Any) -> NodeHandle:
        """Add a notebook function as a node (its source is shipped to the workers by value);
        see ``nexusflow_kernel.task``."""
        from .tasks import Task, as_task

        t = fn if isinstance(fn, Task) else as_task(fn)
        config = {**t.config(), **{k: v for k, v in fields.items() if k not in _NODE_FIELDS}}
        node_fields = {k: v for k, v in fields.items() if k in _NODE_FIELDS}
        node_fields.setdefault("label", t.name)
        return self.node("python_task", id or t.name, **node_fields, **config)

    def map(self, id: str, over: str | NodeHandle, do: Any, *,
            concurrency: int | None = None, on_item_failure: str | None = None,
            item_retry: Mapping[str, Any] | int | None = None,
            item_timeout: float | None = None, inputs: Mapping[str, Any] | None = None,
            **fields: Any) -> NodeHandle:
        """Add a Map node: run ``do`` once for every item of the list ``over`` gives; its
        output is the item outputs in item order (``[]`` for an empty list)::

            orders = f.transform("orders", "params['orders']")
            f.map("price", over=orders, do=price_order, concurrency=10)

        ``over``: an expression (``"inputs['orders']"``, ``"params['ids']"``), or a node of
        this flow (its output is the list; the edge is added). ``do``: what each item runs,
        seeing ``item`` and ``index`` in its expressions and templates —

        - a ``@task`` (or plain) function: its ``item`` and ``index`` parameters get them,
          the others bind as for ``f.task``;
        - a string: a Transform expression (``"item['qty'] * item['price']"``);
        - an inline node ``{"type": "http", "config": {...}, "retry": ..., "timeout_s": ...}``;
        - a flow: a saved ``Flow``, a ``.nxflow`` path or ``{"workflow_id": ...}``, run as a
          child run per item (pinned when the run starts, like ``f.subflow``) with ``inputs``
          as its params (values may be ``{{ templates }}`` over ``item`` and ``index``;
          default ``{"item": ..., "index": ...}``); the item's output is the child's last
          nodes' outputs by node id.

        ``concurrency``: most items running at once; ``on_item_failure``: ``"fail"`` (the
        default: the map fails naming the failed items) or ``"continue"`` (a failed item's
        output is ``{"error": ...}``); ``item_retry`` (a number: max attempts) and
        ``item_timeout`` (seconds): each item's. Read a run's items with ``run.items(id)``."""
        config: dict[str, Any] = {}
        if _is_flow_ref(do):
            config["flow"] = flow_reference(do)
            if inputs is not None:
                config["inputs"] = copy.deepcopy(dict(inputs))
            if item_retry is not None or item_timeout is not None:
                raise TypeError(f"map {id!r}: a flow's items retry and time out by the flow's "
                                "own nodes (item_retry= and item_timeout= go with a node)")
        else:
            if inputs is not None:
                raise TypeError(f"map {id!r}: inputs= go with a flow (a sub-flow's params); "
                                "a node's templates see item and index")
            spec = map_item_spec(id, do)
            if item_retry is not None:
                spec["retry"] = _check_field(id, "retry", item_retry)
            if item_timeout is not None:
                spec["timeout_s"] = item_timeout
            config["node"] = spec
        source = over if isinstance(over, NodeHandle) else None
        if source is not None and source.flow is not self:
            raise TypeError(f"map {id!r}: over= names node {source.id!r} of another flow")
        items = f"inputs[{source.id!r}]" if source is not None else over
        if not isinstance(items, str):
            raise TypeError(f"map {id!r}: over= takes an expression or a node of the flow, "
                            f"not {type(over).__name__}")
        config = {"items": items, **config}
        if concurrency is not None:
            config["concurrency"] = concurrency
        if on_item_failure is not None:
            config["on_item_failure"] = on_item_failure
        handle = self.node("map", id, **config, **fields)
        if source is not None:
            self.connect(source, handle)
        return handle

    def add(self, item: Any, id: str | None = None, **fields: Any) -> NodeHandle:
        """Add a ``@task`` function (or a plain function, made a task) as a node."""
        return self.task(item, id, **fields)

    def remove(self, node: str | NodeHandle) -> None:
        """Remove a node and its edges."""
        node_id = node.id if isinstance(node, NodeHandle) else node
        self._node(node_id)
        del self._nodes[node_id]
        self._auto.discard(node_id)
        self._edges = [e for e in self._edges if node_id not in (e["source"], e["target"])]
        self._changed()

    def connect(self, source: str | NodeHandle, target: str | NodeHandle,
                handle: str | None = None) -> None:
        """Add the edge ``source -> target`` (from ``handle`` of a Condition)."""
        src = self[source] if isinstance(source, str) else source
        self._connect_to(src, handle, target)

    def disconnect(self, source: str | NodeHandle, target: str | NodeHandle) -> None:
        """Remove the edge ``source -> target``."""
        s = source.id if isinstance(source, NodeHandle) else source
        t = target.id if isinstance(target, NodeHandle) else target
        before = len(self._edges)
        self._edges = [e for e in self._edges if (e["source"], e["target"]) != (s, t)]
        if len(self._edges) == before:
            raise NotFoundError(f"flow {self.name!r} has no edge {s} -> {t}")
        self._changed()

    def __getitem__(self, node_id: str) -> NodeHandle:
        self._node(node_id)
        return NodeHandle(self, node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def __iter__(self):
        return (NodeHandle(self, i) for i in self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> list[NodeHandle]:
        return list(self)

    @property
    def edges(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._edges]

    def _node(self, node_id: str) -> dict[str, Any]:
        try:
            return self._nodes[node_id]
        except KeyError:
            known = ", ".join(self._nodes) or "none"
            raise NotFoundError(
                f"flow {self.name!r} has no node {node_id!r} (nodes: {known})"
            ) from None

    def _connect_to(self, source: NodeHandle, handle: str | None, targets: Any) -> None:
        if source.flow is not self:
            raise DanglingEdgeError(f"node {source.id!r} belongs to another flow")
        if handle is None and _output_handles(source.type):
            names = " or ".join(f"{source.id}.{h}" for h in _output_handles(source.type))
            raise DanglingEdgeError(
                f"node {source.id!r} ({source.type}) has named outputs: connect {names}, "
                f"e.g. {source.id}.true >> next_node"
            )
        for target in _as_list(targets):
            if not isinstance(target, NodeHandle):
                raise TypeError(f"cannot connect {source.id!r} to {target!r}: not a node")
            if target.flow is not self:
                raise DanglingEdgeError(f"node {target.id!r} belongs to another flow")
            if any(e["source"] == source.id and e["target"] == target.id for e in self._edges):
                continue
            edge = {"id": self._edge_id(source.id, target.id), "source": source.id,
                    "target": target.id}
            if handle is not None:
                edge["source_handle"] = handle
            self._edges.append(edge)
        self._changed()

    def _edge_id(self, source: str, target: str) -> str:
        base = f"{source}-{target}"
        taken = {e["id"] for e in self._edges}
        edge_id, n = base, 2
        while edge_id in taken:
            edge_id, n = f"{base}-{n}", n + 1
        return edge_id

    # ------------------------------------------------------------------ document
    def to_dict(self) -> dict[str, Any]:
        """Return the flow document (canonical order; automatic positions filled in)."""
        positions = layout(self._nodes.values(), self._edges) if self._auto else {}
        nodes = []
        for node_id, entry in self._nodes.items():
            node = copy.deepcopy(entry)
            if node_id in self._auto or "position" not in node:
                node["position"] = positions.get(node_id, {"x": 0, "y": 0})
            nodes.append(node)
        data: dict[str, Any] = {"schema": 1, "name": self.name}
        if self.description:
            data["description"] = self.description
        if self.params:
            data["params"] = copy.deepcopy(self.params)
        if self.metadata:
            data["metadata"] = copy.deepcopy(self.metadata)
        if self.on_failure is not None:
            data["on_failure"] = copy.deepcopy(self.on_failure)
        if self.max_active_runs is not None:
            data["max_active_runs"] = self.max_active_runs
        data["nodes"] = nodes
        data["edges"] = copy.deepcopy(self._edges)
        return json.loads(dumps_canonical(data))

    def to_json(self) -> str:
        """Return the canonical text (what ``save`` writes)."""
        return dumps_canonical(self.to_dict())

    def layout(self) -> Flow:
        """Forget every node's position and lay the whole flow out again."""
        self._auto = set(self._nodes)
        self._changed()
        return self

    def validate(self) -> CompiledFlow:
        """Compile the flow; raise the compiler's ``FlowError`` (with ``.pointer``) if it
        cannot run."""
        from ..model.compiler import compile_flow

        return compile_flow(load_document(self.to_dict(), source=self._source()))

    def save(self, path: str | Path) -> Path:
        """Write the canonical ``.nxflow`` document to ``path`` and return the path."""
        path = Path(path)
        document = self.to_dict()
        save(document, path)
        self.path = path
        self._synced = document
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Flow:
        """Build a ``Flow`` from a flow document (checked against the schema)."""
        doc = load_document(dict(data), source=source)
        raw = doc.data
        f = cls(raw.get("name") or doc.name, description=raw.get("description"),
                params=raw.get("params"), on_failure=raw.get("on_failure"),
                max_active_runs=raw.get("max_active_runs"))
        f.metadata = copy.deepcopy(raw.get("metadata") or {})
        f._replace(raw)
        return f

    @classmethod
    def from_text(cls, text: str, *, name: str | None = None, model: str | None = None,
                  base_url: str | None = None, key_secret: str | None = None,
                  settings: Settings | None = None) -> Flow:
        """Ask a chat model for a flow that does what ``text`` says; return it as a ``Flow``.

        The model gets the node-type catalog and must answer a flow the compiler accepts (it
        is asked once more with the compiler's error); otherwise ``DescribeError`` says what
        is wrong, where, and holds the answer (``.answer``). Nothing runs: look at the flow,
        change it, then ``run()`` it. The model is ``NEXUSFLOW_AI_BASE_URL`` and
        ``NEXUSFLOW_AI_MODEL`` with the key in the stored secret ``NEXUSFLOW_AI_KEY_SECRET``,
        or ``base_url``, ``model`` and ``key_secret`` given here; with
        ``NEXUSFLOW_SERVICE_URL`` the service asks its own model (docs/ai.md)::

            f = Flow.from_text("Every morning fetch https://api.example.com/orders and "
                               "summarize the new ones with gpt-4o-mini")
        """
        from dataclasses import replace

        from ..settings import Settings

        settings = settings or Settings.from_env()
        settings = replace(settings, ai_model=model or settings.ai_model,
                           ai_base_url=base_url or settings.ai_base_url,
                           ai_key_secret=key_secret or settings.ai_key_secret)
        if settings.service_url and not (model or base_url or key_secret):
            from ..remote import RemoteEngine

            remote = RemoteEngine(settings)
            try:
                flow = remote.describe_flow(text, name=name)["flow"]
            finally:
                remote.close()
        else:
            from ..describe import configured_model, describe_flow

            flow = describe_flow(text, configured_model(settings), name=name).flow
        return cls.from_dict(flow)

    @classmethod
    def load(cls, path: str | Path) -> Flow:
        """Read a ``.nxflow`` file."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            from ..errors import FlowSyntaxError

            raise FlowSyntaxError(f"cannot read file: {exc.strerror}", source=str(path)) from None
        f = cls.from_dict(parse_flow_text(text, source=str(path)), source=str(path))
        f.path = path
        f._synced = f.to_dict()
        return f

    def _replace(self, raw: Mapping[str, Any]) -> None:
        """Take nodes, edges and top-level fields from a document (used by ``pull``)."""
        self.name = raw.get("name") or self.name
        self.description = raw.get("description")
        self.params = copy.deepcopy(dict(raw.get("params") or {}))
        self.on_failure = copy.deepcopy(raw.get("on_failure"))
        self.max_active_runs = raw.get("max_active_runs")
        self._nodes = {n["id"]: copy.deepcopy(dict(n)) for n in raw.get("nodes") or []}
        self._edges = [copy.deepcopy(dict(e)) for e in raw.get("edges") or []]
        self._auto = {i for i, n in self._nodes.items() if "position" not in n}
        for widget in self._widgets:
            widget.set_flow(self)

    def _source(self) -> str | None:
        return str(self.path) if self.path else None

    def copy(self) -> Flow:
        """Return an independent copy (not linked to a canvas)."""
        other = Flow.from_dict(self.to_dict())
        other._auto = set(self._auto)
        return other

    # ------------------------------------------------------------------ running
    def run(self, inputs: Mapping[str, Any] | None = None, *, wait: bool = True,
            workers: int | str | None = None, timeout: float | None = None,
            progress: bool = True, settings: Settings | None = None, use_pins: bool = False,
            cache: bool = True, env: str | None = None) -> Run:
        """Start a run and return its ``Run`` handle.

        ``wait=True`` shows progress and returns when the run is over, raising ``RunFailed``
        if it failed; ``wait=False`` returns at once. ``workers=N`` starts N temporary local
        workers for this run; ``workers="auto"`` starts two workers kept for the kernel's
        life, only when no worker serves the queue. By default running workers are expected
        (JupyterLab's server extension supervises local ones). ``use_pins=True``: nodes with
        a pinned output (``pin``) give it instead of running. ``cache=False``: no node is
        served from the cache. ``env="prod"``: run in that environment (its variables as
        ``env['NAME']``, its secrets and connections; default ``dev``).
        """
        from .run import start_run

        return start_run(self, inputs, wait=wait, workers=workers, timeout=timeout,
                         progress=progress, settings=settings, use_pins=use_pins, cache=cache,
                         env=env)

    # ------------------------------------------------------------------ the debug loop
    def test(self, node: str | NodeHandle, inputs: Mapping[str, Any] | None = None, *,
             params: Mapping[str, Any] | None = None, timeout: float = 60.0,
             settings: Settings | None = None, env: str | None = None) -> NodeTest:
        """Run one node on a worker, as it is in this flow now, outside any run; return the
        result (``status``, ``output``, ``error``, ``log``).

        ``inputs`` are its parents' outputs by parent id; by default those the node had in
        the latest run of this flow, as recorded. ``params`` default to that run's inputs,
        else the flow's param defaults. ``env``: the environment whose variables, secrets
        and connections the node gets, as a run there (default ``dev``).
        """
        from .debug import test_node
        from .run import get_engine

        node_id = node.id if isinstance(node, NodeHandle) else node
        self._node(node_id)
        entry = self.to_dict()
        node_doc = next(n for n in entry["nodes"] if n["id"] == node_id)
        return test_node(get_engine(settings), node_doc, inputs=inputs, params=params,
                         flow=entry, key=self._workflow_key(), source=self._source(),
                         timeout=timeout, env=env)

    def pin(self, node: str | NodeHandle, output: Any, *, from_run: str | None = None) -> Flow:
        """Pin ``output`` on a node: runs started with ``use_pins=True`` use it instead of
        running the node (triggers never do). ``output`` may be a run's ``outputs[...]``."""
        from datetime import UTC, datetime

        node_id = node.id if isinstance(node, NodeHandle) else node
        json.dumps(output, allow_nan=False)  # a pin is JSON, like every output
        pin: dict[str, Any] = {"output": copy.deepcopy(output),
                               "pinned_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if from_run:
            pin["from_run"] = from_run
        self._node(node_id)["pin"] = pin
        self._changed()
        return self

    def unpin(self, node: str | NodeHandle) -> Flow:
        """Remove a node's pinned output."""
        node_id = node.id if isinstance(node, NodeHandle) else node
        self._node(node_id).pop("pin", None)
        self._changed()
        return self

    def _workflow_key(self) -> str:
        """Return the key the runs of this flow are filed under (see ``Engine.start_run``)."""
        from ..engine import file_workflow_key, local_owner, workflow_key

        if self.path is not None:
            return file_workflow_key(self.path.resolve())
        return workflow_key("name", self.name, local_owner())

    # ------------------------------------------------------------------ canvas
    def widget(self, *, height: int = 360) -> Any:
        """Return the inline canvas widget of this flow (needs anywidget)."""
        from .widget import FlowWidget

        widget = FlowWidget.for_flow(self, height=height)
        self._widgets.append(widget)
        return widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .display import mimebundle

        return mimebundle(self, include, exclude)

    def link(self, path: str | Path, *, server: Any = None, push: bool = True,
             force: bool = False) -> LiveLink:
        """Link this flow to ``path`` as open in JupyterLab: from now on every change made
        here is sent to the live collaborative document (open canvases show it within a
        second). ``push=False`` links without sending the current flow.

        Linking merges: this flow's changes since it was loaded from (or saved to) that file
        go to the live document, a collaborator's changes made meanwhile stay and come into
        this flow, and where both changed the same thing theirs is kept and the clash is
        warned about (``LinkConflict``, also in ``link.conflicts``); ``force=True`` sends
        ours instead. A flow that was never in that file merges from nothing: what it adds
        arrives, and a node both sides have but differently is a clash.
        """
        from .live import LiveLink

        link = LiveLink.connect(path, server=server)
        if self._synced is not None and self.path is not None and _same_file(self.path, link):
            link.last = self._synced
        self._live = link
        if push:
            self._adopt(link.push(self.to_dict(), force=force))
        return link

    def unlink(self) -> None:
        """Stop sending changes to the linked document."""
        self._live = None

    def push(self, *, force: bool = False) -> dict[str, Any]:
        """Merge this flow's changes into the linked live document (see ``link``); return the
        server's answer (``conflicts``: the clashes, kept as the canvas has them unless
        ``force``). The flow becomes the merged document."""
        return self._adopt(self._require_link().push(self.to_dict(), force=force))

    def pull(self) -> Flow:
        """Replace this flow with the linked document as the canvas has it now."""
        data = self._require_link().pull()
        self._replace(data)
        return self

    def _adopt(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Take the document a push left on the server (collaborators' changes included)."""
        document = answer.get("document")
        if document and document != self.to_dict():
            self._replace(document)
        return answer

    def _require_link(self) -> LiveLink:
        if self._live is None:
            raise NotFoundError(
                f"flow {self.name!r} is not linked to a document: call flow.link('name.nxflow')"
            )
        return self._live

    def _changed(self) -> None:
        if self._live is not None and self._live.auto:
            self._adopt(self._live.push(self.to_dict()))
        for widget in self._widgets:
            widget.set_flow(self)

    def __repr__(self) -> str:
        edges = len(self._edges)
        return (f"<Flow {self.name!r}: {len(self._nodes)} node{'s' * (len(self._nodes) != 1)}, "
                f"{edges} edge{'s' * (edges != 1)}>")


# ---------------------------------------------------------------------- helpers
def _same_file(local: Path, link: LiveLink) -> bool:
    """Whether ``link`` is to the file ``local`` (as the Jupyter server names it)."""
    from .live import contents_path

    try:
        return contents_path(local, link.server) == link.path
    except (NotFoundError, OSError):
        return False


def _output_handles(type_name: str) -> tuple[str, ...]:
    from ..nodes import get_node_type

    node_type = get_node_type(type_name)
    return tuple(node_type.output_handles) if node_type else ()


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


def _is_flow_ref(do: Any) -> bool:
    """Whether ``Flow.map``'s ``do`` names a flow (run per item as a child run)."""
    if isinstance(do, Flow) or isinstance(do, Path):
        return True
    if isinstance(do, str):
        return do.endswith(".nxflow")
    return isinstance(do, Mapping) and "workflow_id" in do and "type" not in do


def map_item_spec(node_id: str, do: Any) -> dict[str, Any]:
    """Return the inline node spec a map runs per item, for ``Flow.map``'s ``do``."""
    from .tasks import Task, as_task

    if isinstance(do, Mapping):
        if "type" not in do:
            raise TypeError(f"map {node_id!r}: do= as a dict is an inline node "
                            "{'type': ..., 'config': {...}}; it has no 'type'")
        return copy.deepcopy(dict(do))
    if isinstance(do, str):
        return {"type": "transform", "config": {"expression": do}}
    if isinstance(do, Task) or callable(do):
        return {"type": "python_task", "config": as_task(do).config()}
    raise TypeError(f"map {node_id!r}: do= takes a function (@task), an expression or an "
                    f"inline node spec, not {type(do).__name__}")


def _as_source(value: Any) -> NodeHandle | Branch:
    if isinstance(value, (NodeHandle, Branch)):
        return value
    raise TypeError(f"cannot connect from {value!r}: not a node")


def _split_fields(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = {k: v for k, v in fields.items() if k not in _NODE_FIELDS}
    extra = {k: v for k, v in fields.items() if k in _NODE_FIELDS}
    return config, extra


def _check_field(node_id: str, key: str, value: Any) -> Any:
    from ..errors import NodeConfigError

    if key == "trigger_rule" and value not in TRIGGER_RULES:
        raise NodeConfigError(
            f"node {node_id!r}: trigger_rule {value!r} is not one of {', '.join(TRIGGER_RULES)}"
        )
    if key == "retry" and isinstance(value, int) and not isinstance(value, bool):
        return {"max_attempts": value}
    if key == "position":
        return {"x": float(value["x"]), "y": float(value["y"])}
    if key == "cache" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"ttl_s": value}
    return copy.deepcopy(value)


def layout(nodes: Iterable[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]) -> dict[
        str, dict[str, float]]:
    """Return top-down positions: layers from the longest path, then ordered within a layer
    by the mean position of the parents (a few sweeps of the barycenter heuristic)."""
    ids = [n["id"] for n in nodes]
    known = set(ids)
    parents: dict[str, list[str]] = {i: [] for i in ids}
    children: dict[str, list[str]] = {i: [] for i in ids}
    for e in edges:
        if e["source"] in known and e["target"] in known:
            parents[e["target"]].append(e["source"])
            children[e["source"]].append(e["target"])
    # Kahn's order; nodes on a cycle (an invalid flow) go last, so layout never fails.
    indegree = {i: len(parents[i]) for i in ids}
    order = [i for i in ids if indegree[i] == 0]
    for node_id in order:
        for child in children[node_id]:
            indegree[child] -= 1
            if indegree[child] == 0:
                order.append(child)
    order += [i for i in ids if i not in set(order)]
    layer: dict[str, int] = {}
    for node_id in order:
        layer[node_id] = max((layer.get(p, -1) + 1 for p in parents[node_id]), default=0)
    rows: dict[int, list[str]] = {}
    for node_id in order:
        rows.setdefault(layer[node_id], []).append(node_id)
    rank = {i: float(k) for row in rows.values() for k, i in enumerate(row)}
    for _sweep in range(4):
        for depth in sorted(rows):
            row = rows[depth]
            for node_id in row:
                ps = [p for p in parents[node_id] if layer[p] < depth]
                if ps:
                    rank[node_id] = sum(rank[p] for p in ps) / len(ps)
            row.sort(key=lambda i: (rank[i], order.index(i)))
            for k, node_id in enumerate(row):
                rank[node_id] = k - (len(row) - 1) / 2
    out: dict[str, dict[str, float]] = {}
    for depth, row in rows.items():
        for k, node_id in enumerate(row):
            x = (k - (len(row) - 1) / 2) * NODE_GAP_X
            out[node_id] = {"x": round(x), "y": depth * LAYER_GAP_Y}
    return out


__all__ = ["Branch", "Flow", "NodeHandle", "layout"]

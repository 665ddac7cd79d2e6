"""The collaborative ``.nxflow`` document: the server side of the ``nxflow`` Yjs document type.

jupyter-collaboration loads a ``.nxflow`` file into :class:`YNxFlow` with :meth:`YNxFlow.set`
and autosaves :meth:`YNxFlow.get` back to disk, so ``get`` returns the canonical text of
``nexusflow_kernel.model.document``; the same graph always gives the same bytes. The frontend's
``NxFlowDoc`` (labextension ``src/model.ts``) uses the same root names and types:

``nodes``  Map: node id -> Map of the node's fields (``position`` and ``config`` are plain
           JSON values, so two people editing different fields of one node both win)
``edges``  Map: edge id -> plain JSON object of the edge
``meta``   Map: every other top-level field (``schema``, ``name``, ``params``, ...)
``state``  Map (from ``YBaseDoc``): dirty, path, ...; ``nexusflow_run`` holds the id of the run
           that collaborators watch. Nothing in ``state`` is saved to the file.

A file that is not a flow (malformed JSON, no ``nodes`` list, ...) is kept verbatim under the
``meta`` key ``_invalid`` together with the reason, and ``get`` returns that text unchanged, so
opening a broken file never rewrites it and the canvas can show what is wrong.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

if "jupyter_ydoc" not in sys.modules:
    # Importing jupyter_ydoc loads every registered document type, this module included, and
    # would find this module half-initialized. Step aside so it imports a complete copy, and
    # let the import system hand that copy to whoever imported this module.
    _this = sys.modules.pop(__name__)
    import jupyter_ydoc  # noqa: F401

    sys.modules.setdefault(__name__, _this)  # not registered (no entry point): keep this one

from jupyter_ydoc.ybasedoc import YBaseDoc
from pycrdt import Awareness, Doc, Map

from nexusflow_kernel.model.document import canonical_document, dumps_canonical

INVALID_KEY = "_invalid"
"""``meta`` key holding ``{"error", "source"}`` of a file that could not be read as a flow."""

RUN_KEY = "nexusflow_run"
"""``state`` key holding the id of the run every collaborator's canvas shows."""

EMPTY_FLOW: dict[str, Any] = {"schema": 1, "nodes": [], "edges": []}


class InvalidFlowText(ValueError):
    """The text is not a flow document the canvas can hold."""


def parse_graph(text: str) -> dict[str, Any]:
    """Parse flow text into a dict with ``nodes`` and ``edges`` lists keyed by unique ids.

    This is only the structure the shared document needs; the full JSON Schema and the
    compiler's checks are shown by the canvas and enforced when a run starts.
    """
    if not text.strip():
        return dict(EMPTY_FLOW)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidFlowText(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise InvalidFlowText("the JSON nests too deeply") from None
    if not isinstance(data, dict):
        raise InvalidFlowText(f"a flow must be a JSON object, not {type(data).__name__}")
    for key in ("nodes", "edges"):
        items = data.setdefault(key, [])
        if not isinstance(items, list):
            raise InvalidFlowText(f"/{key} must be a list")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise InvalidFlowText(f"/{key}/{index} must be an object with a string id")
            if item["id"] in seen:
                raise InvalidFlowText(f"/{key}/{index}: duplicate id {item['id']!r}")
            seen.add(item["id"])
    return data


class YNxFlow(YBaseDoc):
    """A flow document shared between collaborators (entry point ``jupyter_ydoc:nxflow``)."""

    def __init__(self, ydoc: Doc | None = None, awareness: Awareness | None = None) -> None:
        super().__init__(ydoc, awareness)
        self._ynodes: Map = self._ydoc.get("nodes", type=Map)
        self._yedges: Map = self._ydoc.get("edges", type=Map)
        self._ymeta: Map = self._ydoc.get("meta", type=Map)
        self.undo_manager.expand_scope(self._ynodes)
        self.undo_manager.expand_scope(self._yedges)
        self.undo_manager.expand_scope(self._ymeta)

    @property
    def version(self) -> str:
        """Return the version of the shared structure (bump on a layout change)."""
        return "1.0.0"

    @property
    def run_id(self) -> str | None:
        """Return the id of the run the collaborators are watching, if any."""
        return self._ystate.get(RUN_KEY)

    @run_id.setter
    def run_id(self, value: str | None) -> None:
        self._ystate[RUN_KEY] = value

    def to_dict(self) -> dict[str, Any]:
        """Return the document as a plain dict (numbers as pycrdt gives them: floats)."""
        data = {k: v for k, v in self._ymeta.to_py().items() if k != INVALID_KEY}
        data["nodes"] = list(self._ynodes.to_py().values())
        data["edges"] = list(self._yedges.to_py().values())
        return data

    @property
    def invalid(self) -> dict[str, str] | None:
        """Return ``{"error", "source"}`` when the loaded text was not a flow, else ``None``."""
        return self._ymeta.get(INVALID_KEY)

    def get(self) -> str:
        """Return the canonical JSON text of the flow (the bytes written to disk)."""
        invalid = self.invalid
        if invalid is not None:
            return invalid["source"]
        data = self.to_dict()
        data.setdefault("schema", 1)
        return dumps_canonical(data)

    def set(self, value: str | bytes) -> None:
        """Load flow text, changing only what differs from the current content."""
        text = value.decode() if isinstance(value, bytes) else value
        try:
            data = canonical_document(parse_graph(text))
        except InvalidFlowText as exc:
            with self._ydoc.transaction():
                self._ynodes.clear()
                self._yedges.clear()
                self._ymeta.clear()
                self._ymeta[INVALID_KEY] = {"error": str(exc), "source": text}
            return
        with self._ydoc.transaction():
            meta = {k: v for k, v in data.items() if k not in ("nodes", "edges")}
            _sync_plain(self._ymeta, meta)
            _sync_plain(self._yedges, {e["id"]: e for e in data["edges"]})
            nodes = {n["id"]: n for n in data["nodes"]}
            for key in [k for k in self._ynodes.keys() if k not in nodes]:
                del self._ynodes[key]
            for key, node in nodes.items():
                current = self._ynodes.get(key)
                if not isinstance(current, Map):
                    self._ynodes[key] = Map(node)
                else:
                    _sync_plain(current, node)

    def observe(self, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(root name, event)`` on every change of the document."""
        self.unobserve()
        self._subscriptions[self._ystate] = self._ystate.observe(partial(callback, "state"))
        self._subscriptions[self._ynodes] = self._ynodes.observe_deep(partial(callback, "nodes"))
        self._subscriptions[self._yedges] = self._yedges.observe(partial(callback, "edges"))
        self._subscriptions[self._ymeta] = self._ymeta.observe(partial(callback, "meta"))


def _same(a: Any, b: Any) -> bool:
    return canonical_document({"v": a}) == canonical_document({"v": b})


def _sync_plain(target: Map, values: dict[str, Any]) -> None:
    """Make ``target`` hold exactly ``values``, writing only the keys that changed."""
    for key in [k for k in target.keys() if k not in values]:
        del target[key]
    for key, value in values.items():
        if key not in target or not _same(target[key], value):
            target[key] = value

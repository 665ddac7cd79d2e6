"""The contract a node type published by a package must keep, checked when it is loaded.

A package publishes node types through the entry point group ``nexusflow.nodes``
(``text.slugify = "nexusflow_textnodes:SlugifyNode"``). The registry loads each entry point
and hands what it got to ``check_node_type``: anything that does not keep the contract is
listed as broken with the reason (``BrokenNodeType``) and never registered, so a bad package
cannot take the palette, the compiler or the workers down. docs/node-packages.md describes
the contract.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .base import NodeType

TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
"""A node type's name, as the flow schema allows it in a node's ``type``."""

HANDLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
QUEUES = ("default", "sandbox")
"""The logical queues a node type may ask for."""

ICON_TEXT_MAX = 8
"""An icon given as text (an emoji, a symbol) has at most this many characters."""
ICON_DATA_MAX = 16 * 1024
"""An icon given as an image is a base64 ``data:`` URI of at most this many characters."""
_DATA_ICON = re.compile(r"data:image/(?:svg\+xml|png);base64,[A-Za-z0-9+/]+={0,2}")
SCHEMA_MAX = 256 * 1024
"""Most characters of a config schema as JSON (it travels with every catalog)."""


class PluginError(Exception):
    """A node type that does not keep the contract; the message says which part and why."""


@dataclass(frozen=True)
class NodeSource:
    """Where a registered node type comes from."""

    package: str
    """The distribution that provides it (``nexusflow`` for the built-in types)."""
    version: str
    entry_point: str | None = None
    """``module:attribute`` of its entry point; ``None`` for a type built into the engine."""


@dataclass(frozen=True)
class BrokenNodeType:
    """An entry point of the ``nexusflow.nodes`` group that could not be registered."""

    name: str
    """The entry point's name (the type name it promised)."""
    source: NodeSource
    reason: str

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "package": self.source.package,
            "version": self.source.version,
            "entry_point": self.source.entry_point,
            "reason": self.reason,
        }


def _text(cls: type, attr: str, limit: int, *, required: bool = False) -> str:
    value = getattr(cls, attr, "")
    if not isinstance(value, str):
        raise PluginError(f"{attr} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise PluginError(f"{attr} is longer than {limit} characters")
    if required and not value.strip():
        raise PluginError(f"{attr} must not be empty")
    return value


def check_icon(icon: Any) -> str:
    """Return ``icon`` if it is one the canvas can show safely, else raise ``PluginError``.

    Text (an emoji or a symbol, shown as text) or a base64 SVG or PNG ``data:`` URI (shown
    as an ``<img>``, where an SVG runs no script and loads nothing).
    """
    if not isinstance(icon, str):
        raise PluginError(f"icon must be a string, not {type(icon).__name__}")
    if icon.startswith("data:"):
        if len(icon) > ICON_DATA_MAX:
            raise PluginError(f"icon is a data URI of more than {ICON_DATA_MAX} characters")
        if not _DATA_ICON.fullmatch(icon):
            raise PluginError(
                "icon is a data URI but not data:image/svg+xml;base64,... or "
                "data:image/png;base64,..."
            )
        return icon
    if len(icon) > ICON_TEXT_MAX:
        raise PluginError(
            f"icon text has more than {ICON_TEXT_MAX} characters (use an emoji, "
            "a symbol or a data:image/svg+xml;base64 URI)"
        )
    if any(not ch.isprintable() for ch in icon):
        raise PluginError("icon text holds a control character")
    return icon


def check_docs_url(url: Any) -> str:
    """Return ``url`` if it is empty or an http(s) address, else raise ``PluginError``."""
    if not isinstance(url, str):
        raise PluginError(f"docs_url must be a string, not {type(url).__name__}")
    if not url:
        return url
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or len(url) > 500
        or any(ch.isspace() or not ch.isprintable() for ch in url)
    ):
        raise PluginError(f"docs_url {url[:100]!r} is not an http(s) address")
    return url


def _refs(schema: Any, pointer: str = "") -> list[tuple[str, str]]:
    """Return ``(pointer, ref)`` for every ``$ref`` in ``schema``."""
    found: list[tuple[str, str]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                found.append((pointer + "/$ref", value))
            else:
                found.extend(_refs(value, f"{pointer}/{key}"))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found.extend(_refs(value, f"{pointer}/{i}"))
    return found


def check_config_schema(schema: Any) -> dict[str, Any]:
    """Return ``schema`` if it is a JSON Schema of an object that needs nothing outside
    itself, else raise ``PluginError`` naming the place (a JSON pointer in the schema)."""
    import jsonschema

    if not isinstance(schema, dict):
        raise PluginError(
            f"config_schema must be a JSON Schema object, not {type(schema).__name__}"
        )
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"config_schema is not JSON: {exc}") from None
    if len(text) > SCHEMA_MAX:
        raise PluginError(f"config_schema is larger than {SCHEMA_MAX} characters as JSON")
    if schema.get("type") != "object":
        raise PluginError('config_schema must describe an object ({"type": "object", ...})')
    validator = jsonschema.validators.validator_for(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "".join(f"/{p}" for p in exc.absolute_path) or "/"
        raise PluginError(
            f"config_schema is not a valid JSON Schema at {where}: {exc.message[:300]}"
        ) from None
    for where, ref in _refs(schema):
        if not ref.startswith("#"):  # the compiler never fetches a schema from elsewhere
            raise PluginError(
                f"config_schema at {where} refers outside itself ({ref[:100]!r}); "
                "only local references (#/...) are allowed"
            )
    return schema


def check_node_type(
    obj: Any, name: str, *, check_schema: bool = True
) -> tuple[type[NodeType], dict[str, Any]]:
    """Check what the entry point ``name`` loaded; return the class and its catalog entry.

    Raises ``PluginError`` with the first part of the contract it does not keep.
    ``check_schema=False`` leaves out the JSON Schema check of ``config_schema`` (importing
    jsonschema costs a second or more of CPU: the registry skips it for Nexus-Flow's own
    types, which its tests check).
    """
    if not isinstance(obj, type) or not issubclass(obj, NodeType) or obj is NodeType:
        what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise PluginError(f"the entry point is not a NodeType subclass (it is {what!r})")
    type_name = getattr(obj, "name", None)
    if not isinstance(type_name, str) or not TYPE_NAME.fullmatch(type_name):
        raise PluginError(
            f"name {str(type_name)[:80]!r} is not a node type name "
            "(lower case letters, digits, _ . -, at most 64, a letter first)"
        )
    if type_name != name:
        raise PluginError(
            f"the entry point is named {name!r} but the type's name is "
            f"{type_name!r}; they must be the same"
        )
    if obj.run is NodeType.run:
        raise PluginError("the type does not implement run(ctx)")
    _text(obj, "title", 80)
    _text(obj, "description", 2000)
    _text(obj, "category", 40, required=True)
    check_icon(getattr(obj, "icon", ""))
    check_docs_url(getattr(obj, "docs_url", ""))
    if check_schema:
        check_config_schema(obj.config_schema)
    if obj.queue not in QUEUES:
        raise PluginError(f"queue {str(obj.queue)[:80]!r} is not one of {', '.join(QUEUES)}")
    handles = obj.output_handles
    if not isinstance(handles, tuple) or not all(
        isinstance(h, str) and HANDLE_NAME.fullmatch(h) for h in handles
    ):
        raise PluginError("output_handles must be a tuple of identifiers")
    try:
        obj()
    except Exception as exc:
        raise PluginError(
            f"the type cannot be created: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    try:
        entry = obj.describe()
        json.dumps(entry)
    except Exception as exc:
        raise PluginError(f"describe() failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    if not isinstance(entry, dict) or entry.get("type") != name:
        raise PluginError("describe() must return the catalog entry of the type")
    return obj, entry

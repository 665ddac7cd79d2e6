"""Two node types: Slugify and CSV parse.

A node type is a ``NodeType`` subclass: its class attributes say what the palette and the
inspector show (title, description, category, icon, docs link) and what a node's ``config``
may hold (``config_schema``, a JSON Schema the compiler checks before a run starts); ``run``
does one attempt in a worker and returns a JSON value, the node's output. ``{{ }}`` templates
in the config are rendered by the worker before ``run`` sees it.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar

from nexusflow_kernel.errors import NodeExecutionError
from nexusflow_kernel.nodes import NodeContext, NodeType

CSV_ICON = (
    "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3"
    "g9IjAgMCAxNiAxNiI+PHJlY3QgeD0iMSIgeT0iMiIgd2lkdGg9IjE0IiBoZWlnaHQ9IjEyIiByeD0iMSIgZmlsbD0i"
    "bm9uZSIgc3Ryb2tlPSIjMmU3ZDMyIiBzdHJva2Utd2lkdGg9IjEuNSIvPjxwYXRoIGQ9Ik0xIDZoMTRNMSAxMGgxNE"
    "02IDJ2MTJNMTEgMnYxMiIgc3Ryb2tlPSIjMmU3ZDMyIiBzdHJva2Utd2lkdGg9IjEiLz48L3N2Zz4="
)
"""A small table, as an SVG data URI (shown as an image: it runs nothing)."""


def slugify(text: str, separator: str = "-", max_length: int = 80, lowercase: bool = True) -> str:
    """Return ``text`` as a URL slug: accents dropped, runs of other characters joined by
    ``separator``, at most ``max_length`` characters (never ending on a separator)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    if lowercase:
        ascii_text = ascii_text.lower()
    words = re.findall(r"[A-Za-z0-9]+", ascii_text)
    slug = separator.join(words)
    if len(slug) > max_length:
        slug = slug[:max_length]
        if separator:
            slug = slug.rstrip(separator)
    return slug


class SlugifyNode(NodeType):
    """Turn a text into a URL slug."""

    name = "text.slugify"
    title = "Slugify"
    description = "Turn a text into a URL slug: 'Héllo, World!' gives 'hello-world'."
    category = "text"
    icon = "🔗"
    docs_url = "https://en.wikipedia.org/wiki/Clean_URL#Slug"
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {
                "type": "string",
                "title": "Text",
                "maxLength": 100_000,
                "description": "The text; a {{ template }} such as {{ inputs['A'] }}.",
            },
            "separator": {
                "type": "string",
                "title": "Separator",
                "default": "-",
                "pattern": "^[-_.~]?$",
                "description": "Joins the words: - _ . ~ or nothing.",
            },
            "max_length": {
                "type": "integer",
                "title": "Max length",
                "default": 80,
                "minimum": 1,
                "maximum": 1000,
            },
            "lowercase": {"type": "boolean", "title": "Lower case", "default": True},
        },
    }

    def run(self, ctx: NodeContext) -> str:
        text = ctx.config["text"]
        if not isinstance(text, str):  # a template that gave a number, a list...
            text = str(text)
        slug = slugify(
            text,
            ctx.config.get("separator", "-"),
            int(ctx.config.get("max_length", 80)),
            bool(ctx.config.get("lowercase", True)),
        )
        ctx.log("%d characters -> %r", len(text), slug)
        return slug


class CsvParseNode(NodeType):
    """Parse CSV text into rows."""

    name = "text.csv_parse"
    title = "CSV parse"
    description = (
        "Parse CSV text into rows: objects keyed by the header row, or lists. "
        "Output: {rows, columns, count}."
    )
    category = "text"
    icon = CSV_ICON
    docs_url = "https://docs.python.org/3/library/csv.html"
    config_schema: ClassVar[dict[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["text"],
        "additionalProperties": False,
        "properties": {
            "text": {
                "type": "string",
                "title": "CSV text",
                "format": "multiline",
                "description": "The CSV; a {{ template }} such as {{ inputs['fetch']['body'] }}.",
            },
            "delimiter": {
                "type": "string",
                "title": "Delimiter",
                "default": ",",
                "minLength": 1,
                "maxLength": 1,
            },
            "header": {
                "type": "boolean",
                "title": "Header row",
                "default": True,
                "description": "The first row names the columns (rows become objects).",
            },
            "max_rows": {
                "type": "integer",
                "title": "Max rows",
                "default": 10_000,
                "minimum": 1,
                "maximum": 1_000_000,
                "description": "More rows fail the node (it says how many).",
            },
            "strict": {
                "type": "boolean",
                "title": "Strict",
                "default": True,
                "description": "A row with more or fewer fields than the header fails "
                "the node, naming the row.",
            },
        },
    }

    def check_config(self, config: Mapping[str, Any]) -> list[tuple[str, str]]:
        delimiter = config.get("delimiter", ",")
        if delimiter in ('"', "\n", "\r"):
            return [("/delimiter", f"{delimiter!r} cannot separate CSV fields")]
        return []

    def run(self, ctx: NodeContext) -> dict[str, Any]:
        config = ctx.config
        text = config["text"]
        if not isinstance(text, str):
            raise NodeExecutionError(
                f"node {ctx.node_id!r} /config/text: the CSV must be text, not "
                f"{type(text).__name__}",
                retryable=False,
            )
        max_rows = int(config.get("max_rows", 10_000))
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=config.get("delimiter", ","))
        rows: list[list[str]] = []
        try:
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(rows) >= max_rows + (1 if config.get("header", True) else 0):
                    raise NodeExecutionError(
                        f"node {ctx.node_id!r}: the CSV has more than {max_rows} rows "
                        "(/config/max_rows)",
                        retryable=False,
                    )
                rows.append(row)
        except csv.Error as exc:
            raise NodeExecutionError(
                f"node {ctx.node_id!r}: CSV line {reader.line_num}: {exc}", retryable=False
            ) from None
        if not config.get("header", True):
            ctx.log("%d rows", len(rows))
            width = max((len(r) for r in rows), default=0)
            return {"rows": rows, "columns": list(range(width)), "count": len(rows)}
        if not rows:
            return {"rows": [], "columns": [], "count": 0}
        columns, body = rows[0], rows[1:]
        out = []
        for number, row in enumerate(body, start=2):
            if len(row) != len(columns) and config.get("strict", True):
                raise NodeExecutionError(
                    f"node {ctx.node_id!r}: CSV row {number} has {len(row)} fields, the header "
                    f"{len(columns)} (set strict: false to pad or cut rows)",
                    retryable=False,
                )
            padded = (row + [""] * len(columns))[: len(columns)]
            out.append(dict(zip(columns, padded, strict=True)))
        ctx.log("%d rows of %d columns", len(out), len(columns))
        return {"rows": out, "columns": columns, "count": len(out)}

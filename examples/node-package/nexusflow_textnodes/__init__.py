"""Text node types for Nexus-Flow (an example node package)."""

from .nodes import CsvParseNode, SlugifyNode

__all__ = ["CsvParseNode", "SlugifyNode"]
__version__ = "0.1.0"

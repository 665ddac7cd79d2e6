"""Nexus-Flow's Jupyter server extension: REST API, live events, triggers, auth and RBAC.

Enabled on install by ``jupyter-config/jupyter_server_config.d/nexusflow.json``; configured
with traitlets (``c.NexusFlow.database_url`` ...) whose defaults come from ``NEXUSFLOW_*``
environment variables.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import NexusFlow

    return [{"module": "nexusflow_server", "app": NexusFlow}]


__all__ = ["__version__"]

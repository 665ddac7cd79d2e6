"""The Nexus-Flow service: the API, websockets, webhooks and triggers in one process of their
own, the one that holds the backends' credentials (a JupyterHub service, or a small team's
server). See ``app.py``; ``python -m nexusflow_server.service`` or ``nexusflow server``."""

from __future__ import annotations

from .app import NexusFlowService, main, make_app

__all__ = ["NexusFlowService", "main", "make_app"]

"""``python -m nexusflow_server.service``: run the Nexus-Flow service (a JupyterHub service)."""

from .app import main

main()

"""Nexus-Flow's worker side: RQ worker processes, the reconciler and the Docker sandbox."""

__all__: list[str] = []

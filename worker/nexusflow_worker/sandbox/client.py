"""The Docker SDK client of this process, and whether an engine answers.

Importing this module never imports the Docker SDK (it loads on the first call).
"""

from __future__ import annotations

import os
from typing import Any

_clients: dict[tuple[int, str], Any] = {}


def docker_client() -> Any:
    """Return a Docker client for this process (``DOCKER_HOST`` and friends are honoured).

    One per process id, because RQ forks a work-horse per job and a client must not cross a
    fork.
    """
    import docker

    key = (os.getpid(), os.environ.get("DOCKER_HOST", ""))
    client = _clients.get(key)
    if client is None:
        client = docker.from_env(timeout=30)
        _clients[key] = client
    return client


def engine_error() -> str | None:
    """Return why no Docker engine answers, or ``None`` when one does."""
    try:
        docker_client().ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        return f"no Docker engine answers at {where} ({type(exc).__name__})"
    return None

"""Small process helpers shared by the engine, the notebook API and the worker."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Return whether a process with this id exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    return True

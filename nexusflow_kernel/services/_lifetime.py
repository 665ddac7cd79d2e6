"""Who keeps the embedded servers running: the processes that use them, or an explicit start.

Each server's entry in ``services.json`` says whether it is **kept** (``nexusflow services
start`` started or adopted it: it runs until ``nexusflow services stop``) and which processes
**use** it (JupyterLab, a kernel, ``nexusflow run``, a worker started on its own). A process
that starts a server, or finds one that is not kept, adds itself to its users; when it exits it
takes itself off, and the last user out stops the server. So whoever started the servers stops
them, unless something else still needs them.

A user is its pid and the kernel's start time of that pid, so a pid reused after a crash is not
taken for the dead user; users that died without leaving (SIGKILL) are dropped by whoever looks
next, and a server they alone used is stopped by the next process that leaves.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any

from ..procs import pid_alive

_registered: dict[Path, set[str]] = {}
"""Data folder -> servers this process uses (and will leave at exit)."""
_registered_pid = os.getpid()
_lock = threading.Lock()


def _start_time(pid: int) -> str | None:
    """Return the start time of ``pid`` (clock ticks since boot), None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def me() -> dict[str, Any]:
    """Describe this process as a user of the servers."""
    pid = os.getpid()
    return {"pid": pid, "started": _start_time(pid)}


def _alive(user: Any) -> bool:
    if not isinstance(user, dict) or not isinstance(user.get("pid"), int):
        return False
    if not pid_alive(user["pid"]):
        return False
    started = user.get("started")
    return started is None or _start_time(user["pid"]) in (None, started)


def live_users(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the users of a server entry that still run."""
    return [u for u in (entry or {}).get("users") or [] if _alive(u)]


def kept(entry: dict[str, Any] | None) -> bool:
    """Whether a server runs until ``nexusflow services stop`` (entries from before users were
    tracked count as kept: nobody knows who else relies on them)."""
    return bool((entry or {}).get("kept", True))


def add_user(entry: dict[str, Any], user: dict[str, Any]) -> None:
    """Record ``user`` in ``entry`` (and forget the users that died)."""
    users = [u for u in live_users(entry) if u.get("pid") != user["pid"]]
    entry["users"] = [*users, user]


def remove_user(entry: dict[str, Any], pid: int) -> bool:
    """Take ``pid`` off ``entry``'s users; return whether the server should stop now."""
    entry["users"] = [u for u in live_users(entry) if u.get("pid") != pid]
    return not kept(entry) and not entry["users"]


def registered(data_dir: Path, names: tuple[str, ...]) -> bool:
    """Whether this process already uses every server in ``names`` of ``data_dir``."""
    with _lock:
        return os.getpid() == _registered_pid and set(names) <= _registered.get(data_dir, set())


def remember(data_dir: Path, names: tuple[str, ...]) -> None:
    """Note that this process uses ``names`` and must leave them when it exits."""
    global _registered_pid
    with _lock:
        if os.getpid() != _registered_pid:  # a forked child inherits none of its parent's uses
            _registered.clear()
            _registered_pid = os.getpid()
        _registered.setdefault(data_dir, set()).update(names)


def forget(data_dir: Path) -> set[str]:
    """Return (and drop) the servers of ``data_dir`` this process uses."""
    with _lock:
        if os.getpid() != _registered_pid:
            return set()
        return _registered.pop(data_dir, set())


def used_folders() -> list[Path]:
    with _lock:
        return list(_registered) if os.getpid() == _registered_pid else []


def at_exit(leave: Any) -> None:
    """Run ``leave(data_dir)`` for every folder this process uses when the interpreter exits."""
    atexit.register(lambda: [leave(folder) for folder in used_folders()])

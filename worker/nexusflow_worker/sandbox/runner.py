"""Run code in a hardened Docker container through the Docker SDK (imported lazily).

One run: create the container with ``container_options`` (no network, read-only root, all
capabilities dropped, ...), attach to its stdin, stdout and stderr *before* starting it, start
it, send the envelope on stdin and half-close it, read the multiplexed output until the streams
end or the wall-clock deadline passes, then kill (SIGKILL, so a trap on SIGTERM changes
nothing), read the state (exit code, ``OOMKilled``) and remove the container in ``finally``.

Why stdin through the attach socket: the root filesystem is read-only and ``/tmp`` is a tmpfs
that only exists once the container runs, so nothing can be copied in beforehand; a bind mount
would need a folder shared with the engine's host; environment variables and arguments have
size limits and show up in ``docker inspect``. The attach stream works with local and remote
engines and has no size limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nexusflow_kernel.errors import NodeExecutionError, NodeTimeoutError
from nexusflow_kernel.procs import pid_alive

from .client import docker_client
from .image import entry_command, image_tag
from .protocol import MAX_RUN_S, Envelope, Limits, StreamCollector

logger = logging.getLogger(__name__)

LABEL_RUN = "nexusflow.run"
LABEL_NODE = "nexusflow.node"
LABEL_WORKER = "nexusflow.worker"
"""``<hostname>:<pid>`` of the process that started the container (used by the orphan sweep)."""

SANDBOX_USER = "65534:65534"
"""The user code runs as (``nobody:nogroup``), never root."""

def worker_label() -> str:
    """Return the value of the ``nexusflow.worker`` label for containers of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def container_options(
    *,
    image: str,
    limits: Limits,
    labels: Mapping[str, str],
    env: Mapping[str, str],
) -> dict[str, Any]:
    """Return the ``containers.create`` keyword arguments of one sandboxed run.

    Pure (no Docker import, no I/O), so a test pins every hardening flag.
    """
    memory = f"{int(limits.memory_mb)}m"
    fsize = int(limits.fsize_mb) * 1024 * 1024
    return {
        "image": image,
        "command": entry_command(),
        "user": SANDBOX_USER,
        "working_dir": "/tmp",
        "environment": dict(env),
        "labels": dict(labels),
        # stdin open and not detached: the SDK sets StdinOnce, so the engine closes the code's
        # stdin when our attach half-closes it.
        "stdin_open": True,
        "detach": False,
        "tty": False,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={int(limits.fsize_mb)}m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "ipc_mode": "private",
        "pids_limit": int(limits.pids),
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        "oom_score_adj": 1000,
        "ulimits": [
            {"name": "nofile", "soft": int(limits.nofile), "hard": int(limits.nofile)},
            {"name": "fsize", "soft": fsize, "hard": fsize},
            {"name": "core", "soft": 0, "hard": 0},
        ],
        "log_config": {"type": "none", "config": {}},
        "hostname": "sandbox",
    }


def _raw_socket(attached: Any) -> socket.socket:
    """Return the plain socket under what ``attach_socket`` gives back."""
    return getattr(attached, "_sock", attached)


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        _, writable, _ = select.select([], [sock], [], remaining)
        if writable:
            sent = sock.send(view[: 64 * 1024])
            view = view[sent:]


def _pump(sock: socket.socket, collector: StreamCollector, deadline: float) -> str | None:
    """Demultiplex the attach stream into ``collector`` until it ends.

    Returns ``"timeout"`` or ``"flood"`` when the run must be killed, else ``None``.
    """
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        readable, _, _ = select.select([sock], [], [], min(remaining, 1.0))
        if not readable:
            continue
        chunk = sock.recv(256 * 1024)
        if not chunk:
            return None
        buf += chunk
        while len(buf) >= 8:
            kind, size = struct.unpack(">BxxxL", buf[:8])
            if len(buf) < 8 + size:
                break
            collector.feed(2 if kind == 2 else 1, bytes(buf[8 : 8 + size]))
            del buf[: 8 + size]
        if collector.flooded:
            return "flood"


def run_code(
    language: str,
    source: str,
    payload: dict[str, Any],
    *,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    image: str | None = None,
    client: Any = None,
) -> tuple[Any, list[str]]:
    """Run ``source`` in a fresh sandbox container; return ``(output, log lines)``.

    Raises ``NodeTimeoutError`` past ``limits.timeout_s`` and ``NodeExecutionError`` for every
    other failure (non-zero exit, out of memory, output not JSON or too big, no engine, no
    image). The container is always removed.
    """
    import docker.errors

    limits = limits or Limits()
    client = client or docker_client()
    image = image or image_tag()
    all_labels = {LABEL_WORKER: worker_label(), **dict(labels or {})}
    options = container_options(image=image, limits=limits, labels=all_labels, env=env or {})
    envelope = Envelope(language, source, payload, limits.max_output_bytes)
    collector = StreamCollector(envelope.marker, limits)
    try:
        container = client.containers.create(**options)
    except docker.errors.ImageNotFound:
        raise NodeExecutionError(
            f"the sandbox image {image} is not built; run `nexusflow sandbox build`",
            retryable=False,
        ) from None
    except docker.errors.DockerException as exc:
        raise NodeExecutionError(f"the sandbox container could not be created: {exc}") from exc
    try:
        attached = client.api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        sock = _raw_socket(attached)
        try:
            try:
                container.start()
            except docker.errors.APIError as exc:
                raise NodeExecutionError(
                    f"the sandbox container could not start: {exc.explanation or exc}"
                ) from exc
            deadline = time.monotonic() + limits.timeout_s
            stop: str | None = None
            try:
                _send_all(sock, envelope.encode(), deadline)
                sock.shutdown(socket.SHUT_WR)
            except TimeoutError:
                stop = "timeout"
            except OSError:
                pass  # the code ended before reading everything; its exit status tells why
            if stop is None:
                stop = _pump(sock, collector, deadline)
        finally:
            # shutdown, not just close: the SDK's response object holds another reference to
            # the socket, and an unread, still-open stream would block the engine's copy.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(Exception):
                attached.close()
        if stop is not None:
            _kill(container)
        collector.close()
        if stop == "timeout":
            raise NodeTimeoutError(f"timed out after {limits.timeout_s:g} s")
        if stop == "flood":
            raise NodeExecutionError(
                f"killed: wrote more than {limits.max_stream_bytes // (1024 * 1024)} MiB "
                "to stdout and stderr"
            )
        try:
            # The streams can end before the code does (it closed them): wait out the deadline.
            remaining = max(0.5, deadline - time.monotonic())
            status = container.wait(timeout=remaining + 1.0)["StatusCode"]
        except Exception:
            _kill(container)
            raise NodeTimeoutError(f"timed out after {limits.timeout_s:g} s") from None
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            raise NodeExecutionError(f"killed: over the memory limit of {limits.memory_mb} MB")
        return collector.outcome(status), collector.logs
    except NodeExecutionError as exc:
        exc.logs = collector.logs  # type: ignore[attr-defined]  (shown with the failure)
        raise
    finally:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:  # the orphan sweep will get it
            logger.warning("could not remove sandbox container %s: %s", container.id[:12], exc)


def _kill(container: Any) -> None:
    import docker.errors

    try:
        container.kill()
    except docker.errors.DockerException:
        pass  # already gone or already stopped


def _created_at(attrs: Mapping[str, Any]) -> float:
    raw = str(attrs.get("Created", ""))
    try:
        # Docker gives nanoseconds; ``fromisoformat`` takes at most microseconds.
        head, _, frac = raw.rstrip("Z").partition(".")
        moment = datetime.fromisoformat(head + ("." + frac[:6] if frac else ""))
        return moment.replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0



def sweep_orphans(
    max_age_s: float = MAX_RUN_S + 60, *, run_id: str | None = None, client: Any = None
) -> list[str]:
    """Remove sandbox containers left behind by dead workers; return their ids.

    A container carrying the ``nexusflow.worker`` label goes when the process named there ran
    on this host and is gone, or when it was created more than ``max_age_s`` seconds ago (by
    default a minute more than ``MAX_RUN_S``, the longest timeout a run may have). ``run_id``
    narrows the sweep to one run. Call it when a worker starts.
    """
    import docker.errors

    client = client or docker_client()
    wanted = [LABEL_WORKER] + ([f"{LABEL_RUN}={run_id}"] if run_id else [])
    host = socket.gethostname()
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": wanted}):
        owner = container.labels.get(LABEL_WORKER, "")
        owner_host, _, owner_pid = owner.rpartition(":")
        dead = owner_host == host and owner_pid.isdigit() and not pid_alive(int(owner_pid))
        old = time.time() - _created_at(container.attrs) > max_age_s
        if not (dead or old):
            continue
        try:
            container.remove(force=True)
            removed.append(container.id)
            logger.info("removed orphaned sandbox container %s (%s)", container.id[:12], owner)
        except docker.errors.NotFound:
            pass
    return removed

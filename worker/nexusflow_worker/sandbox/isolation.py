"""Code isolation policies and ``run_isolated``, the one door to running user code.

``docker``   a hardened container (the default whenever an engine answers): the boundary.
``process``  a subprocess in its own session with an empty environment (plus the declared
             secrets), a fresh working folder and ``setrlimit`` limits. A convenience for
             machines without Docker, not a security boundary: it runs as the worker's user.
``none``     the code runs inside the worker process (bash as a plain child process). Only for
             a trusted single-user laptop; no limit is enforced on Python code.
``auto``     ``docker`` when an engine answers; otherwise code fails with a clear error. It
             never falls back to running code unsandboxed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from nexusflow_kernel.errors import NodeExecutionError, NodeTimeoutError

from .protocol import STDERR, STDOUT, Envelope, Limits, StreamCollector
from .recipe import entry

POLICIES = ("auto", "docker", "process", "none")
"""Accepted values of ``settings.code_isolation`` (``NEXUSFLOW_CODE_ISOLATION``)."""

LANGUAGES = ("python", "bash")

ENTRY_PATH = entry.__file__
"""The entry program run by the ``process`` policy (the same file the image runs)."""


def effective_policy(policy: str, *, engine_problem: str | None = None) -> str:
    """Return the policy code gets: ``docker``, ``process``, ``none`` or ``unavailable``."""
    if policy not in POLICIES:
        return "unavailable"
    if policy in ("auto", "docker"):
        return "unavailable" if engine_problem else "docker"
    return policy


def _no_engine(policy: str, problem: str) -> NodeExecutionError:
    return NodeExecutionError(
        f"code isolation is {policy!r} but {problem}; start an engine (scripts/setup-docker.sh) "
        "or set NEXUSFLOW_CODE_ISOLATION=process (not a security boundary) or none (trusted "
        "single-user machines only)"
    )


def run_isolated(
    language: str,
    source: str,
    payload: dict[str, Any],
    *,
    policy: str,
    limits: Limits | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    image: str | None = None,
) -> tuple[Any, list[str]]:
    """Run ``source`` (``python`` or ``bash``) under ``policy``; return ``(output, logs)``.

    ``payload`` is ``{"inputs": ..., "params": ..., "env": ...}`` (``env``: the run
    environment's variables); ``env`` holds the only environment variables the code sees
    besides the basics (``PATH``, ``HOME``, ``LANG``); ``labels`` and ``image`` only matter
    to the ``docker`` policy. Failures raise ``NodeExecutionError``
    (``NodeTimeoutError`` for the wall-clock limit).
    """
    if language not in LANGUAGES:
        raise NodeExecutionError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
    if policy not in POLICIES:
        raise NodeExecutionError(
            f"code isolation {policy!r} is not one of {', '.join(POLICIES)}", retryable=False
        )
    limits = limits or Limits()
    env = dict(env or {})
    if policy in ("auto", "docker"):
        from .client import engine_error
        from .runner import run_code

        problem = engine_error()
        if problem:
            raise _no_engine(policy, problem)
        return run_code(
            language, source, payload, limits=limits, env=env, labels=labels, image=image
        )
    if policy == "process":
        return run_in_process(language, source, payload, limits=limits, env=env)
    return run_unisolated(language, source, payload, limits=limits, env=env)


def _limit_resources(limits: Limits) -> None:
    """Set the child's resource limits (runs between fork and exec)."""
    cpu = max(1, int(limits.timeout_s) + 1)
    memory = int(limits.memory_mb) * 1024 * 1024
    fsize = int(limits.fsize_mb) * 1024 * 1024
    for which, value in (
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_NPROC, int(limits.pids)),
        (resource.RLIMIT_FSIZE, fsize),
        (resource.RLIMIT_NOFILE, int(limits.nofile)),
        (resource.RLIMIT_CORE, 0),
    ):
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def run_in_process(
    language: str,
    source: str,
    payload: dict[str, Any],
    *,
    limits: Limits,
    env: Mapping[str, str],
    isolate: bool = True,
) -> tuple[Any, list[str]]:
    """Run the code in a limited subprocess (the ``process`` policy); see ``run_isolated``.

    With ``isolate=False`` (bash under the ``none`` policy) the child keeps this process's
    environment and gets no resource limit but the wall clock.
    """
    envelope = Envelope(language, source, payload, limits.max_output_bytes)
    collector = StreamCollector(envelope.marker, limits)
    workdir = tempfile.mkdtemp(prefix="nexusflow-code-")
    if isolate:
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": workdir,
            "LANG": "C.UTF-8",
        }
    else:
        base = dict(os.environ)
    child_env = {**base, "TMPDIR": workdir, **env}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-u", ENTRY_PATH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=child_env,
            start_new_session=True,
            preexec_fn=(lambda: _limit_resources(limits)) if isolate else None,
        )
        deadline = time.monotonic() + limits.timeout_s
        stop = _pump_pipes(proc, envelope.encode(), collector, deadline)
        if stop is None:  # the streams can end before the code does (it closed them)
            try:
                proc.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop = "timeout"
        if stop is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children the code left behind
        collector.close()
        if stop == "timeout":
            raise NodeTimeoutError(f"timed out after {limits.timeout_s:g} s")
        if stop == "flood":
            raise NodeExecutionError(
                f"killed: wrote more than {limits.max_stream_bytes // (1024 * 1024)} MiB "
                "to stdout and stderr"
            )
        if status < 0:
            status = 128 - status
        if status == 128 + signal.SIGXCPU:
            raise NodeExecutionError(f"killed: over the CPU time limit of {limits.timeout_s:g} s")
        return collector.outcome(status), collector.logs
    except NodeExecutionError as exc:
        exc.logs = collector.logs  # type: ignore[attr-defined]  (shown with the failure)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _pump_pipes(
    proc: subprocess.Popen[bytes], data: bytes, collector: StreamCollector, deadline: float
) -> str | None:
    """Write ``data`` to the child's stdin and read its outputs until they end or time runs out."""
    assert proc.stdin and proc.stdout and proc.stderr
    streams = {proc.stdout.fileno(): STDOUT, proc.stderr.fileno(): STDERR}
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    pending = memoryview(data)
    writers = [stdin_fd]
    while streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        readable, writable, _ = select.select(list(streams), writers, [], min(remaining, 1.0))
        if writable:
            try:
                pending = pending[os.write(stdin_fd, pending[: 64 * 1024]) :]
            except BrokenPipeError:
                pending = pending[:0]
            if not pending:
                proc.stdin.close()
                writers = []
        for fd in readable:
            chunk = os.read(fd, 256 * 1024)
            if not chunk:
                del streams[fd]
                continue
            collector.feed(streams[fd], chunk)
        if collector.flooded:
            return "flood"
    return None


def run_unisolated(
    language: str,
    source: str,
    payload: dict[str, Any],
    *,
    limits: Limits,
    env: Mapping[str, str],
) -> tuple[Any, list[str]]:
    """Run the code without isolation (the ``none`` policy); see ``run_isolated``.

    Python runs in this process with its prints captured and no limit at all; bash runs as a
    child process with this process's environment plus ``env`` and only the wall-clock limit.
    Trusted single-user machines only.
    """
    if language == "bash":
        return run_in_process(language, source, payload, limits=limits, env=env, isolate=False)
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            output = entry.run_python(source, payload)
        text = entry.encode_output(output, limits.max_output_bytes)
    except (entry.CodeExit, entry.CodeError) as exc:
        logs = stdout.getvalue().splitlines() + stderr.getvalue().splitlines()
        if isinstance(exc, entry.CodeError):
            error = NodeExecutionError(str(exc), retryable=False)
        else:
            last = stderr.getvalue().strip().splitlines()
            reason = f"code exited with status {exc.status}"
            error = NodeExecutionError(f"{reason}: {last[-1]}" if last else reason)
        error.logs = logs  # type: ignore[attr-defined]
        raise error from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    logs = stdout.getvalue().splitlines() + stderr.getvalue().splitlines()
    return json.loads(text), logs

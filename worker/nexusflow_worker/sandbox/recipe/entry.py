"""Run one piece of user code: the program inside the sandbox image (standard library only).

It reads one JSON envelope from stdin::

    {"marker": "...", "language": "python" | "bash", "source": "...",
     "payload": {"inputs": {...}, "params": {...}, "env": {...}},
     "max_output_bytes": 1048576}

runs the code, and writes the code's output as one line ``<marker> {"ok": true, "output": ...}``
(or ``{"ok": false, "error": "..."}``) on stdout. Everything else the code prints on stdout or
stderr is a log line. The marker is a random string the caller chose for this run, so a print
cannot be mistaken for the result. A failing code exits non-zero and the last stderr line says
why.

Python: the source defines ``main(inputs, params)``, whose return value is the output, or sets a
global ``output``; neither gives ``null``. The variables of the run's environment are the
global ``env`` (a dict, as ``env['NAME']`` in expressions). Bash: the script gets the payload as
JSON on stdin; its output is the last non-empty line of stdout, which must be JSON; the lines
before it are logs.
"""

from __future__ import annotations

import json
import linecache
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import Any

SOURCE_NAME = "<code>"
"""The file name user code gets in tracebacks."""


class CodeError(Exception):
    """The code ran but its result cannot be used (not JSON, too big)."""


class CodeExit(Exception):
    """The code ended with a non-zero status."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)


def _user_traceback(exc: BaseException) -> str:
    """Format ``exc`` without the frames of this file, so the author sees only their code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_python(source: str, payload: dict[str, Any]) -> Any:
    """Execute Python ``source`` in a fresh namespace and return its output.

    Raises ``CodeExit`` when the code raises or calls ``sys.exit`` with a failing status; the
    traceback has been written to stderr by then.
    """
    linecache.cache[SOURCE_NAME] = (len(source), None, source.splitlines(True), SOURCE_NAME)
    namespace: dict[str, Any] = {
        "__name__": "nexusflow_code",
        "__builtins__": __builtins__,
        "env": dict(payload.get("env") or {}),  # the run's environment variables
    }
    try:
        code = compile(source, SOURCE_NAME, "exec")
        exec(code, namespace)
        main = namespace.get("main")
        if callable(main):
            return main(payload.get("inputs", {}), payload.get("params", {}))
        return namespace.get("output")
    except SystemExit as exc:
        if exc.code in (None, 0):
            return namespace.get("output")
        if not isinstance(exc.code, int):
            sys.stderr.write(f"{exc.code}\n")
        raise CodeExit(exc.code if isinstance(exc.code, int) else 1) from None
    except BaseException as exc:  # the author's exception, KeyboardInterrupt included
        sys.stderr.write(_user_traceback(exc))
        raise CodeExit(1) from None


def _lines(stream: Any, limit: int) -> Any:
    """Yield ``(line, too_long)``; a line over ``limit`` bytes is cut there, its rest dropped."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= limit:
            yield line, False
            continue
        while True:
            rest = stream.readline(limit + 1)
            if not rest or rest.endswith(b"\n"):
                break
        yield line, True


def run_bash(
    source: str,
    payload: dict[str, Any],
    write_log: Callable[[bytes], None],
    *,
    max_output_bytes: int,
    env: dict[str, str] | None = None,
    stderr: Any = None,
) -> Any:
    """Run ``source`` with bash, the payload as JSON on stdin, and return its output.

    Every stdout line but the last non-empty one goes to ``write_log``; that last line is the
    output and must be JSON. ``stderr`` is where the script's stderr goes (inherited when
    ``None``).
    """
    fd, path = tempfile.mkstemp(prefix="nexusflow-", suffix=".sh")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as script:
            script.write(source)
        proc = subprocess.Popen(
            ["bash", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        data = json.dumps(payload).encode()

        def feed() -> None:  # in a thread: a script that never reads stdin must not block us
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                proc.stdin.close()
            except OSError:
                pass

        threading.Thread(target=feed, daemon=True).start()
        held: list[bytes] = []  # the last non-empty line so far, then blank lines after it
        cut = False
        assert proc.stdout is not None
        for line, too_long in _lines(proc.stdout, max_output_bytes):
            if line.strip():
                for pending in held:
                    write_log(pending)
                held = [line + b" [line cut]\n" if too_long else line]
                cut = too_long
            elif held:
                held.append(line)
            else:
                write_log(line)
        status = proc.wait()
    finally:
        os.unlink(path)
    if status != 0:
        for pending in held:  # a failed script has no output: its last line is a log too
            write_log(pending)
        raise CodeExit(status if status > 0 else 128 - status)
    if not held:
        return None
    if cut:
        raise CodeError(f"output is over the limit of {max_output_bytes} bytes")
    last = held[0].decode("utf-8", "replace").strip()
    try:
        return json.loads(last)
    except ValueError:
        shown = last if len(last) <= 80 else last[:77] + "..."
        raise CodeError(f"output is not JSON: the last line of stdout is {shown!r}") from None


def encode_output(output: Any, max_output_bytes: int) -> str:
    """Return ``output`` as JSON text, or raise ``CodeError`` when it is not JSON or too big."""
    try:
        text = json.dumps(output, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise CodeError(f"output is not JSON: {exc}") from None
    if len(text.encode()) > max_output_bytes:
        raise CodeError(
            f"output is {len(text.encode())} bytes of JSON, over the limit of "
            f"{max_output_bytes} bytes"
        )
    return text


def main() -> int:
    """Read the envelope on stdin, run the code, write the result line; return the status."""
    envelope = json.loads(sys.stdin.buffer.read())
    marker = envelope["marker"]
    limit = int(envelope.get("max_output_bytes", 1024 * 1024))
    payload = envelope.get("payload") or {}
    # The result goes out through a private copy of stdout, so code that closes or replaces
    # sys.stdout cannot lose it; the code itself gets an empty stdin (Python) or the payload.
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass

    def emit(body: str) -> None:
        flush()
        # A newline first, in case the code's last print did not end its line.
        result.write(f"\n{marker} {body}\n")
        result.flush()

    def write_log(line: bytes) -> None:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()

    try:
        if envelope["language"] == "bash":
            output = run_bash(
                envelope["source"], payload, write_log, max_output_bytes=limit, env=dict(os.environ)
            )
        else:
            output = run_python(envelope["source"], payload)
        text = encode_output(output, limit)
    except CodeExit as exc:
        flush()
        return exc.status
    except CodeError as exc:
        emit(json.dumps({"ok": False, "error": str(exc)}))
        return 0
    emit('{"ok":true,"output":' + text + "}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

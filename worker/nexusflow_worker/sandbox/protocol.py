"""The wire between the worker and the entry program: the envelope in, the streams out.

Every isolation policy that runs the entry program in another process (``docker``,
``process``) sends the same envelope on stdin and reads stdout and stderr through a
``StreamCollector``, which keeps log lines up to a cap, spots the result line by its marker and
notices a flood of output.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from nexusflow_kernel.errors import NodeExecutionError

STDOUT = 1
STDERR = 2

MIB = 1024 * 1024

MAX_RUN_S = 86400.0
"""Longest ``timeout_s`` a sandboxed run may have; a container older than that is an orphan."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one code run; the defaults suit a small data-shaping step."""

    timeout_s: float = 60.0
    """Wall-clock limit; the container (or process group) is killed when it passes."""
    memory_mb: int = 256
    """Memory limit (no swap) of the container; the address-space limit of a process."""
    cpus: float = 1.0
    """CPU share of the container (``nano_cpus``)."""
    pids: int = 64
    """Most processes and threads at once (stops fork bombs)."""
    nofile: int = 256
    """Most open files."""
    fsize_mb: int = 64
    """Largest file the code may write (also the size of the tmpfs ``/tmp``)."""
    max_log_bytes: int = MIB
    """Log text kept from stdout and stderr; the rest is cut with a marker."""
    max_output_bytes: int = MIB
    """Largest JSON output; a bigger one fails the run."""
    max_stream_bytes: int = 16 * MIB
    """Total stdout and stderr after which the code is killed as a flood."""


@dataclass
class Envelope:
    """What the entry program reads on stdin; ``marker`` tags the result line."""

    language: str
    source: str
    payload: dict[str, Any]
    max_output_bytes: int
    marker: str = field(default_factory=lambda: "nexusflow-result-" + secrets.token_hex(16))

    def encode(self) -> bytes:
        """Return the JSON bytes sent on stdin."""
        return json.dumps(
            {
                "marker": self.marker,
                "language": self.language,
                "source": self.source,
                "payload": self.payload,
                "max_output_bytes": self.max_output_bytes,
            },
            separators=(",", ":"),
        ).encode()


class StreamCollector:
    """Split the code's stdout and stderr into log lines and the marked result line."""

    def __init__(self, marker: str, limits: Limits) -> None:
        self._marker = marker.encode()
        self._limits = limits
        self._partial = {STDOUT: bytearray(), STDERR: bytearray()}
        self._skipping = {STDOUT: False, STDERR: False}
        self._line_cap = limits.max_output_bytes + len(self._marker) + 64
        self.logs: list[str] = []
        self._log_bytes = 0
        self.cut_bytes = 0
        self.total_bytes = 0
        self.result: bytes | None = None
        self.result_too_big = False
        self.last_stderr = ""
        self._blank_stdout = 0  # blank stdout lines not logged yet (one precedes the result)

    @property
    def flooded(self) -> bool:
        """Whether the code wrote more than ``max_stream_bytes`` in all."""
        return self.total_bytes > self._limits.max_stream_bytes

    def feed(self, stream: int, data: bytes) -> None:
        """Take one chunk of ``stream`` (``STDOUT`` or ``STDERR``)."""
        self.total_bytes += len(data)
        buf = self._partial[stream]
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            if self._skipping[stream]:
                self._skipping[stream] = False
            else:
                self._line(stream, bytes(buf[start:end]))
            start = end + 1
        del buf[:start]
        if len(buf) > self._line_cap:  # a line longer than anything we keep: cut it here
            if not self._skipping[stream]:
                self._line(stream, bytes(buf), cut=True)
            self._skipping[stream] = True
            buf.clear()

    def close(self) -> None:
        """Take the unterminated last lines once the streams have ended."""
        for stream, buf in self._partial.items():
            if buf and not self._skipping[stream]:
                self._line(stream, bytes(buf))
            buf.clear()
        self._flush_blank()

    def _line(self, stream: int, line: bytes, cut: bool = False) -> None:
        if stream == STDOUT and not line.strip():
            self._blank_stdout += 1
            return
        if stream == STDOUT and self._marker in line:
            before, _, rest = line.partition(self._marker)
            self._flush_blank(keep_last=False)
            if before.strip():
                self._log(before)
            if cut:
                self.result_too_big = True
            else:
                self.result = rest.strip()
            return
        if stream == STDERR and line.strip():
            self.last_stderr = line.decode("utf-8", "replace").strip()[:500]
        if stream == STDOUT:
            self._flush_blank()
        self._log(line)

    def _flush_blank(self, keep_last: bool = True) -> None:
        count, self._blank_stdout = self._blank_stdout, 0
        for _ in range(count if keep_last else count - 1):
            self._log(b"")

    def _log(self, line: bytes) -> None:
        if self._log_bytes + len(line) + 1 > self._limits.max_log_bytes:
            if not self.cut_bytes:
                self.logs.append(f"[output cut: over {self._limits.max_log_bytes} bytes of logs]")
            self.cut_bytes += len(line) + 1
            return
        self._log_bytes += len(line) + 1
        self.logs.append(line.decode("utf-8", "replace").rstrip("\r"))

    def outcome(self, status: int) -> Any:
        """Return the code's output given its exit ``status``, or raise ``NodeExecutionError``."""
        if status != 0:
            reason = f"code exited with status {status}"
            if status > 128:
                reason = f"code was killed by signal {status - 128}"
            last = self.last_stderr
            raise NodeExecutionError(f"{reason}: {last}" if last else reason)
        if self.result_too_big:
            raise NodeExecutionError(
                f"output is over the limit of {self._limits.max_output_bytes} bytes"
            )
        if self.result is None:
            raise NodeExecutionError(
                "code ended without a result (it closed the result stream or exited early)"
            )
        if len(self.result) > self._limits.max_output_bytes + 32:
            raise NodeExecutionError(
                f"output is over the limit of {self._limits.max_output_bytes} bytes"
            )
        try:
            record = json.loads(self.result)
        except ValueError:
            raise NodeExecutionError("output is not JSON") from None
        if not isinstance(record, dict) or not record.get("ok"):
            error = record.get("error") if isinstance(record, dict) else None
            raise NodeExecutionError(str(error or "output is not JSON"), retryable=False)
        return record.get("output")

"""Hostile code nodes against a real Docker engine: each attack is contained.

For every attack: the node fails with a clear reason (or, where that is the natural outcome,
succeeds with an output showing the attack found nothing), its container is gone afterwards,
and this process (standing in for the worker) is unaffected. Traffic only ever aims at
loopback; the name lookup fails without sending anything.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from typing import Any

import pytest
from nexusflow_worker.sandbox import CodeNode
from test_sandbox import containers_of, ensure_sandbox, make_ctx

from nexusflow_kernel.errors import NodeExecutionError, NodeTimeoutError

TIMEOUT_S = 3


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    return ensure_sandbox()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def attack(
    language: str, source: str, secrets: dict[str, str] | None = None
) -> tuple[Any, Any, float]:
    """Run a code node; return ``(output or None, error or None, seconds)``, checking cleanup."""
    config = {"language": language, "source": source, "timeout_s": TIMEOUT_S}
    if secrets:
        config["secrets"] = sorted(secrets)
    ctx = make_ctx(config, secrets=secrets.__getitem__ if secrets else None)
    pid, rss = os.getpid(), rss_mb()
    started = time.monotonic()
    output = error = None
    try:
        output = CodeNode().run(ctx)
    except NodeExecutionError as exc:
        error = exc
    seconds = time.monotonic() - started
    assert containers_of(ctx.run_id) == [], "the container outlived its run"
    assert os.getpid() == pid
    assert rss_mb() - rss < 200, "the worker's memory grew"
    return output, error, seconds


CASES = [
    # (id, language, source, error class, reason regex)
    (
        "write-root",
        "python",
        "open('/var/tmp/x', 'w')",
        NodeExecutionError,
        r"^code exited with status 1: OSError: \[Errno 30\] Read-only file system",
    ),
    (
        "exec-from-tmp",
        "bash",
        "cp /bin/true /tmp/t && chmod +x /tmp/t && /tmp/t",
        NodeExecutionError,
        r"^code exited with status 126: .*Permission denied",
    ),
    (
        "read-shadow",
        "python",
        "output = open('/etc/shadow').read()",
        NodeExecutionError,
        r"^code exited with status 1: PermissionError: \[Errno 13\]",
    ),
    ("fork-bomb", "bash", ":(){ :|:& };:", NodeTimeoutError, rf"^timed out after {TIMEOUT_S} s$"),
    (
        "allocate-10gb",
        "python",
        "blocks = []\nfor _ in range(100):\n    blocks.append(b'x' * 100_000_000)",
        NodeExecutionError,
        r"^killed: over the memory limit of 256 MB$",
    ),
    (
        "while-true",
        "python",
        "while True:\n    pass",
        NodeTimeoutError,
        rf"^timed out after {TIMEOUT_S} s$",
    ),
    (
        "postgres-port",
        "python",
        "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)",
        NodeExecutionError,
        r"^code exited with status 1: ConnectionRefusedError",
    ),
    (
        "redis-port",
        "python",
        "import socket\nsocket.create_connection(('127.0.0.1', 6379), timeout=2)",
        NodeExecutionError,
        r"^code exited with status 1: ConnectionRefusedError",
    ),
    (
        "resolve-name",
        "python",
        "import socket\nsocket.getaddrinfo('pypi.org', 443)",
        NodeExecutionError,
        r"^code exited with status 1: socket.gaierror",
    ),
    (
        "docker-socket",
        "python",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')",
        NodeExecutionError,
        r"^code exited with status 1: FileNotFoundError",
    ),
    (
        "mount",
        "bash",
        "mount -t tmpfs none /tmp",
        NodeExecutionError,
        r"^code exited with status 32: ",
    ),
    (
        "setuid-root",
        "python",
        "import os\nos.setuid(0)",
        NodeExecutionError,
        r"^code exited with status 1: PermissionError: \[Errno 1\]",
    ),
    (
        "print-100mb",
        "python",
        "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(100):\n    sys.stdout.write(chunk)",
        NodeExecutionError,
        r"^killed: wrote more than 16 MiB to stdout and stderr$",
    ),
    (
        "close-streams-and-hang",
        "python",
        "import os, time\nos.closerange(0, 4096)\ntime.sleep(60)",
        NodeTimeoutError,
        rf"^timed out after {TIMEOUT_S} s$",
    ),
    (
        "ignore-sigterm",
        "bash",
        "trap '' TERM INT HUP\nwhile true; do sleep 1; done",
        NodeTimeoutError,
        rf"^timed out after {TIMEOUT_S} s$",
    ),
]


@pytest.mark.parametrize(
    ("language", "source", "error_class", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_attack_is_contained(
    sandbox_image: str, language: str, source: str, error_class: type, reason: str
) -> None:
    output, error, seconds = attack(language, source)
    assert output is None and error is not None, f"the attack succeeded: {output!r}"
    assert isinstance(error, error_class), repr(error)
    assert re.search(reason, str(error)), str(error)
    assert seconds < TIMEOUT_S + 5


def test_no_secret_of_the_worker_or_another_node_is_visible(
    sandbox_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_credential = "worker-" + uuid.uuid4().hex
    monkeypatch.setenv("NEXUSFLOW_DATABASE_PASSWORD_FOR_TEST", worker_credential)
    other_secret, own_secret = "other-" + uuid.uuid4().hex, "own-" + uuid.uuid4().hex
    # Another node holds its secret in a container that runs at the same time.
    other = make_ctx(
        {"language": "bash", "source": "sleep 4; echo 1", "timeout_s": 10, "secrets": ["OTHER"]},
        secrets={"OTHER": other_secret}.__getitem__,
    )
    thread = threading.Thread(target=CodeNode().run, args=(other,))
    thread.start()
    time.sleep(1)
    source = (
        "import glob, os\n"
        "seen = {'environ': dict(os.environ)}\n"
        "for path in glob.glob('/proc/[0-9]*/environ'):\n"
        "    try:\n"
        "        seen[path] = open(path, 'rb').read().decode('utf-8', 'replace')\n"
        "    except OSError as exc:\n"
        "        seen[path] = repr(exc)\n"
        "seen['pids'] = sorted(int(p.split('/')[2]) for p in glob.glob('/proc/[0-9]*'))\n"
        "output = seen\n"
    )
    try:
        output, error, _ = attack("python", source, secrets={"OWN": own_secret})
    finally:
        thread.join()
    assert error is None, str(error)
    text = repr(output)
    assert worker_credential not in text
    assert other_secret not in text
    assert "NEXUSFLOW_DATABASE_PASSWORD_FOR_TEST" not in text
    assert output["environ"]["OWN"] == own_secret
    assert "OWN=" + own_secret in output["/proc/1/environ"]
    assert 1 in output["pids"] and max(output["pids"]) < 100, "it sees processes of the host"


def test_setuid_binaries_are_stripped_and_powerless(sandbox_image: str) -> None:
    source = (
        "files=$(find / -xdev -perm /6000 -type f 2>/dev/null | wc -l)\n"
        "nnp=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)\n"
        "cap=$(awk '/^CapEff/ {print $2}' /proc/self/status)\n"
        'echo "{\\"setid_files\\": $files, \\"no_new_privs\\": $nnp, \\"cap_eff\\": \\"$cap\\", '
        '\\"uid\\": $(id -u)}"\n'
    )
    output, error, _ = attack("bash", source)
    assert error is None, str(error)
    assert output == {
        "setid_files": 0,
        "no_new_privs": 1,
        "cap_eff": "0000000000000000",
        "uid": 65534,
    }


def test_the_worker_still_runs_code_afterwards(sandbox_image: str) -> None:
    output, error, seconds = attack("python", "def main(inputs, params):\n    return 'fine'")
    assert (output, error) == ("fine", None)
    assert seconds < 5

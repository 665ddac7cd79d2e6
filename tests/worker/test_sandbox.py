"""The code node and its sandbox, against a real Docker engine (no mocks, no skips).

The session fixture makes an engine answer (``scripts/setup-docker.sh``) and builds the image
once; later sessions find it built.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from nexusflow_worker.sandbox import (
    CodeNode,
    Limits,
    build_image,
    container_options,
    engine_error,
    image_tag,
    run_isolated,
    sweep_orphans,
)
from nexusflow_worker.sandbox.client import docker_client
from nexusflow_worker.sandbox.image import apt_mirror, entry_command
from nexusflow_worker.sandbox.runner import LABEL_RUN, LABEL_WORKER

from nexusflow_kernel.errors import NodeExecutionError, NodeTimeoutError
from nexusflow_kernel.nodes.base import NodeContext
from nexusflow_kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def ensure_sandbox() -> str:
    """Make a Docker engine answer and the sandbox image exist; return the image tag."""
    if engine_error() is not None:
        subprocess.run(["bash", str(ROOT / "scripts" / "setup-docker.sh")], check=True)
    problem = engine_error()
    assert problem is None, problem
    return build_image(Settings.from_env().data_dir).tag


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    return ensure_sandbox()


def make_ctx(config: dict[str, Any], *, policy: str = "docker", **kwargs: Any) -> NodeContext:
    settings = replace(Settings.from_env(), code_isolation=policy)
    if "max_output_bytes" in kwargs:
        settings = replace(settings, max_output_bytes=kwargs.pop("max_output_bytes"))
    defaults: dict[str, Any] = {
        "run_id": "run-" + uuid.uuid4().hex[:12],
        "node_id": "code1",
        "attempt": 1,
        "config": config,
        "inputs": {},
        "params": {},
        "settings": settings,
    }
    defaults.update(kwargs)
    return NodeContext(**defaults)


def run_node(config: dict[str, Any], **kwargs: Any) -> tuple[Any, NodeContext]:
    ctx = make_ctx({"timeout_s": 5, **config}, **kwargs)
    return CodeNode().run(ctx), ctx


def containers_of(run_id: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={LABEL_RUN}={run_id}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def log_text(ctx: NodeContext) -> str:
    return ctx.log.text()


# --- the node type -------------------------------------------------------------------------


def test_import_of_the_node_does_not_import_docker() -> None:
    code = "import sys, nexusflow_worker.sandbox.node; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_node_type_declaration() -> None:
    entry = CodeNode.describe()
    assert entry["type"] == "code"
    assert entry["queue"] == "sandbox"
    assert entry["category"] == "advanced"
    assert CodeNode.effectful is True
    props = entry["config_schema"]["properties"]
    assert set(props) == {
        "language",
        "source",
        "image",
        "timeout_s",
        "memory_mb",
        "cpus",
        "secrets",
    }
    assert props["language"]["enum"] == ["python", "bash"]


def test_check_config() -> None:
    node = CodeNode()
    assert (
        node.check_config({"language": "python", "source": "def main(i, p):\n    return 1"}) == []
    )
    [(pointer, message)] = node.check_config({"language": "python", "source": "def f(:\n"})
    assert pointer == "/source" and "line 1" in message
    assert node.check_config({"language": "bash", "source": "  \n"}) == [
        ("/source", "the bash script is empty")
    ]
    assert node.check_config({"language": "bash", "source": "echo 1"}) == []


# --- the container ------------------------------------------------------------------------


def test_container_options_keep_every_hardening_flag() -> None:
    options = container_options(
        image="img:1",
        limits=Limits(timeout_s=5, memory_mb=128, cpus=0.5, pids=32, nofile=100, fsize_mb=8),
        labels={"nexusflow.run": "r", "nexusflow.node": "n", "nexusflow.worker": "h:1"},
        env={"TOKEN": "t"},
    )
    assert options == {
        "image": "img:1",
        "command": entry_command(),
        "user": "65534:65534",
        "working_dir": "/tmp",
        "environment": {"TOKEN": "t"},
        "labels": {"nexusflow.run": "r", "nexusflow.node": "n", "nexusflow.worker": "h:1"},
        "stdin_open": True,
        "detach": False,
        "tty": False,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=8m"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "ipc_mode": "private",
        "pids_limit": 32,
        "mem_limit": "128m",
        "memswap_limit": "128m",
        "nano_cpus": 500_000_000,
        "oom_score_adj": 1000,
        "ulimits": [
            {"name": "nofile", "soft": 100, "hard": 100},
            {"name": "fsize", "soft": 8 * 1024 * 1024, "hard": 8 * 1024 * 1024},
            {"name": "core", "soft": 0, "hard": 0},
        ],
        "log_config": {"type": "none", "config": {}},
        "hostname": "sandbox",
    }


def test_running_container_shows_the_hardening(sandbox_image: str) -> None:
    ctx = make_ctx(
        {
            "language": "python",
            # Long enough to be inspected while it runs, even on a busy machine.
            "source": "import time\ntime.sleep(6)\noutput = 1",
            "timeout_s": 30,
            "memory_mb": 128,
            "cpus": 0.5,
        }
    )
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(out=CodeNode().run(ctx)))
    thread.start()
    try:
        deadline = time.time() + 20
        while not (ids := containers_of(ctx.run_id)) and time.time() < deadline:
            time.sleep(0.05)
        assert ids, "the container never showed up"
        attrs = docker_client().api.inspect_container(ids[0])
    finally:
        thread.join()
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert host["PidsLimit"] == 64
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"]
    assert attrs["Config"]["User"] == "65534:65534"
    assert attrs["Config"]["Labels"][LABEL_RUN] == ctx.run_id
    assert attrs["Config"]["Labels"]["nexusflow.node"] == "code1"
    assert attrs["Config"]["Labels"][LABEL_WORKER].endswith(f":{os.getpid()}")
    assert result["out"] == 1
    assert containers_of(ctx.run_id) == []


def test_python_main_gets_inputs_and_params(sandbox_image: str) -> None:
    source = (
        "def main(inputs, params):\n"
        "    print('adding', inputs['A'], params['n'])\n"
        "    return {'sum': inputs['A'] + params['n'], 'tags': ['x', None, 1.5]}\n"
    )
    out, ctx = run_node({"language": "python", "source": source}, inputs={"A": 40}, params={"n": 2})
    assert out == {"sum": 42, "tags": ["x", None, 1.5]}
    assert "adding 40 2" in log_text(ctx)
    assert containers_of(ctx.run_id) == []


def test_python_output_variable_and_stderr_logs(sandbox_image: str) -> None:
    source = "import sys\nprint('to stderr', file=sys.stderr)\nprint('no newline', end='')\n"
    source += "output = [inputs_len for inputs_len in range(3)]\n"
    out, ctx = run_node({"language": "python", "source": source})
    assert out == [0, 1, 2]
    assert "to stderr" in log_text(ctx)
    assert "no newline" in log_text(ctx)


def test_python_without_main_or_output_gives_null(sandbox_image: str) -> None:
    out, _ = run_node({"language": "python", "source": "x = 1"})
    assert out is None


def test_bash_reads_stdin_and_prints_json_last(sandbox_image: str) -> None:
    source = (
        'payload="$(cat)"\n'
        'echo "got: $payload"\n'
        'echo "warning" >&2\n'
        'n=$(python3 -c \'import json,sys; print(json.loads(sys.argv[1])["params"]["n"])\' '
        '"$payload")\n'
        'echo "{\\"double\\": $((n * 2))}"\n'
        "echo\n"
    )
    out, ctx = run_node({"language": "bash", "source": source}, params={"n": 21})
    assert out == {"double": 42}
    text = log_text(ctx)
    assert 'got: {"inputs": {}, "params": {"n": 21}, "env": {}}' in text
    assert "warning" in text
    assert '"double"' not in text


def test_non_zero_exit_python(sandbox_image: str) -> None:
    with pytest.raises(NodeExecutionError) as err:
        run_node({"language": "python", "source": "def main(i, p):\n    raise ValueError('boom')"})
    assert str(err.value) == "code exited with status 1: ValueError: boom"


def test_non_zero_exit_bash(sandbox_image: str) -> None:
    ctx = make_ctx({"language": "bash", "source": "echo partial\necho 'no such file' >&2\nexit 3"})
    with pytest.raises(NodeExecutionError, match=r"^code exited with status 3: no such file$"):
        CodeNode().run(ctx)
    assert "partial" in log_text(ctx)
    assert containers_of(ctx.run_id) == []


def test_output_not_json(sandbox_image: str) -> None:
    with pytest.raises(NodeExecutionError, match="output is not JSON: the last line of stdout"):
        run_node({"language": "bash", "source": "echo hello"})
    with pytest.raises(NodeExecutionError, match="output is not JSON"):
        run_node({"language": "python", "source": "output = {1, 2}"})
    with pytest.raises(NodeExecutionError, match="output is not JSON"):
        run_node({"language": "python", "source": "output = float('nan')"})


def test_output_over_the_cap_fails(sandbox_image: str) -> None:
    with pytest.raises(NodeExecutionError, match="over the limit of 1000 bytes"):
        run_node({"language": "python", "source": "output = 'x' * 5000"}, max_output_bytes=1000)
    with pytest.raises(NodeExecutionError, match="over the limit of 1000 bytes"):
        run_node({"language": "bash", "source": "printf '\"%05000d\"\\n' 1"}, max_output_bytes=1000)


def test_logs_over_the_cap_are_cut(sandbox_image: str) -> None:
    out, logs = run_isolated(
        "python",
        "for i in range(5000):\n    print('line', i, 'x' * 100)\noutput = 'done'",
        {},
        policy="docker",
        limits=Limits(timeout_s=10, max_log_bytes=10_000),
    )
    assert out == "done"
    assert logs[-1].startswith("[output cut: over 10000 bytes")
    assert sum(len(line) + 1 for line in logs[:-1]) <= 10_000


def test_timeout_kills_and_removes_the_container(sandbox_image: str) -> None:
    ctx = make_ctx({"language": "python", "source": "while True:\n    pass", "timeout_s": 2})
    started = time.monotonic()
    with pytest.raises(NodeTimeoutError, match=r"^timed out after 2 s$"):
        CodeNode().run(ctx)
    assert time.monotonic() - started < 6
    assert containers_of(ctx.run_id) == []


def test_node_deadline_shortens_the_timeout(sandbox_image: str) -> None:
    ctx = make_ctx(
        {"language": "bash", "source": "sleep 30", "timeout_s": 60}, deadline=time.time() + 2
    )
    with pytest.raises(NodeTimeoutError):
        CodeNode().run(ctx)


def test_declared_secrets_only_as_env(sandbox_image: str) -> None:
    values = {"API_TOKEN": "tok-" + uuid.uuid4().hex, "OTHER": "other-" + uuid.uuid4().hex}
    source = (
        "import os\n"
        "print('token is', os.environ['API_TOKEN'])\n"
        "output = {'token': os.environ.get('API_TOKEN'), 'other': os.environ.get('OTHER')}\n"
    )
    out, ctx = run_node(
        {"language": "python", "source": source, "secrets": ["API_TOKEN"]},
        secrets=values.__getitem__,
    )
    assert out == {"token": values["API_TOKEN"], "other": None}
    assert "token is" in log_text(ctx)
    # The worker masks the logs, output and error it records (one path for the whole run):
    # tests/worker/test_secret_masking.py runs a code node through a worker.


@pytest.mark.parametrize("policy", ["docker", "process"])
def test_code_reads_the_run_environment(policy: str, request: pytest.FixtureRequest) -> None:
    """The run environment's variables reach code as they reach expressions (env['NAME']):
    Python's global ``env``, bash's stdin JSON under "env"; under both isolation modes."""
    if policy == "docker":
        request.getfixturevalue("sandbox_image")
    env = {"REGION": "eu-prod", "RATE": 3, "FLAGS": [True, None]}
    source = (
        "def main(inputs, params):\n"
        "    return {'region': env['REGION'], 'total': env['RATE'] * params['n'],\n"
        "            'flags': env['FLAGS'], 'names': sorted(env)}\n"
    )
    out, _ = run_node({"language": "python", "source": source}, params={"n": 2}, env=env,
                      policy=policy)
    assert out == {"region": "eu-prod", "total": 6, "flags": [True, None],
                   "names": ["FLAGS", "RATE", "REGION"]}
    out, _ = run_node({"language": "python", "source": "output = env"}, policy=policy)
    assert out == {}  # no environment variables: an empty dict, never a NameError
    bash = ("python3 -c 'import json,sys; e=json.load(sys.stdin)[\"env\"]; "
            "print(json.dumps([e[\"REGION\"], e[\"RATE\"]]))'\n")
    out, _ = run_node({"language": "bash", "source": bash}, env=env, policy=policy)
    assert out == ["eu-prod", 3]


def test_secrets_without_a_store_fail_clearly() -> None:
    with pytest.raises(NodeExecutionError, match="declares secrets .*API_TOKEN.* no secret store"):
        run_node({"language": "python", "source": "output = 1", "secrets": ["API_TOKEN"]})
    with pytest.raises(NodeExecutionError, match="secret 'NOPE' of node code1 cannot be read"):
        run_node(
            {"language": "python", "source": "output = 1", "secrets": ["NOPE"]},
            secrets={}.__getitem__,
        )


def test_missing_image_fails_clearly(sandbox_image: str) -> None:
    with pytest.raises(
        NodeExecutionError, match="sandbox image nexusflow-sandbox:nope is not built"
    ):
        run_node({"language": "python", "source": "output = 1", "image": "nexusflow-sandbox:nope"})


def test_orphan_sweep(sandbox_image: str) -> None:
    client = docker_client()
    run_id = "sweep-" + uuid.uuid4().hex[:8]
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    made = {}
    for name, owner in (("dead", f"{host}:{dead.pid}"), ("alive", f"{host}:{os.getpid()}")):
        made[name] = client.containers.create(
            sandbox_image, labels={LABEL_WORKER: owner, LABEL_RUN: run_id}
        ).id
    try:
        removed = sweep_orphans(3600, run_id=run_id)
        assert removed == [made["dead"]]
        assert containers_of(run_id) == [made["alive"][:12]]
        time.sleep(1.1)
        assert sweep_orphans(1, run_id=run_id) == [made["alive"]]
        assert containers_of(run_id) == []
    finally:
        for cid in made.values():
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


# --- policies ------------------------------------------------------------------------------


def test_run_isolated_docker_for_tasks(sandbox_image: str) -> None:
    out, logs = run_isolated(
        "python",
        "def main(inputs, params):\n    print('hi')\n    return inputs['x'] + 1",
        {"inputs": {"x": 1}, "params": {}},
        policy="docker",
        limits=Limits(timeout_s=5),
    )
    assert (out, logs) == (2, ["hi"])


def test_process_policy_runs_with_an_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUSFLOW_WORKER_CREDENTIAL", "worker-secret-value")
    source = "import os\nprint('pid', os.getpid())\noutput = sorted(os.environ)"
    out, logs = run_isolated(
        "python", source, {}, policy="process", limits=Limits(timeout_s=5), env={"MINE": "1"}
    )
    assert "NEXUSFLOW_WORKER_CREDENTIAL" not in out
    assert set(out) <= {"PATH", "HOME", "LANG", "TMPDIR", "MINE", "LC_CTYPE"}
    assert "MINE" in out
    assert logs[0].startswith("pid ") and logs[0] != f"pid {os.getpid()}"
    out, _ = run_isolated(
        "bash", 'cat >/dev/null; echo "[\\"$MINE\\"]"', {}, policy="process", env={"MINE": "b"}
    )
    assert out == ["b"]


def test_process_policy_limits() -> None:
    with pytest.raises(NodeTimeoutError, match="timed out after 1 s"):
        run_isolated(
            "bash", "trap '' TERM; sleep 30", {}, policy="process", limits=Limits(timeout_s=1)
        )
    with pytest.raises(NodeExecutionError, match="MemoryError"):
        run_isolated(
            "python",
            "x = b'x' * (2 * 1024**3)",
            {},
            policy="process",
            limits=Limits(timeout_s=5, memory_mb=256),
        )
    with pytest.raises(NodeTimeoutError, match="timed out after 1 s"):
        run_isolated(
            "python",
            "import os, time\nos.closerange(0, 4096)\ntime.sleep(30)",
            {},
            policy="process",
            limits=Limits(timeout_s=1),
        )
    with pytest.raises(NodeExecutionError, match="code exited with status 1: ValueError: no"):
        run_isolated("python", "raise ValueError('no')", {}, policy="process")


def test_none_policy_runs_in_process() -> None:
    marker = uuid.uuid4().hex
    source = f"import os\nprint('{marker}')\noutput = os.getpid()"
    out, logs = run_isolated("python", source, {}, policy="none")
    assert out == os.getpid()
    assert logs == [marker]
    out, _ = run_isolated("bash", 'read -r line; echo "$line"', {"inputs": {"a": 1}}, policy="none")
    assert out == {"inputs": {"a": 1}}
    with pytest.raises(NodeExecutionError, match="code exited with status 1: KeyError: 'z'"):
        run_isolated("python", "output = {}['z']", {}, policy="none")


@pytest.mark.parametrize("policy", ["auto", "docker"])
def test_no_engine_fails_clearly(
    policy: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    ctx = make_ctx({"language": "python", "source": "output = 1"}, policy=policy)
    with pytest.raises(NodeExecutionError) as err:
        CodeNode().run(ctx)
    message = str(err.value)
    assert message.startswith(f"code isolation is '{policy}' but no Docker engine answers at unix")
    assert "NEXUSFLOW_CODE_ISOLATION=process" in message


def test_unknown_policy_fails() -> None:
    with pytest.raises(NodeExecutionError, match="code isolation 'vm' is not one of"):
        run_isolated("python", "output = 1", {}, policy="vm")


# --- the image and the CLI -----------------------------------------------------------------


def test_image_tag_comes_from_the_recipe(sandbox_image: str) -> None:
    assert sandbox_image == image_tag()
    assert image_tag().startswith("nexusflow-sandbox:") and len(image_tag()) == 34
    started = time.monotonic()
    again = build_image(Settings.from_env().data_dir)
    assert again.built is False and time.monotonic() - started < 5


def test_apt_mirror_reads_both_source_formats(tmp_path: Path) -> None:
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://other.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb deb-src\nURIs: http://other.example/debian\nSuites: bookworm bookworm-updates\n"
    )
    assert apt_mirror("bookworm", [one_line]) == "http://mirror.example/debian"
    assert apt_mirror("bookworm", [deb822]) == "http://other.example/debian"
    assert apt_mirror("trixie", [one_line, deb822]) == "http://deb.debian.org/debian"


def test_cli_status_and_build(sandbox_image: str) -> None:
    from nexusflow_worker.sandbox.cli import sandbox

    runner = CliRunner()
    result = runner.invoke(sandbox, ["status", "--json"], env={"NEXUSFLOW_CODE_ISOLATION": "auto"})
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["effective_policy"] == "docker" and info["image_built"] is True
    result = runner.invoke(sandbox, ["build"])
    assert result.exit_code == 0 and "already built" in result.output


def test_default_sweep_keeps_live_containers(sandbox_image: str) -> None:
    client = docker_client()
    run_id = "sweep-" + uuid.uuid4().hex[:8]
    owner = f"{socket.gethostname()}:{os.getpid()}"
    cid = client.containers.create(
        sandbox_image, labels={LABEL_WORKER: owner, LABEL_RUN: run_id}
    ).id
    try:
        assert cid not in sweep_orphans()
        assert containers_of(run_id) == [cid[:12]]
    finally:
        client.api.remove_container(cid, force=True)

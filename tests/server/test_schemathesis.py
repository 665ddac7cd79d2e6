"""Schemathesis against the OpenAPI document of a real `jupyter server`: no answer is a 5xx.

The server is started as a separate process, the way a user starts it, so the fuzzing client
(synchronous) does not share the server's event loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from nftest import settings_env

from nexusflow_kernel.procs import free_port


@pytest.fixture
def server(settings, tmp_path):
    port, token = free_port(), uuid.uuid4().hex
    env = settings_env(settings)
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jdata")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    (tmp_path / "root").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path / 'root'}", "--ServerApp.allow_root=True",
         "--ServerApp.jpserver_extensions={'nexusflow_server': True}",
         "--NexusFlow.local_workers=False"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "wb"),
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {token}"}
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/nexusflow/api/openapi.json", headers=headers).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
        time.sleep(0.3)
    try:
        yield base, headers
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_no_5xx_for_any_generated_request(server) -> None:
    base, headers = server
    schema = schemathesis.openapi.from_url(f"{base}/nexusflow/api/openapi.json",
                                           headers=headers)
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base, headers=headers, timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {response.text[:200]}")

        check()
    assert calls > 300
    assert not failures, failures[:10]

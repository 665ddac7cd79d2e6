"""Local worker supervision: started with the server, restarted when it dies, stopped with it."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta

import pytest


@pytest.fixture
def nf_config(nf_config):
    return {**nf_config, "local_workers": True, "triggers": False,
            "worker_restart_backoff_s": 0.1,
            "worker_command": [sys.executable, "-c", "import time; time.sleep(120)"]}


async def test_local_worker_is_supervised(nf_app) -> None:
    import os
    import signal

    await nf_app._start_jupyter_server_extension(nf_app.serverapp)
    await asyncio.wait_for(nf_app.ready.wait(), 30)
    sup = nf_app.supervisor
    for _ in range(50):
        if sup.pid:
            break
        await asyncio.sleep(0.1)
    first = sup.pid
    assert first
    os.kill(first, signal.SIGKILL)
    deadline = datetime.now() + timedelta(seconds=10)
    while datetime.now() < deadline and (sup.pid in (None, first)):
        await asyncio.sleep(0.1)
    second = sup.pid
    assert second and second != first and sup.restarts == 1
    await sup.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)

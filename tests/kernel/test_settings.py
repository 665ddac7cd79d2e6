"""Settings: one model, read from the environment, handed to child processes unchanged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nexusflow_kernel.settings import Settings
from nexusflow_kernel.workers import worker_argv, worker_env


def test_to_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    original = Settings(
        database_url="postgresql://u:pw@db.example:5432/nf", redis_url="redis://r:6379/3",
        data_dir=tmp_path, queue_name="q1", sandbox_queue_name="sb1", lease_s=7.5,
        heartbeat_s=1.25, reconcile_interval_s=0.5, requeue_grace_s=2.0,
        max_output_bytes=12345, connections={"warehouse": "postgresql://w@h/db"},
        trusted_connections=frozenset({"warehouse"}), allow_private_http=False,
        code_isolation="process", secret_key="k" * 44,
    )
    for key in list(os.environ):
        if key.startswith("NEXUSFLOW_"):
            monkeypatch.delenv(key)
    for key, value in original.to_env().items():
        monkeypatch.setenv(key, value)
    assert Settings.from_env() == original


def test_settings_do_not_start_services() -> None:
    # Reading settings never starts a database: resolving backends is the services' job.
    assert not hasattr(Settings, "resolved")
    assert Settings(database_url=None).embedded


def test_worker_command_line_and_environment(tmp_path: Path) -> None:
    argv = worker_argv(3, queues=["default", " sandbox "], grace_s=2.5, extra=["--fork"])
    assert argv == [sys.executable, "-m", "nexusflow_worker", "--processes", "3",
                    "--queues", "default,sandbox", "--grace", "2.5", "--fork"]
    env = worker_env(Settings(database_url="postgresql://x/y", redis_url="redis://z/1",
                              data_dir=tmp_path), {"EXTRA": "1"})
    assert env["NEXUSFLOW_DATABASE_URL"] == "postgresql://x/y"
    assert env["NEXUSFLOW_REDIS_URL"] == "redis://z/1"
    assert env["NEXUSFLOW_DATA_DIR"] == str(tmp_path)
    assert env["EXTRA"] == "1" and "PATH" in env

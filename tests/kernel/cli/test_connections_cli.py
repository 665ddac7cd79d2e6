"""``nexusflow connections add|list|test|remove`` on the real backends (issue #14 item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nftest import settings_env

ROOT = Path(__file__).resolve().parents[3]


def cli(settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexusflow_kernel.cli", *args],
                          env=settings_env(settings), capture_output=True, text=True,
                          input=stdin, timeout=90, cwd=ROOT)


def test_add_list_test_remove(settings, database_url) -> None:
    name = f"wh_{uuid.uuid4().hex[:6]}"
    parts = urlsplit(database_url)
    user_url = urlunsplit(parts._replace(netloc=f"{parts.username or 'root'}@"
                                         f"{parts.netloc.rsplit('@', 1)[-1]}"))
    added = cli(settings, "connections", "add", name, "--url", user_url,
                stdin="Cli-Pw-77123\n")
    assert added.returncode == 0, added.stderr
    assert ":***@" in added.stdout and "Cli-Pw-77123" not in added.stdout
    listed = cli(settings, "connections", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)["connections"]}
    assert rows[name]["kind"] == "postgres" and "Cli-Pw-77123" not in listed.stdout
    tested = cli(settings, "connections", "test", name)
    assert tested.returncode == 0, tested.stdout + tested.stderr  # trust auth: the pw is not asked
    assert "ok: connected as" in tested.stdout
    # an environment's own connection, then one that does not work
    env = f"prod_{uuid.uuid4().hex[:6]}"
    assert cli(settings, "envs", "create", env).returncode == 0
    bad = cli(settings, "connections", "add", name, "--env", env, "--url",
              "postgresql://nobody:pw@127.0.0.1:1/none")
    assert bad.returncode == 0, bad.stderr
    failed = cli(settings, "connections", "test", name, "--env", env)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    assert ":pw@" not in failed.stdout
    removed = cli(settings, "connections", "remove", name)
    assert removed.returncode == 0 and "removed" in removed.stdout
    missing = cli(settings, "connections", "remove", name)
    assert missing.returncode != 0 and f"no connection named '{name}'" in missing.stderr
    wrong = cli(settings, "connections", "add", "x", "--url", "mysql://h/db")
    assert wrong.returncode != 0 and "postgresql://" in wrong.stderr

"""``nexusflow nodes list`` and the compiler with node packages installed for real (pip, into a
temporary folder on ``PYTHONPATH``): the example package's types listed with their package,
version, category and icon; every entry point of the deliberately broken package listed as
broken with its reason; the built-in types untouched; a flow that names a broken type refused
with that reason; the example package's own tests passing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nftest import flow, node, with_node_packages

ROOT = Path(__file__).resolve().parents[3]

BROKEN = {
    "broken.import_error": "import failed: ModuleNotFoundError: No module named "
    "'nexusflow_dependency_not_installed'",
    "broken.bad_schema": "config_schema is not a valid JSON Schema at /properties/n/type",
    "broken.not_a_type": "the entry point is not a NodeType subclass (it is 'function')",
    "broken.exits": "import failed: SystemExit: 3",
    "broken.widen": "import failed: TypeError: 'mappingproxy' object does not support item "
    "assignment",
    "broken.script_docs": "docs_url 'javascript:alert(document.cookie)' is not an http(s) address",
    "broken.misnamed": "the entry point is named 'broken.misnamed' but the type's name is "
    "'broken.ok'",
    "http": "type 'http' is already provided by nexusflow",
}


def cli(*args: str, packages: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    import os

    env = with_node_packages(dict(os.environ)) if packages else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "nexusflow_kernel.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_nodes_list_json_shows_packages_and_the_broken_ones():
    out = cli("nodes", "list", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    types = {t["type"]: t for t in data["node_types"]}
    slug, csv = types["text.slugify"], types["text.csv_parse"]
    assert (slug["package"], slug["version"], slug["category"]) == (
        "nexusflow-text-nodes",
        "0.1.0",
        "text",
    )
    assert slug["icon"] == "🔗" and slug["docs_url"].startswith("https://")
    assert csv["icon"].startswith("data:image/svg+xml;base64,")
    assert csv["config_schema"]["required"] == ["text"]
    # The broken package's good type is registered; its siblings do not take it down.
    assert types["broken.ok"]["package"] == "nexusflow-broken-nodes"
    # No package replaces a built-in type.
    assert types["http"]["package"] == "nexusflow" and types["http"]["title"] == "HTTP Request"
    assert types["code"]["package"] == "nexusflow"  # the worker's own types, by entry point

    broken = {b["type"]: b for b in data["broken"]}
    assert set(broken) == set(BROKEN)
    for name, reason in BROKEN.items():
        assert reason in broken[name]["reason"], (name, broken[name])
        assert broken[name]["package"] == "nexusflow-broken-nodes"
        assert broken[name]["version"] == "0.0.1"
        assert broken[name]["entry_point"].startswith("nexusflow_broken.")


def test_nodes_list_table_and_strict():
    out = cli("nodes", "list", "--strict")
    assert out.returncode == 1  # a package's CI fails on a broken type
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["TYPE", "TITLE", "CATEGORY", "PACKAGE", "VERSION"]
    row = next(ln for ln in lines if ln.startswith("text.csv_parse "))
    assert row.split()[-3:] == ["text", "nexusflow-text-nodes", "0.1.0"]
    assert f"broken ({len(BROKEN)})" in out.stdout
    assert any(
        ln.strip().startswith("broken.exits  nexusflow-broken-nodes 0.0.1")
        and "SystemExit: 3" in ln
        for ln in lines
    ), out.stdout

    clean = cli("nodes", "list", "--strict", packages=False)
    assert clean.returncode == 0, clean.stdout
    assert "text.slugify" not in clean.stdout and "broken" not in clean.stdout


def test_a_flow_naming_a_broken_type_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "broken.nxflow"
    path.write_text(
        json.dumps(
            flow(node("A", expression="1"), node("B", "broken.bad_schema", n=1), edges=[("A", "B")])
        )
    )
    out = cli("validate", str(path))
    assert out.returncode == 2
    assert (
        "node 'B' has type 'broken.bad_schema', whose package is broken "
        "(nexusflow-broken-nodes 0.0.1: config_schema is not a valid JSON Schema" in out.stderr
    )
    assert "/nodes/1/type" in out.stderr

    path.write_text(json.dumps(flow(node("S", "text.slugify", text="x", max_length=0))))
    out = cli("validate", str(path))
    assert out.returncode == 2 and "/nodes/0/config/max_length" in out.stderr, out.stderr

    path.write_text(
        json.dumps(
            flow(
                node("S", "text.slugify", text="{{ params['t'] }}"),
                node("C", "text.csv_parse", text="a,b"),
                node("O", "broken.ok"),
                edges=[("S", "O")],
            )
        )
    )
    out = cli("validate", str(path))
    assert out.returncode == 0, out.stderr


def test_the_example_package_passes_its_own_tests():
    import os

    env = with_node_packages(dict(os.environ))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT / "examples" / "node-package",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout

"""The example node package on the canvas, in a real browser (Debian's Chromium): JupyterLab and
its workers have the package (and the deliberately broken one) installed; the palette lists
the package's types under their category with their icons and the broken types with their
reasons; Slugify is dropped, shown in the inspector with its package and docs link,
configured, connected and run by real workers, and glows green with the slug as its output."""

from __future__ import annotations

import json
import urllib.request

from nftest import settings_env, wait_for, with_node_packages

from tests.ui.conftest import _require_browser, running_lab

START = {
    "schema": 1,
    "name": "package",
    "edges": [],
    "nodes": [
        {
            "id": "start",
            "type": "transform",
            "position": {"x": 0, "y": 0},
            "config": {"expression": "'Crème Brûlée: Q3 Report!'"},
        }
    ],
}


def test_the_example_package_in_the_palette_dropped_configured_run(
    settings, workers, engine, tmp_path
):
    _require_browser()
    env = with_node_packages(settings_env(settings))
    workers.start(1, env=env)
    env.update(NEXUSFLOW_LOCAL_WORKERS="0", JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    with running_lab(
        tmp_path, env, token="nexusflow-packages-test", log_name="jupyter-node-packages.log"
    ) as lab:
        (lab.root / "package.nxflow").write_text(json.dumps(START))
        with urllib.request.urlopen(
            f"{lab.url}nexusflow/api/node-types?token={lab.token}", timeout=30
        ) as resp:
            catalog = json.loads(resp.read())
        result = lab.run_script(
            "package", script="nodepackages.mjs", timeout=200, FLOW_FILE="package.nxflow"
        )
        # The server saves the shared document a moment after the last edit: wait for the
        # dropped node to reach the file (the scenario ends as soon as the run is green).
        node_id = result["id"]

        def saved_with_node() -> dict | None:
            data = json.loads((lab.root / "package.nxflow").read_text())
            return data if any(n["id"] == node_id for n in data["nodes"]) else None

        saved = wait_for(saved_with_node, 15, f"node {node_id} saved to package.nxflow")

    # The REST catalog the palette reads: the package's types with package and version, the
    # broken ones with their reasons.
    types = {t["type"]: t for t in catalog["node_types"]}
    assert types["text.slugify"]["package"] == "nexusflow-text-nodes"
    assert types["text.slugify"]["version"] == "0.1.0"
    broken = {b["type"]: b["reason"] for b in catalog["broken"]}
    assert "SystemExit: 3" in broken["broken.exits"]
    assert "already provided by nexusflow" in broken["http"]

    palette = result["palette"]
    assert palette["slugify"]["category"] == "text" and palette["csv"]["category"] == "text"
    assert palette["slugify"]["title"].endswith("Slugify")
    assert palette["slugify"]["package"] == "nexusflow-text-nodes"
    assert palette["slugify"]["icon"] == {"kind": "text", "text": "🔗", "src": None}
    assert palette["csv"]["icon"]["kind"] == "image"
    assert palette["csv"]["icon"]["src"].startswith("data:image/svg+xml;base64,")
    assert palette["csv"]["iconWidth"] > 0  # the SVG is drawn
    assert palette["ok"] is not None  # the broken package's good type is there
    assert palette["http"]["package"] == "nexusflow"  # not replaced
    assert palette["badSchema"] is None  # a broken type cannot be dropped...
    shown = {b["type"]: b["reason"] for b in palette["broken"]}  # ...it is listed, with why
    assert set(shown) == set(broken)
    assert (
        "config_schema is not a valid JSON Schema at /properties/n/type"
        in shown["broken.bad_schema"]
    )

    inspector = result["inspector"]
    assert inspector["icon"] == "🔗" and inspector["title"].endswith("Slugify")
    assert "from nexusflow-text-nodes 0.1.0" in inspector["package"]
    assert inspector["docs"] == {
        "href": "https://en.wikipedia.org/wiki/Clean_URL#Slug",
        "rel": "noopener noreferrer",
    }
    assert {"text", "separator", "max_length", "lowercase"} <= set(inspector["fields"])
    assert "🔗" in result["nodeIcon"]

    node_id = result["id"]
    assert result["errors"] == []
    assert result["states"]["start"]["state"] == "succeeded"
    assert result["states"][node_id]["state"] == "succeeded", result["states"]
    assert "nf-phase-succeeded" in result["states"][node_id]["cls"]  # it glows green
    dropped = next(n for n in saved["nodes"] if n["id"] == node_id)
    assert dropped["type"] == "text.slugify"
    assert dropped["config"] == {  # the schema's defaults, then what was typed
        "text": "{{ inputs['start'] }}",
        "separator": "_",
        "max_length": 80,
        "lowercase": True,
    }

    runs = engine.list_runs(limit=5)
    run = engine.get_run(runs[0]["run_id"])
    assert run["status"] == "succeeded"
    assert run["nodes"][node_id]["output"] == "creme_brulee_q3_report"

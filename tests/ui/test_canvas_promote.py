"""Issue #17 item 2 in the browser: Promote… in the canvas toolbar shows the server's dry run
(the version replaced, the nodes added), promotes on Confirm, lists the history, and shows a
refusal (a variable the environment lacks) with the server's message."""

from __future__ import annotations

import uuid

from nexusflow_kernel.engine import Engine
from nexusflow_kernel.model.document import dumps_canonical

FLOW = {
    "schema": 1,
    "name": "promoted",
    "nodes": [
        {
            "id": "greet",
            "type": "transform",
            "position": {"x": 0, "y": 0},
            "config": {"expression": "'hi'"},
        }
    ],
    "edges": [],
}


def test_promote_from_the_canvas_shows_the_diff_the_history_and_a_refusal(
    backend_lab, settings, workers
) -> None:
    engine = Engine(settings)
    suffix = uuid.uuid4().hex[:6]
    prod, qa = f"prod_{suffix}", f"qa_{suffix}"
    engine.environments.create(prod, restricted=False)
    engine.environments.set_var(prod, "GREETING", "hello")
    engine.environments.create(qa, restricted=False)  # no GREETING: version 2 is refused
    (backend_lab.root / "promoted.nxflow").write_text(dumps_canonical(FLOW))
    workers.start(1)
    result = backend_lab.run_script(
        "promote", script="promote.mjs", FLOW_FILE="promoted.nxflow", PROD=prod, QA=qa, timeout=240
    )
    assert result["errors"] == []
    assert result["versions"] == [2, 1] and result["defaultVersion"] == 2  # the latest first
    assert prod in result["envs"] and qa in result["envs"] and "dev" not in result["envs"]

    first = result["first"]
    assert first["from"] == "" and "nothing promoted yet → v1" in first["preview"], first
    assert "added greet" in first["preview"] and first["refusal"] is None
    assert f"v1 promoted to {prod}" in result["firstDone"]

    second = result["second"]
    assert second["from"] == "1" and "v1 → v2" in second["preview"], second
    assert "added shout" in second["preview"] and second["confirmDisabled"] is False

    history = result["history"]  # newest first, as the server keeps it
    assert [(h["env"], h["version"]) for h in history] == [(prod, 2), (prod, 1)]
    assert "(was v1)" in history[0]["text"]

    refused = result["refused"]
    assert refused["preview"] is None and refused["confirmDisabled"] is True
    assert f"cannot be promoted to '{qa}'" in refused["refusal"], refused
    assert "GREETING" in refused["refusal"]

    # The server recorded exactly the two promotions confirmed in the browser.
    recorded = engine.promotions(result["workflowId"])
    assert recorded["current"] == {prod: 2}
    assert [(p["env"], p["version"], p["previous_version"]) for p in recorded["history"]] == [
        (prod, 2, 1),
        (prod, 1, None),
    ]

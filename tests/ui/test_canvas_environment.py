"""Issue #17 item 1 in the browser: the canvas toolbar's environment picker runs the flow in
the environment picked (its variables reach ``env['NAME']``) and the run records it; Test node
in the inspector runs the node in that environment too."""

from __future__ import annotations

import uuid

from nftest import wait_run

from nexusflow_kernel.engine import Engine
from nexusflow_kernel.model.document import dumps_canonical

FLOW = {
    "schema": 1,
    "name": "greeting",
    "nodes": [{"id": "greet", "type": "transform", "position": {"x": 0, "y": 0},
               "config": {"expression": "env['GREETING'] + '!'"}}],
    "edges": [],
}


def test_the_toolbar_runs_the_flow_in_the_environment_picked(backend_lab, settings,
                                                             workers) -> None:
    engine = Engine(settings)
    name = f"ui_{uuid.uuid4().hex[:6]}"
    engine.environments.create(name, restricted=False)
    engine.environments.set_var(name, "GREETING", "hello from the picker")
    (backend_lab.root / "greeting.nxflow").write_text(dumps_canonical(FLOW))
    workers.start(1)
    result = backend_lab.run_script("environment", FLOW_FILE="greeting.nxflow", ENV_NAME=name,
                                    timeout=180)
    assert result["errors"] == []
    assert result["offered"][0] == "" and name in result["offered"]  # dev first, then others
    run = wait_run(engine, result["runId"])
    assert run["env"] == name and run["status"] == "succeeded", run
    assert run["nodes"]["greet"]["output"] == "hello from the picker!"
    # Test node in the inspector runs in the environment picked beside Run
    assert result["testEnv"] == name
    assert result["tested"]["status"] == "succeeded", result["tested"]
    assert result["tested"]["output"] == '"hello from the picker!"', result["tested"]

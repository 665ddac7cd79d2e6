"""Describe a flow in a real browser (Debian's Chromium) on a live JupyterLab whose server asks
the fake OpenAI-compatible model: a refused answer shown with the compiler's error and nothing
applied, a corrected one previewed, accepted as one undo step, run, and the AI node's answer
growing in the logs panel while the node runs."""

from __future__ import annotations

import json
from dataclasses import replace

from aifake import FakeModel, Reply
from nftest import settings_env

from tests.ui.conftest import _require_browser, running_lab

REQUEST = "Tell a short story about the given city, then shout it."

DESCRIBED = {
    "schema": 1, "name": "story",
    "params": {"city": {"type": "string", "default": "Lyon"}},
    "nodes": [
        {"id": "ask", "type": "ai", "label": "Tell a story",
         "config": {"model": "fake", "prompt": "A short story about {{ params['city'] }}"}},
        {"id": "shout", "type": "transform",
         "config": {"expression": "inputs['ask']['text'].upper()"}},
    ],
    "edges": [{"id": "ask-shout", "source": "ask", "target": "shout"}],
}
CYCLIC = {**DESCRIBED, "edges": DESCRIBED["edges"] + [
    {"id": "shout-ask", "source": "shout", "target": "ask"}]}
STORY = "Once upon a time in Lyon a silk weaver dreamed of lights along the river."


def test_describe_preview_accept_undo_run_and_the_log_growing(settings, workers, tmp_path):
    _require_browser()
    with FakeModel() as fake:
        # Refused twice (a cycle); then, asked again, refused once and corrected.
        fake.reply(Reply.json(CYCLIC), Reply.json(CYCLIC), Reply.json(CYCLIC),
                   Reply.json(DESCRIBED))
        fake.fallback = lambda req: Reply(STORY, delay_s=0.35)  # the ai node, streamed
        ai = replace(settings, ai_base_url=fake.url, ai_model="planner")
        workers.settings = ai
        workers.start(1)
        env = settings_env(ai)
        env.update(NEXUSFLOW_LOCAL_WORKERS="0", JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
        with running_lab(tmp_path, env, token="nexusflow-describe-test",
                         log_name="jupyter-describe.log") as lab:
            (lab.root / "described.nxflow").write_text(json.dumps({
                "schema": 1, "name": "before", "edges": [], "nodes": [
                    {"id": "old", "type": "transform", "position": {"x": 0, "y": 0},
                     "config": {"expression": "1"}}]}))
            result = lab.run_script("describe", script="describe.mjs", timeout=200,
                                    FLOW_FILE="described.nxflow", REQUEST_TEXT=REQUEST)
        asked = [r for r in fake.requests if (r.body.get("response_format") or {})
                 .get("json_schema", {}).get("name") == "flow"]

    assert "planner" in result["model"]
    assert len(asked) == 4 and "Authorization" not in asked[0].headers  # no key configured
    assert asked[0].body["messages"][-1]["content"] == REQUEST
    assert "cycle" in result["error"] and "/edges/" in result["error"]
    assert json.loads(result["answer"]) == CYCLIC
    assert result["before"] == result["afterError"] == ["old"]  # nothing applied
    assert result["preview"] == ["ask", "shout"] and "2 nodes" in result["proposalText"]
    assert "corrected once" in result["proposalText"]
    assert result["whilePreviewed"] == ["old"]
    assert result["accepted"] == ["ask", "shout"]
    assert result["undone"] == ["old"] and result["redone"] == ["ask", "shout"]
    growing = result["growing"]
    assert len(growing) >= 2, growing  # the panel showed the answer growing while it ran
    assert len(growing[0]) < len(growing[-1]) and not growing[0].rstrip().endswith("river.")
    assert "along the river." in result["finalLog"]
    assert result["output"]["text"] == STORY
    assert result["errors"] == []

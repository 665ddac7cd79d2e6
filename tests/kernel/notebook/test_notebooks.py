"""Execute every example notebook against real PostgreSQL and Redis and check its results."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import NOTEBOOKS, execute_notebook

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _outputs(nb) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif "data" in o:
            parts.append(o["data"].get("text/plain", ""))
    return "\n".join(parts)


def test_every_notebook_is_tested():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["ai.ipynb", "debug.ipynb", "durable.ipynb", "etl.ipynb", "quickstart.ipynb"]


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_has_kernelspec_and_no_outputs(name):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_quickstart(notebook_env, engine, tmp_path: Path):
    nb = execute_notebook("quickstart.ipynb", tmp_path)
    assert "quickstart: all checks passed" in _text(nb)
    # the flow and the run were shown on the inline canvas (widget views, not just text)
    assert sum(1 for o in _outputs(nb) if WIDGET_MIME in o.get("data", {})) >= 2
    assert not (tmp_path / "diamond.nxflow").exists()  # the notebook cleans up after itself
    runs = [r for r in engine.list_runs(limit=100)  # the runs of the file it saved
            if (r["source"] or "").startswith(str(tmp_path))]
    assert sorted(r["status"] for r in runs) == ["failed", "succeeded", "succeeded"]


def test_etl(notebook_env, engine, database_url: str, tmp_path: Path):
    import psycopg

    nb = execute_notebook("etl.ipynb", tmp_path)
    assert "etl: all checks passed" in _text(nb)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT customer, orders, total FROM customer_orders"
                            " ORDER BY customer").fetchall()
    assert [(c, n, float(t)) for c, n, t in rows] == [
        ("ada", 2, 34.0), ("grace", 1, 120.0), ("linus", 1, 60.0)]
    (run,) = [r for r in engine.list_runs(limit=100) if r["name"] == "etl"]
    assert run["status"] == "succeeded"


def test_durable(notebook_env, engine, tmp_path: Path):
    nb = execute_notebook("durable.ipynb", tmp_path, timeout=300)
    assert "durable: all checks passed" in _text(nb)
    (run,) = [r for r in engine.list_runs(limit=100) if r["name"] == "durable"]
    assert run["status"] == "succeeded"
    attempts = engine.node_attempts(run["run_id"], "crunch")
    assert len(attempts) >= 2 and attempts[-1]["status"] == "succeeded"


def test_ai(notebook_env, engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The AI notebook against the fake OpenAI-compatible server: two ai nodes (one streamed,
    one JSON), then a flow described in words, checked and run."""
    from aifake import FakeModel, Reply

    described = {"schema": 1, "name": "described",
                 "params": {"city": {"type": "string", "default": "Lyon"}},
                 "nodes": [{"id": "ask", "type": "ai", "config": {
                               "model": "fake", "prompt": "One fact about {{ params['city'] }}"}},
                           {"id": "shout", "type": "transform",
                            "config": {"expression": "inputs['ask']['text'].upper()"}}],
                 "edges": [{"id": "ask-shout", "source": "ask", "target": "shout"}]}

    def answer(req) -> Reply:
        fmt = req.body.get("response_format") or {}
        if fmt.get("json_schema", {}).get("name") == "flow":
            return Reply.json(described)
        if fmt:
            return Reply.json({"about_city": True})
        return Reply("Lyon has a silk museum.", delay_s=0.05)

    with FakeModel() as fake:
        fake.fallback = answer
        monkeypatch.setenv("NEXUSFLOW_AI_BASE_URL", fake.url)
        monkeypatch.setenv("NEXUSFLOW_AI_MODEL", "fake")
        nb = execute_notebook("ai.ipynb", tmp_path)
        requests = list(fake.requests)
    assert "ai: all checks passed" in _text(nb)
    assert sum(1 for o in _outputs(nb) if WIDGET_MIME in o.get("data", {})) >= 2
    kinds = [(r.body.get("response_format") or {}).get("json_schema", {}).get("name")
             for r in requests]
    assert kinds.count("flow") == 1 and kinds.count("answer") == 1, kinds
    assert sum(1 for r in requests if r.body.get("stream")) == 2  # fact, and the described ask
    names = {r["name"]: r["status"] for r in engine.list_runs(limit=100)}
    assert names["city-facts"] == "succeeded" and names["described"] == "succeeded", names
    (run,) = [r for r in engine.list_runs(limit=100) if r["name"] == "described"]
    assert engine.get_run(run["run_id"])["nodes"]["shout"]["output"] == \
        "LYON HAS A SILK MUSEUM."


def test_debug(notebook_env, engine, tmp_path: Path):
    """The debug loop top to bottom: a run fails in a node, run.debug gives the recorded
    inputs, the fix is applied and retry(update=True) ends the same run succeeded without
    running again the nodes that had succeeded (issue #15)."""
    nb = execute_notebook("debug.ipynb", tmp_path, timeout=300)
    text = _text(nb)
    assert "debug: all checks passed" in text
    assert "KeyError: 'amount'" in text and "<task summarize>" in text  # the real traceback
    runs = [r for r in engine.list_runs(limit=100) if r["name"] == "debugdemo"]
    assert len(runs) == 3 and all(r["status"] == "succeeded" for r in runs)
    first = runs[-1]  # the run that failed, then was resumed in place
    assert [a["status"] for a in engine.node_attempts(first["run_id"], "summarize")] == [
        "failed", "succeeded"]
    assert len(engine.node_attempts(first["run_id"], "orders")) == 1

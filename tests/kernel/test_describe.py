"""Describe a flow against the fake OpenAI-compatible server: what the model is asked, an
answer that compiles, one that is corrected after the compiler's error, one that never is
(nothing applied, the error and the answer kept), servers without structured outputs, a
rate limit, the key kept out of errors, and Flow.from_text."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from aifake import FakeModel, Reply

from nexusflow_kernel import Flow
from nexusflow_kernel.describe import (
    AiNotConfigured,
    DescribeModel,
    configured_model,
    describe_flow,
    describe_info,
)
from nexusflow_kernel.errors import DescribeError, NexusFlowError, NodeExecutionError
from nexusflow_kernel.nodes.chat import Endpoint
from nexusflow_kernel.settings import Settings

KEY = "sk-describe-5e1c0d"

GOOD = {"schema": 1, "name": "orders", "params": {"min": {"type": "integer", "default": 10}},
        "nodes": [
            {"id": "fetch", "type": "http", "label": "Fetch orders",
             "config": {"url": "https://api.example.com/orders",
                        "headers": {"Authorization": {"$secret": "ORDERS_TOKEN"}}},
             "position": {"x": 5, "y": 5}},
            {"id": "many", "type": "condition",
             "config": {"expression": "len(inputs['fetch']['json']) > params['min']"}},
            {"id": "summarize", "type": "ai",
             "config": {"model": "gpt-4o-mini", "api_key": {"$secret": "OPENAI_API_KEY"},
                        "prompt": "Summarize: {{ inputs['fetch']['text'] }}"}}],
        "edges": [{"id": "fetch-many", "source": "fetch", "target": "many"},
                  {"id": "many-summarize", "source": "many", "target": "summarize",
                   "source_handle": "true"}]}


@pytest.fixture
def fake():
    with FakeModel() as server:
        yield server


def model(fake, key: str | None = KEY) -> DescribeModel:
    return DescribeModel(Endpoint(fake.url, key, allow_private=True), "planner")


def test_the_model_gets_the_catalog_and_the_flow_schema(fake) -> None:
    fake.reply(Reply.json(GOOD, usage={"prompt_tokens": 900, "completion_tokens": 120}))
    proposal = describe_flow("Fetch orders; if there are many, summarize them", model(fake))
    assert proposal.attempts == 1 and proposal.faults == []
    assert proposal.usage == {"prompt_tokens": 900, "completion_tokens": 120}
    assert [n["id"] for n in proposal.flow["nodes"]] == ["fetch", "many", "summarize"]
    assert all("position" not in n for n in proposal.flow["nodes"])  # laid out by the viewer
    (req,) = fake.requests
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    system, user = req.body["messages"]
    assert user == {"role": "user", "content": "Fetch orders; if there are many, summarize them"}
    catalog = json.loads(system["content"].split("config_schema):\n", 1)[1])
    types = {t["type"] for t in catalog}
    assert {"ai", "http", "transform", "condition", "db_query", "code"} <= types
    assert not types & {"noop", "sleep", "python_task"}
    http = next(t for t in catalog if t["type"] == "http")
    assert http["config_schema"]["required"] == ["url"]
    fmt = req.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "flow"
    node_schema = fmt["json_schema"]["schema"]["$defs"]["node"]
    assert node_schema["properties"]["type"] == {"enum": sorted(types)}
    assert req.body["temperature"] == 0.0


def test_a_wrong_answer_is_corrected_with_the_compilers_error(fake) -> None:
    bad = json.loads(json.dumps(GOOD))
    bad["edges"][1].pop("source_handle")  # leaves a condition without saying which branch
    fake.reply(Reply.json(bad), Reply("```json\n" + json.dumps(GOOD) + "\n```"))
    proposal = describe_flow("orders", model(fake), name="from words")
    assert proposal.attempts == 2
    assert proposal.faults == [{"pointer": "/edges/1", "message": proposal.faults[0]["message"]}]
    assert "source_handle" in proposal.faults[0]["message"]
    assert proposal.flow["name"] == "orders"  # the model's own name wins over the default
    second = fake.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "at /edges/1" in second[-1]["content"] and "source_handle" in second[-1]["content"]


@pytest.mark.parametrize("first, second, pointer, says", [
    ("this is not JSON", "still not", "", "not JSON"),
    (json.dumps({**GOOD, "nodes": [{"id": "x", "type": "teleport"}]}),
     json.dumps({**GOOD, "nodes": [{"id": "x", "type": "teleport"}]}),
     "/nodes/0/type", "unknown type 'teleport'"),
    (json.dumps(GOOD).replace('{"$secret": "OPENAI_API_KEY"}', '"sk-real-key-123"'),
     json.dumps(GOOD).replace('{"$secret": "OPENAI_API_KEY"}', '"sk-real-key-123"'),
     "/nodes/2/config/api_key", "must be a stored secret"),
])
def test_an_answer_refused_twice_is_never_applied(fake, first, second, pointer, says) -> None:
    fake.reply(Reply(first), Reply(second))
    with pytest.raises(DescribeError) as err:
        describe_flow("orders", model(fake))
    assert err.value.pointer == pointer and says in str(err.value)
    assert err.value.answer == second and len(err.value.attempts) == 2
    body = err.value.to_dict()
    assert body["error"] == "DescribeError" and body["answer"] == second
    assert "sk-real-key-123" not in err.value.message  # the compiler never repeats a key


def test_a_server_without_structured_outputs_is_asked_plainly(fake) -> None:
    fake.reply(Reply.json(GOOD, refuse_response_format=True))
    proposal = describe_flow("orders", model(fake))
    assert proposal.attempts == 1
    assert "response_format" in fake.requests[0].body
    assert "response_format" not in fake.requests[1].body


def test_a_short_rate_limit_is_waited_for_once(fake) -> None:
    fake.reply(Reply.rate_limited(retry_after=0.5), Reply.json(GOOD))
    assert describe_flow("orders", model(fake)).attempts == 1
    first, second = fake.requests
    assert second.at - first.at >= 0.45
    fake.reply(Reply.rate_limited(retry_after=60))
    with pytest.raises(NodeExecutionError, match="HTTP 429"):
        describe_flow("orders", model(fake))


def test_the_key_is_not_in_the_error_when_the_server_echoes_it(fake) -> None:
    fake.reply(Reply(echo_key=True, status=401))
    with pytest.raises(NodeExecutionError) as err:
        describe_flow("orders", model(fake))
    assert "HTTP 401" in str(err.value) and KEY not in str(err.value)


@pytest.mark.parametrize("text, says", [("  ", "empty"), ("x" * 8001, "over the limit")])
def test_the_request_is_checked(fake, text, says) -> None:
    with pytest.raises(NexusFlowError, match=says):
        describe_flow(text, model(fake))
    assert fake.requests == []


def test_the_configured_model() -> None:
    with pytest.raises(AiNotConfigured, match="NEXUSFLOW_AI_BASE_URL and NEXUSFLOW_AI_MODEL"):
        configured_model(Settings())
    settings = replace(Settings(), ai_base_url="http://127.0.0.1:1/v1", ai_model="m",
                       ai_key_secret="AI_KEY")
    asked: list[str] = []
    m = configured_model(settings, secret=lambda name: asked.append(name) or KEY)
    assert asked == ["AI_KEY"] and m.endpoint.api_key == KEY and m.model == "m"
    assert m.endpoint.allow_private  # the operator's endpoint, not a user's
    info = describe_info(replace(settings, ai_base_url="https://u:pw@llm.example.com/v1"))
    assert info == {"configured": True, "model": "m",
                    "base_url": "https://u:***@llm.example.com/v1"}
    assert describe_info(Settings())["configured"] is False


def test_flow_from_text_returns_a_flow_laid_out(fake) -> None:
    fake.reply(Reply.json(GOOD))
    settings = replace(Settings(), ai_base_url=fake.url, ai_model="planner")
    f = Flow.from_text("Fetch orders and summarize the big batches", settings=settings)
    assert isinstance(f, Flow) and f.name == "orders"
    assert [n.id for n in f.nodes] == ["fetch", "many", "summarize"]
    f.validate()
    doc = f.to_dict()
    assert all("position" in n for n in doc["nodes"])  # laid out in layers
    assert fake.requests[0].body["model"] == "planner"
    fake.reply(Reply("nope"), Reply("nope"))
    with pytest.raises(DescribeError) as err:
        Flow.from_text("anything", base_url=fake.url, model="other")
    assert err.value.answer == "nope" and fake.requests[-1].body["model"] == "other"

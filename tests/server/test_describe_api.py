"""POST /nexusflow/api/describe on a real Jupyter server, against the fake model: the server's
configured endpoint, model and key secret (the browser sends words only), a proposal that
compiles, an answer refused twice (422 with the compiler's error and the answer), a model that
cannot be asked (502, the echoed key scrubbed), and a server with no model configured."""

from __future__ import annotations

import json

import pytest
from aifake import FakeModel, Reply

from nexusflow_kernel.secrets import SecretStore

KEY = "sk-server-side-91ab77"

FLOW = {"schema": 1, "name": "greet", "nodes": [
    {"id": "hello", "type": "transform", "config": {"expression": "'hello ' + params['who']"}}],
    "edges": [], "params": {"who": {"type": "string", "default": "world"}}}


@pytest.fixture
def fake():
    with FakeModel() as server:
        yield server


@pytest.fixture
def ai_config(request, fake) -> dict:
    if getattr(request, "param", None) is not None:
        return request.param
    return {"ai_base_url": fake.url, "ai_model": "planner", "ai_key_secret": "AI_KEY"}


@pytest.fixture
def nf_config(nf_config, ai_config):
    return {**nf_config, **ai_config}


async def test_describe_proposes_a_flow_with_the_servers_model_and_key(api, fake,
                                                                      settings) -> None:
    SecretStore(settings).set("AI_KEY", KEY)
    code, info = await api("GET", "describe")
    assert code == 200 and info == {"configured": True, "model": "planner",
                                    "base_url": fake.url}
    fake.reply(Reply.json(FLOW))
    code, body = await api("POST", "describe", {"text": "Greet someone by name"})
    assert code == 200, body
    assert body["flow"]["nodes"][0]["id"] == "hello" and body["attempts"] == 1
    assert body["model"] == "fake-model" and body["usage"]["prompt_tokens"] == 11
    (req,) = fake.requests
    assert req.headers["Authorization"] == f"Bearer {KEY}" and req.body["model"] == "planner"
    assert req.body["messages"][-1]["content"] == "Greet someone by name"
    # audited, without the words or the key
    code, audit = await api("GET", "audit")
    entry = next(e for e in audit["entries"] if e["action"] == "flow.describe")
    assert entry["detail"] == {"model": "fake-model", "attempts": 1, "nodes": 1}
    assert KEY not in json.dumps(audit)


async def test_a_refused_answer_is_a_422_with_the_error_and_the_answer(api, fake,
                                                                      settings) -> None:
    SecretStore(settings).set("AI_KEY", KEY)
    cyclic = {**FLOW, "nodes": FLOW["nodes"] + [
        {"id": "again", "type": "transform", "config": {"expression": "1"}}],
        "edges": [{"id": "a", "source": "hello", "target": "again"},
                  {"id": "b", "source": "again", "target": "hello"}]}
    fake.reply(Reply.json(cyclic), Reply.json(cyclic))
    code, body = await api("POST", "describe", {"text": "loop forever"})
    assert code == 422, body
    assert body["error"] == "DescribeError" and body["pointer"] == "/edges/1"
    assert "cycle" in body["message"] and len(body["attempts"]) == 2
    assert json.loads(body["answer"]) == cyclic


async def test_a_model_that_cannot_be_asked_is_a_502_without_the_key(api, fake,
                                                                     settings) -> None:
    SecretStore(settings).set("AI_KEY", KEY)
    fake.reply(Reply(echo_key=True, status=401))
    code, body = await api("POST", "describe", {"text": "anything"})
    assert code == 502 and body["error"] == "ModelUnavailable", body
    assert "HTTP 401" in body["message"] and KEY not in json.dumps(body)


@pytest.mark.parametrize("body, pointer", [
    ({}, "/text"), ({"text": "   "}, "/text"), ({"text": 3}, "/text"),
    ({"text": "x", "name": "n" * 201}, "/name"),
])
async def test_bad_requests_name_the_field(api, fake, body, pointer) -> None:
    code, answer = await api("POST", "describe", body)
    assert code == 400 and answer["pointer"] == pointer, answer
    assert fake.requests == []


async def test_a_key_sent_by_the_browser_is_not_a_field(api, fake, settings) -> None:
    SecretStore(settings).set("AI_KEY", KEY)
    fake.reply(Reply.json(FLOW))
    code, _ = await api("POST", "describe", {"text": "greet", "api_key": "sk-browser",
                                             "base_url": "http://evil.example/v1"})
    assert code == 200
    (req,) = fake.requests  # the server's endpoint and key, whatever the body says
    assert req.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("ai_config", [{}], indirect=True)
async def test_without_a_model_the_server_says_how_to_configure_one(api, fake) -> None:
    code, info = await api("GET", "describe")
    assert code == 200 and info["configured"] is False
    code, body = await api("POST", "describe", {"text": "anything"})
    assert code == 400 and "NEXUSFLOW_AI_BASE_URL" in body["message"], body
    assert fake.requests == []


def test_flow_from_text_through_the_service(keyed, tokens, fake, tmp_path) -> None:
    """With NEXUSFLOW_SERVICE_URL, a notebook holds no key: the service asks its own model."""
    from nftest import RunningService

    from nexusflow_kernel import Flow
    from nexusflow_kernel.errors import DescribeError
    from nexusflow_kernel.settings import Settings

    SecretStore(keyed).set("AI_KEY", KEY)
    running = RunningService(keyed, extra={"ai_base_url": fake.url, "ai_model": "planner",
                                           "ai_key_secret": "AI_KEY"})
    try:
        remote = Settings(service_url=running.url, service_token=tokens("alice"),
                          data_dir=tmp_path / "none")
        fake.reply(Reply.json(FLOW))
        f = Flow.from_text("Greet someone", settings=remote)
        assert [n.id for n in f.nodes] == ["hello"] and f.validate()
        assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
        fake.reply(Reply("not a flow"), Reply("not a flow"))
        with pytest.raises(DescribeError, match="not JSON"):
            Flow.from_text("Greet someone", settings=remote)
    finally:
        running.stop()

"""The ai node against the fake OpenAI-compatible server: answers, streaming into the log,
statuses and Retry-After, malformed answers, the json_schema retry, the key kept out of every
error, the private-address policy, and what the compiler refuses."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from aifake import FakeModel, Reply

from nexusflow_kernel.errors import NodeConfigError, NodeExecutionError
from nexusflow_kernel.model.compiler import compile_flow
from nexusflow_kernel.model.document import load_document
from nexusflow_kernel.nodes import NodeContext, NodeLog, get_node_type
from nexusflow_kernel.nodes.chat import retry_after_s
from nexusflow_kernel.settings import Settings

KEY = "sk-test-7f3a9c2e1b"


@pytest.fixture
def fake():
    with FakeModel() as server:
        yield server


def run_node(config: dict, *, allow_private: bool = True, deadline: float | None = None,
             log: NodeLog | None = None, settings: Settings | None = None) -> dict:
    settings = settings or replace(Settings(), allow_private_http=allow_private)
    ctx = NodeContext(run_id="r", node_id="ask", attempt=1, config=config, inputs={},
                      params={}, settings=settings, log=log or NodeLog(), deadline=deadline)
    return get_node_type("ai").run(ctx)


def test_a_plain_answer_with_model_and_usage(fake) -> None:
    fake.reply(Reply("Paris.", model="gpt-fake"))
    out = run_node({"base_url": fake.url, "model": "m1", "system": "Be brief.",
                    "prompt": "Capital of France?", "temperature": 0.2, "max_tokens": 20,
                    "api_key": KEY, "stream": False})
    assert out == {"text": "Paris.", "model": "gpt-fake",
                   "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.body == {"model": "m1", "temperature": 0.2, "max_tokens": 20, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"}]}


def test_azure_header_and_a_query_in_the_base_url(fake) -> None:
    fake.reply(Reply("ok"))
    run_node({"base_url": fake.url + "/deployments/d1?api-version=2024-10-21", "model": "d1",
              "prompt": "hi", "api_key": KEY, "auth_header": "api-key", "stream": False})
    (req,) = fake.requests
    assert req.path == "/v1/deployments/d1/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == KEY and "Authorization" not in req.headers


def test_streamed_tokens_reach_the_log_while_they_arrive(fake) -> None:
    pieces = ["The", " answer", " grows", "\nline", " two"]
    fake.reply(Reply(pieces=pieces, delay_s=0.15))
    log = NodeLog()
    seen: list[tuple[float, str]] = []
    log.live = lambda lg: seen.append((time.monotonic(), lg.text()))
    started = time.monotonic()
    out = run_node({"base_url": fake.url, "model": "m", "prompt": "go"}, log=log)
    ended = time.monotonic()
    assert out["text"] == "The answer grows\nline two"
    assert out["usage"] == {"prompt_tokens": 11, "completion_tokens": 7}  # include_usage
    assert fake.requests[0].body["stream"] is True
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    # the log grew piece by piece, well before the node ended
    growing = [text for at, text in seen if "The" in text]
    assert any(t.endswith("The answer") for t in growing)
    first = next(at for at, text in seen if text.endswith("The"))
    # four more pieces come 0.15 s apart after the first: the first was seen >= 0.6 s before the end
    assert ended - first > 0.45 and first - started < 10
    final = log.text()
    assert "The answer grows" in final and final.splitlines()[-2].endswith("line two")


def test_a_server_that_ignores_stream_still_answers(fake) -> None:
    def plain(req):
        return Reply(body=b'{"model": "x", "choices": [{"message": {"content": "whole"}}]}')

    fake.fallback = plain
    log = NodeLog()
    assert run_node({"base_url": fake.url, "model": "m", "prompt": "go"}, log=log)["text"] \
        == "whole"
    assert "whole" in log.text()


@pytest.mark.parametrize("reply, retryable, wait", [
    (Reply.rate_limited(retry_after=7), True, 7.0),
    (Reply.rate_limited(retry_after=1500, header="retry-after-ms"), True, 1.5),
    (Reply.server_error(503), True, None),
    (Reply(status=400, body=b'{"error": {"message": "unknown model m"}}'), False, None),
    (Reply(status=404, body=b'{"error": "no route"}'), False, None),
])
def test_statuses_say_whether_to_retry_and_when(fake, reply, retryable, wait) -> None:
    fake.reply(reply)
    with pytest.raises(NodeExecutionError) as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "go", "stream": False})
    assert err.value.retryable is retryable
    assert err.value.retry_after == wait
    assert f"HTTP {reply.status}" in str(err.value)
    assert len(fake.requests) == 1  # the node's retry policy retries, not the client


def test_retry_after_as_a_date() -> None:
    from email.utils import formatdate

    now = time.time()
    assert retry_after_s({"Retry-After": formatdate(now + 30, usegmt=True)}, now) \
        == pytest.approx(30, abs=1)
    assert retry_after_s({"Retry-After": "soon"}) is None
    assert retry_after_s({"Retry-After": "999999"}) == 3600.0


@pytest.mark.parametrize("reply", [
    Reply.malformed(),
    Reply(body=b'{"choices": []}'),
    Reply(body=b'{"choices": [{"message": {"content": 42}}]}'),
])
def test_a_malformed_answer_fails_and_may_be_retried(fake, reply) -> None:
    fake.reply(reply)
    with pytest.raises(NodeExecutionError, match="not a chat completion") as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "go", "stream": False})
    assert err.value.retryable


def test_a_malformed_event_stream(fake) -> None:
    fake.reply(Reply(body=b"data: {not json\n\n", headers={"Content-Type": "text/event-stream"}))
    with pytest.raises(NodeExecutionError, match="an event is not JSON"):
        run_node({"base_url": fake.url, "model": "m", "prompt": "go"})


SCHEMA = {"type": "object", "required": ["city", "population"], "additionalProperties": False,
          "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}}


def test_json_schema_retries_once_with_the_fault(fake) -> None:
    fake.reply(Reply.json({"city": "Paris", "population": "two million"}),
               Reply("```json\n" + '{"city": "Paris", "population": 2100000}' + "\n```"))
    log = NodeLog()
    out = run_node({"base_url": fake.url, "model": "m", "prompt": "Paris?",
                    "json_schema": SCHEMA}, log=log)
    assert out["json"] == {"city": "Paris", "population": 2100000}
    assert out["usage"] == {"prompt_tokens": 22, "completion_tokens": 14}  # both calls
    first, second = fake.requests
    assert first.body["response_format"]["type"] == "json_schema"
    assert first.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    fix = second.body["messages"][-1]["content"]
    assert "/population" in fix and "'two million' is not of type 'integer'" in fix
    assert "asking once more" in log.text()


def test_json_schema_fails_after_one_retry(fake) -> None:
    fake.reply(Reply("not json at all"), Reply.json({"city": 3}))
    with pytest.raises(NodeExecutionError, match="after one retry") as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "x", "json_schema": SCHEMA,
                  "stream": False})
    assert not err.value.retryable
    assert "'population' is a required property" in str(err.value) or "/city" in str(err.value)
    assert len(fake.requests) == 2


def test_a_server_without_response_format_is_asked_plainly(fake) -> None:
    fake.reply(Reply.json({"city": "Oslo", "population": 700000},
                          refuse_response_format=True))
    log = NodeLog()
    out = run_node({"base_url": fake.url, "model": "m", "prompt": "x", "json_schema": SCHEMA,
                    "stream": False}, log=log)
    assert out["json"]["city"] == "Oslo"
    assert "response_format" in fake.requests[0].body
    assert "response_format" not in fake.requests[1].body
    assert "refused response_format" in log.text()


@pytest.mark.parametrize("stream", [False, True])
def test_the_key_never_appears_in_an_error_even_when_the_server_echoes_it(fake, stream) -> None:
    fake.reply(Reply(echo_key=True, status=401))
    log = NodeLog()
    with pytest.raises(NodeExecutionError) as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "x", "api_key": KEY,
                  "stream": stream}, log=log)
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"  # it was sent
    assert "HTTP 401" in str(err.value) and "Incorrect API key provided" in str(err.value)
    assert KEY not in str(err.value) and KEY[3:] not in str(err.value)
    assert KEY not in log.text()
    assert not err.value.retryable


def test_private_addresses_follow_the_workers_policy(fake) -> None:
    with pytest.raises(NodeExecutionError, match="loopback") as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "x"}, allow_private=False)
    assert not err.value.retryable
    assert fake.requests == []  # refused before anything was sent
    with pytest.raises(NodeExecutionError, match="only http and https"):
        run_node({"base_url": "file:///etc/passwd", "model": "m", "prompt": "x"})


def test_the_deadline_stops_a_slow_stream(fake) -> None:
    fake.reply(Reply(pieces=["a"] * 20, delay_s=0.2))
    started = time.monotonic()
    with pytest.raises(NodeExecutionError, match="timed out") as err:
        run_node({"base_url": fake.url, "model": "m", "prompt": "x"},
                 deadline=time.time() + 1.0)
    assert time.monotonic() - started < 2.0
    assert err.value.retryable


def test_base_url_comes_from_the_workers_setting(fake) -> None:
    fake.reply(Reply("hi"))
    settings = replace(Settings(), allow_private_http=True, ai_base_url=fake.url)
    assert run_node({"model": "m", "prompt": "x"}, settings=settings)["text"] == "hi"
    with pytest.raises(NodeExecutionError, match="NEXUSFLOW_AI_BASE_URL"):
        run_node({"model": "m", "prompt": "x"})


def _compile(config: dict) -> None:
    compile_flow(load_document({"schema": 1, "nodes": [
        {"id": "A", "type": "ai", "config": config}], "edges": []}))


def test_the_compiler_refuses_a_plain_key_without_repeating_it() -> None:
    with pytest.raises(NodeConfigError) as err:
        _compile({"model": "m", "prompt": "x", "api_key": KEY})
    assert err.value.pointer == "/nodes/0/config/api_key"
    assert "must be a stored secret" in str(err.value)
    assert KEY not in str(err.value) and KEY not in str(err.value.to_dict())
    _compile({"model": "m", "prompt": "x", "api_key": {"$secret": "OPENAI_KEY"}})


@pytest.mark.parametrize("config, pointer", [
    ({"model": "m", "prompt": "x", "json_schema": {"type": "nope"}}, "/json_schema/type"),
    ({"model": "m", "prompt": "x", "base_url": "ftp://host/v1"}, "/base_url"),
    ({"model": "m", "prompt": "{{ inputs[ }}"}, "/prompt"),
    ({"model": "m"}, ""),
    ({"model": "m", "prompt": "x", "temperature": 3}, "/temperature"),
])
def test_the_compiler_names_each_fault(config, pointer) -> None:
    with pytest.raises(NodeConfigError) as err:
        _compile(config)
    assert err.value.pointer == "/nodes/0/config" + pointer


def test_json_schema_is_not_a_template() -> None:
    _compile({"model": "m", "prompt": "x", "json_schema": {
        "type": "object", "description": "{{ not a template }}"}})

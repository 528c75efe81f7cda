"""The mock upstream's agent APIs (OpenAI's Responses API, Anthropic's Messages API), driven directly
(no Envoy) by the official `openai` and `anthropic` clients, plus the raw SSE framing those clients rely on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from extproc.devtools.mock_upstream import start

RESPONSE_EVENTS_AROUND_DELTAS = (
    ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"],
    [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ],
)
MESSAGE_EVENTS_AROUND_DELTAS = (
    ["message_start", "content_block_start", "ping"],
    ["content_block_stop", "message_delta", "message_stop"],
)


class MockServer:
    """The mock upstream on its own event loop in a daemon thread, on a free port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start("127.0.0.1", 0), self.loop)
        self.runner, port = future.result(timeout=10)
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def mock() -> Iterator[str]:
    server = MockServer()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture()
def http(mock: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mock, timeout=10) as client:
        assert client.delete("/__mock/requests").status_code == 200
        yield client


@pytest.fixture()
def oai(mock: str, http: httpx.Client) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=mock + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture()
def claude(mock: str, http: httpx.Client) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=mock, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def named_events(
    http: httpx.Client, path: str, body: dict[str, Any], **headers: str
) -> list[tuple[str, Any]]:
    """POST a streamed request; return each SSE frame's (event name, decoded data), checking the framing."""
    with http.stream("POST", path, json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    assert raw.endswith("\n\n")
    frames = raw[:-2].split("\n\n")
    events: list[tuple[str, Any]] = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        events.append((event_line[len("event: ") :], orjson.loads(data_line[len("data: ") :])))
    return events


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --- OpenAI's Responses API


def test_responses_buffered_string_input(oai: openai.OpenAI, http: httpx.Client) -> None:
    resp = oai.responses.create(model="gpt-4o", input="hello there world", instructions="be brief")
    assert resp.output_text == "[mock:gpt-4o] hello there world"
    assert resp.id.startswith("resp_")
    assert resp.object == "response"
    assert resp.status == "completed"
    assert resp.model == "gpt-4o"
    assert resp.instructions == "be brief"
    assert isinstance(resp.created_at, (int, float))
    [item] = resp.output
    assert item.type == "message"
    assert item.id.startswith("msg_")
    assert (item.status, item.role) == ("completed", "assistant")
    [part] = item.content
    assert part.type == "output_text"
    assert part.text == "[mock:gpt-4o] hello there world"
    assert part.annotations == []
    assert resp.usage is not None
    assert resp.usage.input_tokens == 5  # "be brief hello there world"
    assert resp.usage.output_tokens == 4
    assert resp.usage.total_tokens == 9
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    recorded = http.get("/__mock/last").json()
    assert recorded["path"] == "/v1/responses"
    assert recorded["json"]["input"] == "hello there world"


def test_responses_items_answer_the_last_user_item(oai: openai.OpenAI) -> None:
    items: list[Any] = [
        user("first question"),
        {"role": "assistant", "content": "ok"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second "}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and last"}]},
    ]
    resp = oai.responses.create(model="m1", input=items)
    assert resp.output_text == "[mock:m1] and last"
    assert resp.usage is not None
    assert resp.usage.input_tokens == 6  # "first question ok second and last"


def test_responses_without_v1_prefix(http: httpx.Client) -> None:
    resp = http.post("/responses", json={"model": "m2", "input": "no prefix"})
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "response"
    assert data["output"][0]["content"][0]["text"] == "[mock:m2] no prefix"


def test_responses_stream_through_the_sdk(oai: openai.OpenAI) -> None:
    stream = oai.responses.create(
        model="gpt-4o", input="one two three", stream=True, extra_headers={"x-mock-chunks": "5"}
    )
    events = list(stream)
    types = [e.type for e in events]
    before, after = RESPONSE_EVENTS_AROUND_DELTAS
    assert types == [*before, *["response.output_text.delta"] * 5, *after]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "[mock:gpt-4o] one two three"
    assert all(deltas)
    created = events[0]
    assert created.type == "response.created"
    assert created.response.status == "in_progress"
    assert created.response.output == []
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.status == "completed"
    assert completed.response.output_text == "[mock:gpt-4o] one two three"
    assert completed.response.id == created.response.id
    usage = completed.response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (3, 4, 7)
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {completed.response.output[0].id}


def test_responses_stream_helper_final_response(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4o", input=[user("via the helper")]) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "[mock:gpt-4o] via the helper"
    assert len(texts) == 3  # the default chunk count
    assert final.output_text == "[mock:gpt-4o] via the helper"


def test_responses_stream_framing(http: httpx.Client) -> None:
    body = {"model": "gpt-4o", "input": "framing check", "stream": True}
    events = named_events(http, "/v1/responses", body, **{"x-mock-chunks": "2"})
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert [name for name, _ in events].count("response.output_text.delta") == 2
    done = dict(events)["response.output_text.done"]
    assert done["text"] == "[mock:gpt-4o] framing check"
    assert (done["output_index"], done["content_index"]) == (0, 0)


@pytest.mark.parametrize(
    ("status", "exc_class", "err_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (429, openai.RateLimitError, "rate_limit_error"),
        (500, openai.InternalServerError, "internal_server_error"),
    ],
)
def test_responses_status_override(
    oai: openai.OpenAI, status: int, exc_class: type[openai.APIStatusError], err_type: str
) -> None:
    for stream in (False, True):
        with pytest.raises(exc_class) as caught:
            oai.responses.create(
                model="gpt-4o", input="x", stream=stream, extra_headers={"x-mock-status": str(status)}
            )
        assert caught.value.status_code == status
        assert caught.value.body == {
            "message": f"mock upstream error {status}",
            "type": err_type,
            "param": None,
            "code": str(status),
        }


# --- Anthropic's Messages API


def test_messages_buffered(claude: anthropic.Anthropic, http: httpx.Client) -> None:
    message = claude.messages.create(
        model="claude-test",
        max_tokens=64,
        system=[{"type": "text", "text": "be brief"}],
        messages=[user("first question"), {"role": "assistant", "content": "ok"}, user("hello there")],
    )
    assert message.id.startswith("msg_")
    assert (message.type, message.role, message.model) == ("message", "assistant", "claude-test")
    [block] = message.content
    assert block.type == "text"
    assert block.text == "[mock:claude-test] hello there"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens == 7  # "be brief first question ok hello there"
    assert message.usage.output_tokens == 3
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    recorded = http.get("/__mock/last").json()
    assert recorded["path"] == "/v1/messages"
    assert recorded["json"]["max_tokens"] == 64
    headers = recorded["headers"]
    assert "anthropic-version" in headers
    # older clients send the key as x-api-key, newer ones as a bearer token
    assert "sk-ant-test" in (
        headers.get("x-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    )


def test_messages_text_blocks_and_string_system(claude: anthropic.Anthropic) -> None:
    blocks: Any = [{"type": "text", "text": "look at "}, {"type": "text", "text": "this"}]
    message = claude.messages.create(model="c1", max_tokens=8, system="sys", messages=[user(blocks)])
    assert message.content[0].type == "text"
    assert message.content[0].text == "[mock:c1] look at this"
    assert message.usage.input_tokens == 4  # "sys look at this"


def test_messages_stream_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-test", max_tokens=64, messages=[user("stream me please")]
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == ["[mock:claud", "e-test] stre", "am me please"]  # 35 characters in 3 pieces
    assert final.content[0].type == "text"
    assert final.content[0].text == "[mock:claude-test] stream me please"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 3
    assert final.usage.output_tokens == 4  # message_delta's count replaces message_start's


def test_messages_create_stream_events(claude: anthropic.Anthropic) -> None:
    stream = claude.messages.create(
        model="c2", max_tokens=8, messages=[user("a b")], stream=True, extra_headers={"x-mock-chunks": "4"}
    )
    events = list(stream)
    before, after = MESSAGE_EVENTS_AROUND_DELTAS
    # the SDK drops ping events
    assert [e.type for e in events] == [*before[:-1], *["content_block_delta"] * 4, *after]
    start = events[0]
    assert start.type == "message_start"
    assert start.message.content == []
    assert start.message.usage.input_tokens == 2
    deltas = [
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]
    assert "".join(deltas) == "[mock:c2] a b"
    delta = events[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 3


def test_messages_stream_framing(http: httpx.Client) -> None:
    body = {"model": "c3", "max_tokens": 8, "stream": True, "messages": [user("raw frames")]}
    events = named_events(http, "/v1/messages", body)
    before, after = MESSAGE_EVENTS_AROUND_DELTAS
    assert [name for name, _ in events] == [*before, *["content_block_delta"] * 3, *after]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"] == {
        "input_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    assert start["stop_reason"] is None
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 3},
    }


def test_messages_under_the_anthropic_mount(mock: str, http: httpx.Client) -> None:
    with anthropic.Anthropic(base_url=mock + "/anthropic", api_key="k", max_retries=0) as client:
        message = client.messages.create(model="c4", max_tokens=8, messages=[user("mounted")])
        with client.messages.stream(model="c4", max_tokens=8, messages=[user("mounted stream")]) as stream:
            final = stream.get_final_message()
    assert message.content[0].type == "text"
    assert message.content[0].text == "[mock:c4] mounted"
    assert final.content[0].type == "text"
    assert final.content[0].text == "[mock:c4] mounted stream"
    paths = [r["path"] for r in http.get("/__mock/requests").json()]
    assert paths == ["/anthropic/v1/messages", "/anthropic/v1/messages"]


def test_anthropic_mount_serves_only_messages(http: httpx.Client) -> None:
    resp = http.post("/anthropic/v1/chat/completions", json={"model": "m", "messages": [user("x")]})
    assert resp.status_code == 200
    assert resp.json()["mock"] == "echo"


@pytest.mark.parametrize(
    ("status", "exc_class", "err_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.APIStatusError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (504, anthropic.InternalServerError, "timeout_error"),
        (529, anthropic.InternalServerError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("prefix", ["", "/anthropic"])
def test_messages_status_override(
    mock: str, prefix: str, status: int, exc_class: type[anthropic.APIStatusError], err_type: str
) -> None:
    with anthropic.Anthropic(base_url=mock + prefix, api_key="k", max_retries=0) as client:
        for stream in (False, True):
            with pytest.raises(exc_class) as caught:
                client.messages.create(
                    model="c",
                    max_tokens=8,
                    messages=[user("x")],
                    stream=stream,
                    extra_headers={"x-mock-status": str(status)},
                )
            assert caught.value.status_code == status
            assert caught.value.body == {
                "type": "error",
                "error": {"type": err_type, "message": f"mock upstream error {status}"},
            }


def test_messages_non_object_body_is_an_anthropic_400(http: httpx.Client) -> None:
    resp = http.post("/v1/messages", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "request body is not a JSON object"},
    }

"""The Responses and Messages families' wire shapes, driven directly: typed fields, the end user, usage,
stream text, framing, refusals and errors, and what hooks and policies read of their requests."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.api import anthropic
from extproc.api.codecs import JsonCodec
from extproc.api.endpoints import ENDPOINT_PATHS, RouteTable, path_regex
from extproc.api.guardrail_inputs import GuardrailInputs
from extproc.api.messages import AnthropicMessages
from extproc.api.prompt import get_formatted_prompt
from extproc.api.responses import Responses
from extproc.api.sse import SSEDecoder
from extproc.api.texts import request_texts
from extproc.api.views import ResponsesAPIResponse
from extproc.errors import ErrorInfo
from extproc.types import sidecar_metadata

CODEC = JsonCodec(64)
RESPONSES = Responses(CODEC)
MESSAGES = AnthropicMessages(CODEC)


def test_routes_cover_every_mount() -> None:
    table = RouteTable(64)
    assert isinstance(table.match("/v1/responses"), Responses)
    assert isinstance(table.match("/responses/?stream=1"), Responses)
    for path in ("/v1/messages", "/messages", "/anthropic/v1/messages", "/anthropic/v1/messages/"):
        assert isinstance(table.match(path), AnthropicMessages), path
    assert table.match("/anthropic/messages") is None
    assert table.match("/v1/messages/count_tokens") is None
    assert path_regex("/messages") == r"^((/v1)?/messages|/anthropic/v1/messages)/?$"
    assert {"/responses", "/messages"} <= set(ENDPOINT_PATHS)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"model": "m", "max_tokens": 8}, ("messages: Field required", "messages")),
        ({"messages": "hi"}, ("messages: Input should be an array", "messages")),
        ({"messages": [], "max_tokens": "8"}, ("max_tokens: Input should be an integer", "max_tokens")),
        ({"messages": [], "max_tokens": True}, ("max_tokens: Input should be an integer", "max_tokens")),
        ({"messages": [], "metadata": []}, ("metadata: Input should be an object", "metadata")),
        (
            {"messages": [], "system": 1},
            ("system: Input should be a string or an array of content blocks", "system"),
        ),
        ({"messages": [], "stream": "yes"}, ("stream: Input should be a boolean", "stream")),
        ({"messages": [], "system": [{"type": "text", "text": "s"}], "max_tokens": 8}, None),
    ],
)
def test_messages_typed_fields(data: dict[str, Any], problem: tuple[str, str] | None) -> None:
    assert MESSAGES.problem(data) == problem


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"input": 3}, "input"),
        ({"input": "x", "instructions": ["x"]}, "instructions"),
        ({"input": [], "tools": {}}, "tools"),
        ({"input": "x", "user": 5}, "user"),
        ({"previous_response_id": "resp_1"}, None),  # no input: allowed, as the API allows it
    ],
)
def test_responses_typed_fields(data: dict[str, Any], param: str | None) -> None:
    found = RESPONSES.problem(data)
    assert (found[1] if found else None) == param


def test_the_end_user_of_each_family() -> None:
    assert MESSAGES.user({"metadata": {"user_id": "u"}}) == "u"
    assert MESSAGES.has_user({"metadata": {"user_id": ""}}) is True
    assert MESSAGES.has_user({"user": "u"}) is False  # Anthropic's API has no top-level user
    assert RESPONSES.has_user({"user": "u"}) and not RESPONSES.has_user({"metadata": {"user_id": "u"}})


def test_usage_as_the_sidecar_counts_it() -> None:
    response = {
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 4},
        }
    }
    assert RESPONSES.usage(response) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cached_tokens": 4,
    }
    assert RESPONSES.usage({"type": "response.completed", "response": response})["total_tokens"] == 15
    assert RESPONSES.usage({"type": "response.output_text.delta", "delta": "x"}) == {}
    start = {
        "type": "message_start",
        "message": {
            "usage": {
                "input_tokens": 7,
                "output_tokens": 1,
                "cache_read_input_tokens": 3,
                "cache_creation_input_tokens": 2,
            }
        },
    }
    assert MESSAGES.usage(start) == {
        "prompt_tokens": 12,
        "cached_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 13,
    }
    assert MESSAGES.usage({"type": "message_delta", "usage": {"output_tokens": 9}}) == {
        "completion_tokens": 9
    }
    assert MESSAGES.usage({"usage": {"input_tokens": True, "output_tokens": -1}}) == {}


def test_stream_text_is_read_and_replaced_only_in_text_events() -> None:
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    assert MESSAGES.chunk_text(delta) == "hi"
    assert MESSAGES.set_chunk_text(delta, "HI") is True and delta["delta"]["text"] == "HI"
    tool = {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": "{"}}
    assert MESSAGES.chunk_text(tool) is None and MESSAGES.set_chunk_text(tool, "x") is False
    assert MESSAGES.set_chunk_text({"type": "ping"}, "x") is False
    event = {"type": "response.output_text.delta", "delta": "a"}
    assert RESPONSES.chunk_text(event) == "a"
    assert RESPONSES.set_chunk_text(event, "b") is True and event["delta"] == "b"
    assert RESPONSES.set_chunk_text({"type": "response.created"}, "b") is False


@pytest.mark.parametrize("family", [RESPONSES, MESSAGES])
def test_changed_events_keep_their_name_and_no_done(family: Any) -> None:
    encoded = family.encode_event({"type": "x.y", "v": 1}, "x.y")
    (event,) = SSEDecoder().feed(encoded)
    assert event.event == "x.y" and event.json() == {"type": "x.y", "v": 1}
    assert family.end_of_stream() == b""


def test_messages_errors_and_refusals_are_anthropics() -> None:
    refusal = MESSAGES.refusal("no", stream=True)
    assert refusal.status == 400
    assert orjson.loads(refusal.body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "no"},
    }
    reply = MESSAGES.error_reply(ErrorInfo(529, "busy", "x"), "d", None)
    assert orjson.loads(reply.body)["error"] == {"type": "overloaded_error", "message": "busy"}
    frame = MESSAGES.error_event(ErrorInfo(500, "boom", "x"))
    (event,) = SSEDecoder().feed(frame)
    assert event.event == "error" and event.json()["error"]["type"] == "api_error"
    expected = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        504: "timeout_error",
        529: "overloaded_error",
        418: "invalid_request_error",
        503: "api_error",
    }
    assert {status: anthropic.error_type(status) for status in expected} == expected


def test_responses_errors_are_openai_envelopes_and_an_error_event_the_sdk_raises() -> None:
    refusal = RESPONSES.refusal("no", stream=False)
    assert refusal.status == 400 and orjson.loads(refusal.body)["error"]["message"] == "no"
    (event,) = SSEDecoder().feed(RESPONSES.error_event(ErrorInfo(500, "boom", "internal_server_error")))
    assert event.event == "error"
    body = event.json()
    assert body["type"] == "error" and body["error"]["message"] == "boom"  # `error` makes the SDK raise


def test_answer_views() -> None:
    answer = {
        "object": "response",
        "output": [
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "a"},
                    {"type": "refusal", "refusal": "r"},
                    {"type": "output_text", "text": "b"},
                ],
            }
        ],
    }
    view = RESPONSES.answer_view(answer)
    assert isinstance(view, ResponsesAPIResponse) and view.output_text == "ab"
    view.output_text = "new"
    assert [part.get("text") for part in answer["output"][0]["content"]] == ["new", None, ""]
    message = {"type": "message", "content": [{"type": "text", "text": "x"}]}
    assert MESSAGES.answer_view(message) is message


def test_what_hooks_scan_of_each_family() -> None:
    messages = {
        "system": [{"type": "text", "text": "sys"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "SIG"},
                    {"type": "tool_use", "id": "t1", "name": "find", "input": {"who": "x@y.z"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "res"}]},
        ],
    }
    texts = [place.text for place in request_texts(messages, "anthropic_messages")]
    assert {"sys", "q", "t", "find", "x@y.z", "who", "res"} <= set(texts)
    assert "QUJD" not in texts and "SIG" not in texts and "image/png" not in texts
    assert get_formatted_prompt(messages, "anthropic_messages") == 'sys\nq\n{"who":"x@y.z"}\nres'
    responses = {
        "instructions": "be brief",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "hi"},
                    {"type": "input_image", "image_url": "data:image/png;base64,QUJD"},
                ],
            },
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": "v"}'},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
            {"type": "reasoning", "encrypted_content": "ENC"},
        ],
    }
    texts = [place.text for place in request_texts(responses, "aresponses")]
    assert {"be brief", "hi", "v", "42", "f"} <= set(texts)
    assert not any("QUJD" in text or text == "ENC" for text in texts)
    assert get_formatted_prompt(responses, "aresponses") == 'be brief\nhi\n{"a": "v"}\n42'
    assert get_formatted_prompt({"input": "plain"}, "responses") == "plain"


def test_guardrail_inputs_of_each_family_write_back() -> None:
    data = {
        "system": "s",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "tool_result", "content": [{"type": "text", "text": "y"}]},
                ],
            }
        ],
        "tools": [{"name": "t"}],
    }
    found = GuardrailInputs.of_request(data, "anthropic_messages")
    assert (
        found is not None
        and found.inputs["texts"] == ["s", "x", "y"]
        and found.inputs["tools"] == [{"name": "t"}]
    )
    found.write_back({"texts": ["S", "X", "Y"]})
    assert data["system"] == "S" and data["messages"][0]["content"][1]["content"][0]["text"] == "Y"
    answer = {"type": "message", "content": [{"type": "text", "text": "a"}, {"type": "tool_use", "id": "1"}]}
    found = GuardrailInputs.of_response(answer, "anthropic_messages")
    assert (
        found is not None
        and found.inputs["texts"] == ["a"]
        and found.inputs["tool_calls"] == [answer["content"][1]]
    )
    request = {
        "instructions": "i",
        "input": [{"role": "user", "content": "u"}, {"type": "function_call_output", "output": "o"}],
    }
    found = GuardrailInputs.of_request(request, "aresponses")
    assert found is not None and found.inputs["texts"] == ["i", "u", "o"]
    response = {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": "r"}]},
            {"type": "function_call", "name": "f"},
        ]
    }
    found = GuardrailInputs.of_response(response, "responses")
    assert (
        found is not None
        and found.inputs["texts"] == ["r"]
        and found.inputs["tool_calls"] == [{"type": "function_call", "name": "f"}]
    )


def test_sidecar_metadata_is_litellm_metadata_where_metadata_is_the_clients() -> None:
    assert sidecar_metadata({"metadata": {"user_id": "u"}, "litellm_metadata": {"k": 1}}) == {"k": 1}
    assert sidecar_metadata({"metadata": {"k": 2}}) == {"k": 2}
    assert sidecar_metadata({}) is None

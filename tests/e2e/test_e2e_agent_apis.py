"""OpenAI's Responses API and Anthropic's Messages API through a real Envoy, driven by the official `openai`
and `anthropic` SDKs: every hook kind, refusal shape and error path, buffered and streamed.

One stack serves the module: its handler does what the request's `x-hook-action` header says and
records what it saw (call type, the sidecar's metadata, what the success and stream hooks received) in
`calls.jsonl` next to the config.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anthropic
import openai
import pytest

pytestmark = pytest.mark.e2e

HANDLER = '''
import json
from pathlib import Path

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


def note(**record):
    with CALLS.open("a") as calls:
        calls.write(json.dumps(record, default=str) + "\\n")


def action_of(data):
    return data["litellm_metadata"]["headers"].get("x-hook-action", "none")


class Agents(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        action = action_of(data)
        sidecar = data["litellm_metadata"]
        note(hook="pre_call", call_type=call_type, action=action, id=data["litellm_call_id"],
             client_metadata=data.get("metadata"), key_hash=sidecar["user_api_key_hash"],
             request_id=sidecar["request_id"], end_user=user_api_key_dict.end_user_id)
        if action == "refuse":
            return "Sorry, not that."
        if action == "http403":
            raise HTTPException(status_code=403, detail="not for you")
        if action == "http429":
            raise HTTPException(status_code=429, detail="slow down")
        if action == "valueerror":
            raise ValueError("hook bug")
        if action == "rewrite":
            if call_type == "aresponses":
                data["input"] = "rewritten question"
            else:
                data["messages"][-1]["content"] = "rewritten question"
        return data

    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if action_of(data) == "moderate":
            raise HTTPException(status_code=400, detail="flagged while the upstream worked")

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        action = action_of(data)
        if "input" in data:
            note(hook="success", kind=type(response).__name__, text=response.output_text,
                 first=response.output[0].content[0].text)
            if action == "replace":
                response.output[0].content[0].text = "replaced by a hook"
        else:
            note(hook="success", kind=type(response).__name__, text=response["content"][0]["text"])
            if action == "replace":
                response["content"][0]["text"] = "replaced by a hook"
        return response

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        note(hook="failure", status=getattr(original_exception, "status_code", None),
             kind=type(original_exception).__name__)

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        action = action_of(request_data)
        async for item in response:
            if isinstance(item, bytes):  # Messages: whole SSE frames
                note(hook="frame", starts=item[:40].decode())
                if action == "shout" and b"text_delta" in item:
                    head, _, data = item.partition(b"data: ")
                    event = json.loads(data)
                    event["delta"]["text"] = event["delta"]["text"].upper()
                    item = head + b"data: " + json.dumps(event).encode() + b"\\n\\n"
            else:  # Responses: event objects
                note(hook="event", type=item.type)
                if action == "shout" and item.type == "response.output_text.delta":
                    item.delta = item.delta.upper()
            yield item


handler = Agents()
'''
CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o}
  - model_name: claude-sonnet
    litellm_params: {model: anthropic/claude-sonnet}
litellm_settings:
  callbacks: agent_hooks.handler
"""
SDK_KEY = "sk-agents-test"


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"agent_hooks.py": HANDLER})
    stack.mock_clear()
    return stack


@pytest.fixture()
def oai(stack):
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=SDK_KEY, max_retries=0) as client:
        yield client


@pytest.fixture()
def claude(stack):
    with anthropic.Anthropic(base_url=stack.url, api_key=SDK_KEY, max_retries=0) as client:
        yield client


def act(action: str) -> dict[str, str]:
    return {"x-hook-action": action}


def calls(stack, **match: Any) -> list[dict[str, Any]]:
    return [c for c in stack.hook_calls() if all(c.get(k) == v for k, v in match.items())]


def upstream_body(stack) -> dict[str, Any]:
    record = stack.mock_last()
    assert record is not None, "nothing reached the upstream"
    return json.loads(base64.b64decode(record["body_base64"]))


def wait_for(found, what: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"never saw {what}")


# ---- Responses API ----


def test_responses_buffered_passes_with_hooks_and_sidecar_metadata_kept_from_upstream(stack, oai, request_id):
    answer = oai.responses.create(
        model="gpt-4o",
        input="what is up",
        metadata={"team": "blue"},
        extra_headers={"x-request-id": request_id},
    )
    assert answer.output_text == "[mock:gpt-4o] what is up"
    sent = upstream_body(stack)
    assert sent["metadata"] == {"team": "blue"}  # the client's own, as sent
    assert "litellm_metadata" not in sent and "litellm_call_id" not in sent
    (pre,) = calls(stack, hook="pre_call", id=stack.request_id_of(request_id))
    assert pre["call_type"] == "aresponses"
    assert pre["client_metadata"] == {"team": "blue"}
    assert pre["key_hash"] and pre["key_hash"] != SDK_KEY
    success = calls(stack, hook="success")[-1]
    assert success["kind"] == "ResponsesAPIResponse"
    assert success["text"] == success["first"] == "[mock:gpt-4o] what is up"


def test_responses_pre_call_rewrite_reaches_the_upstream(stack, oai):
    answer = oai.responses.create(model="gpt-4o", input="original", extra_headers=act("rewrite"))
    assert upstream_body(stack)["input"] == "rewritten question"
    assert answer.output_text == "[mock:gpt-4o] rewritten question"


@pytest.mark.parametrize("stream", [False, True])
def test_responses_string_refusal_is_a_400_before_any_byte(stack, oai, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="gpt-4o", input="hi", stream=stream, extra_headers=act("refuse"))
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == "Sorry, not that."
    assert stack.mock_requests() == []


@pytest.mark.parametrize(
    ("action", "error", "status"),
    [
        ("http403", openai.PermissionDeniedError, 403),
        ("http429", openai.RateLimitError, 429),
        ("valueerror", openai.InternalServerError, 500),
    ],
)
def test_responses_errors_in_the_openai_envelope(stack, oai, action, error, status):
    with pytest.raises(error) as caught:
        oai.responses.create(model="gpt-4o", input="hi", extra_headers=act(action))
    assert caught.value.status_code == status
    assert set(caught.value.body) >= {"message", "type", "param", "code"}


def test_responses_success_hook_replaces_the_answer(stack, oai):
    answer = oai.responses.create(model="gpt-4o", input="hi", extra_headers=act("replace"))
    assert answer.output_text == "replaced by a hook"


def test_responses_moderation_refuses_before_the_answer(stack, oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.responses.create(model="gpt-4o", input="hi", stream=True, extra_headers=act("moderate"))
    assert caught.value.body["message"] == "flagged while the upstream worked"


def test_responses_stream_keeps_named_events_and_hooks_see_event_objects(stack, oai):
    stream = oai.responses.create(
        model="gpt-4o", input="stream me", stream=True, extra_headers={"x-mock-chunks": "4"}
    )
    events = list(stream)
    types = [event.type for event in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "[mock:gpt-4o] stream me"
    assert events[-1].response.usage.output_tokens > 0
    seen = [c["type"] for c in calls(stack, hook="event")]
    assert "response.output_text.delta" in seen and "response.completed" in seen


def test_responses_stream_iterator_hook_changes_the_text(stack, oai):
    stream = oai.responses.create(model="gpt-4o", input="quiet", stream=True, extra_headers=act("shout"))
    text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "[MOCK:GPT-4O] QUIET"


def test_responses_upstream_error_reaches_failure_hooks(stack, oai):
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model="gpt-4o", input="hi", extra_headers={"x-mock-status": "429"})
    failure = wait_for(lambda: calls(stack, hook="failure", status=429), "the failure hook")
    assert failure[-1]["kind"] == "UpstreamError"


# ---- Messages API ----


def ask(claude_client, text: str = "hello claude", **extra: Any) -> Any:
    return claude_client.messages.create(
        model="claude-sonnet",
        max_tokens=64,
        messages=[{"role": "user", "content": text}],
        **extra,
    )


def test_messages_buffered_passes_and_metadata_goes_upstream_as_sent(stack, claude, request_id):
    answer = ask(claude, metadata={"user_id": "user-7"}, extra_headers={"x-request-id": request_id})
    assert answer.content[0].text == "[mock:claude-sonnet] hello claude"
    sent = upstream_body(stack)
    assert sent["metadata"] == {"user_id": "user-7"}
    assert "litellm_metadata" not in sent
    (pre,) = calls(stack, hook="pre_call", id=stack.request_id_of(request_id))
    assert pre["call_type"] == "anthropic_messages"
    assert pre["client_metadata"] == {"user_id": "user-7"}
    assert pre["end_user"] == "user-7"
    success = calls(stack, hook="success")[-1]
    assert success["kind"] == "dict" and success["text"] == "[mock:claude-sonnet] hello claude"


def test_messages_on_the_anthropic_mount(stack):
    with anthropic.Anthropic(base_url=stack.url + "/anthropic", api_key=SDK_KEY, max_retries=0) as client:
        answer = ask(client, "via the mount", extra_headers=act("rewrite"))
    assert answer.content[0].text == "[mock:claude-sonnet] rewritten question"


@pytest.mark.parametrize("stream", [False, True])
def test_messages_string_refusal_is_an_anthropic_400(stack, claude, stream):
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(claude, stream=stream, extra_headers=act("refuse"))
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Sorry, not that."},
    }
    assert stack.mock_requests() == []


@pytest.mark.parametrize(
    ("action", "error", "kind"),
    [
        ("http403", anthropic.PermissionDeniedError, "permission_error"),
        ("http429", anthropic.RateLimitError, "rate_limit_error"),
        ("valueerror", anthropic.InternalServerError, "api_error"),
    ],
)
def test_messages_errors_in_anthropics_shape(stack, claude, action, error, kind):
    with pytest.raises(error) as caught:
        ask(claude, extra_headers=act(action))
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == kind


def test_messages_upstream_overloaded_passes_as_it_came(stack, claude):
    with pytest.raises(anthropic.APIStatusError) as caught:
        ask(claude, extra_headers={"x-mock-status": "529"})
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"
    wait_for(lambda: calls(stack, hook="failure", status=529), "the failure hook")


def test_messages_success_hook_edits_the_dict(stack, claude):
    answer = ask(claude, extra_headers=act("replace"))
    assert answer.content[0].text == "replaced by a hook"


def test_messages_stream_frames_reach_iterator_hooks_whole(stack, claude):
    with claude.messages.stream(
        model="claude-sonnet",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream please"}],
        extra_headers={"x-mock-chunks": "4"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "[mock:claude-sonnet] stream please"
    assert final.usage.output_tokens > 0
    frames = [c["starts"] for c in calls(stack, hook="frame")]
    assert frames[0].startswith("event: message_start\n")
    assert all(frame.startswith("event: ") for frame in frames)


def test_messages_stream_iterator_hook_rewrites_frames(stack, claude):
    with claude.messages.stream(
        model="claude-sonnet",
        max_tokens=64,
        messages=[{"role": "user", "content": "quiet"}],
        extra_headers=act("shout"),
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "[MOCK:CLAUDE-SONNET] QUIET"


def test_messages_moderation_refuses_a_stream_before_any_byte(stack, claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(claude, stream=True, extra_headers=act("moderate"))
    assert caught.value.body["error"]["message"] == "flagged while the upstream worked"


def test_messages_usage_reaches_envoys_metadata(stack, claude, request_id):
    ask(claude, "count me", extra_headers={"x-request-id": request_id})
    entry = stack.access_entry(request_id)
    usage = entry["llm_extproc"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["call_type"] == "anthropic_messages"

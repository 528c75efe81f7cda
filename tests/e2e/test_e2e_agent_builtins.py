"""The Responses and Messages APIs with the rest of the product: `enforce_user_param`, the built-in PII and
keyword policies on every text place, routing, guardrail selection, the per-chunk streaming hook and the
logging events, through a real Envoy with the official SDKs."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anthropic
import openai
import pytest
from helpers import json_lines

pytestmark = pytest.mark.e2e

HOOKS = """
import json
from pathlib import Path

from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.integrations.custom_logger import CustomLogger

EVENTS = Path(__file__).with_name("events.jsonl")


def note(**record):
    with EVENTS.open("a") as events:
        events.write(json.dumps(record, default=str) + "\\n")


class Observer(CustomLogger):
    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        if "[shout]" in response:
            return response.upper()
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs["standard_logging_object"]
        note(event="success", call_type=kwargs["call_type"], id=kwargs["litellm_call_id"],
             prompt_tokens=payload["prompt_tokens"], completion_tokens=payload["completion_tokens"],
             user_id=kwargs["litellm_params"]["metadata"].get("user_api_key_end_user_id"))


class Tagger(CustomGuardrail):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        note(event="tagger", guardrails=data["litellm_metadata"].get("guardrails"))
        return data


observer = Observer()
"""
CONFIG = """
model_list:
  - model_name: claude-public
    litellm_params: {model: claude-upstream}
  - model_name: gpt-public
    litellm_params: {model: gpt-upstream}
litellm_settings:
  callbacks: [handlers.pii, handlers.keyword_moderation, agent_hooks.observer]
general_settings:
  enforce_user_param: true
guardrails:
  - guardrail_name: tagger
    litellm_params: {guardrail: agent_hooks.Tagger, mode: pre_call}
extproc:
  routing: true
  handlers:
    handlers.pii:
      options: {entities: {email: mask, credit_card: block}}
    handlers.keyword_moderation:
      options: {block: [forbidden-project]}
"""
KEY = "sk-agent-builtins"


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"agent_hooks.py": HOOKS})
    stack.mock_clear()
    return stack


@pytest.fixture()
def claude(stack):
    with anthropic.Anthropic(base_url=stack.url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture()
def oai(stack):
    with openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


def upstream_body(stack) -> dict[str, Any]:
    record = stack.mock_last()
    assert record is not None, "nothing reached the upstream"
    return json.loads(base64.b64decode(record["body_base64"]))


def events(stack, **match: Any) -> list[dict[str, Any]]:
    return [
        e for e in json_lines(stack.folder / "events.jsonl") if all(e.get(k) == v for k, v in match.items())
    ]


def message(claude_client, content: Any, **extra: Any) -> Any:
    extra.setdefault("metadata", {"user_id": "user-1"})
    return claude_client.messages.create(
        model="claude-public", max_tokens=32, messages=[{"role": "user", "content": content}], **extra
    )


def test_messages_without_metadata_user_id_is_refused_with_litellms_401(stack, claude):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        message(claude, "hi", metadata={})
    assert caught.value.body["error"] == {
        "type": "authentication_error",
        "message": "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True",
    }
    assert stack.mock_requests() == []
    assert message(claude, "hi").content[0].text == "[mock:claude-upstream] hi"


def test_responses_needs_a_top_level_user(stack, oai):
    with pytest.raises(openai.AuthenticationError):
        oai.responses.create(model="gpt-public", input="hi")
    answer = oai.responses.create(model="gpt-public", input="hi", user="u-2")
    assert answer.output_text == "[mock:gpt-upstream] hi"
    assert answer.model == "gpt-public"  # routing renamed it upstream; the client sees its own name
    assert upstream_body(stack)["model"] == "gpt-upstream"


def test_pii_is_masked_in_system_text_blocks_tool_use_input_and_tool_results(stack, claude):
    claude.messages.create(
        model="claude-public",
        max_tokens=32,
        metadata={"user_id": "user-1"},
        system=[{"type": "text", "text": "escalate to ops@example.com"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "mail me at a@example.com"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "b@example.com"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "found c@example.com"}],
            },
        ],
    )
    sent = json.dumps(upstream_body(stack))
    assert "example.com" not in sent
    assert sent.count("<EMAIL>") == 4


def test_pii_is_masked_in_responses_input_items_and_instructions(stack, oai):
    oai.responses.create(
        model="gpt-public",
        user="u-3",
        instructions="reply to boss@example.com",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "I am d@example.com"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"to": "e@example.com"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sent to f@example.com"},
        ],
    )
    sent = upstream_body(stack)
    assert "example.com" not in json.dumps(sent)
    assert json.loads(sent["input"][1]["arguments"]) == {"to": "<EMAIL>"}  # still valid JSON


def test_a_blocked_entity_and_a_keyword_refuse_in_anthropics_shape(stack, claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        message(claude, [{"type": "text", "text": "card 4111 1111 1111 1111"}])
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "credit_card" in caught.value.body["error"]["message"]
    assert stack.mock_requests() == []  # refused before the call
    with pytest.raises(anthropic.BadRequestError) as caught:  # moderation: beside the call, before the answer
        message(claude, "tell me about forbidden-project")
    assert caught.value.body["error"]["type"] == "invalid_request_error"


def test_guardrail_selection_in_messages_metadata_never_goes_upstream(stack, claude):
    message(claude, "hi", metadata={"user_id": "user-1", "guardrails": ["tagger"]})
    assert upstream_body(stack)["metadata"] == {"user_id": "user-1"}  # Anthropic accepts only user_id
    assert events(stack, event="tagger")[-1]["guardrails"] == ["tagger"]


def test_a_routed_messages_stream_shows_the_public_model_and_per_chunk_hooks_edit_text(stack, claude):
    with claude.messages.stream(
        model="claude-public",
        max_tokens=32,
        metadata={"user_id": "user-1"},
        messages=[{"role": "user", "content": "[shout] quietly"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.model == "claude-public"
    assert text.endswith("[SHOUT] QUIETLY")
    assert upstream_body(stack)["model"] == "claude-upstream"


def test_logging_events_carry_the_usage_of_a_messages_stream(stack, claude, request_id):
    with claude.messages.stream(
        model="claude-public",
        max_tokens=32,
        metadata={"user_id": "user-9"},
        messages=[{"role": "user", "content": "count these words"}],
        extra_headers={"x-request-id": request_id},
    ) as stream:
        final = stream.get_final_message()
    envoy_id = stack.request_id_of(request_id)
    deadline = time.monotonic() + 10
    while not (found := events(stack, event="success", id=envoy_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert found, "no success event"
    assert found[-1]["call_type"] == "anthropic_messages"
    assert found[-1]["completion_tokens"] == final.usage.output_tokens
    assert found[-1]["prompt_tokens"] == final.usage.input_tokens
    assert found[-1]["user_id"] == "user-9"

"""LiteLLM's logging kwargs and key fields through a real Envoy: a success logging event gets
`standard_logging_object` and `response_cost` priced from the config's `model_info`, `litellm_params.metadata`
carries the flattened key fields, and a pre-call hook sees the caller's key fields, never a client's copy
of them (while the upstream still gets the client's metadata as sent).
"""

from __future__ import annotations

import hashlib
from typing import Any

import openai
import pytest
from helpers import poll

pytestmark = pytest.mark.e2e

HANDLER = """
import json
from pathlib import Path

from extproc import CustomLogger
from extproc.compat.cost import completion_cost

CALLS = Path(__file__).with_name("calls.jsonl")
KEY_FIELDS = (
    "user_api_key_hash", "user_api_key_user_id", "user_api_key_team_id", "user_api_key_alias",
    "user_api_key_end_user_id", "user_api_key_org_id",
)
PAYLOAD_FIELDS = (
    "id", "call_type", "stream", "status", "response_cost", "prompt_tokens", "completion_tokens",
    "total_tokens", "model", "model_id", "model_group", "error_str", "messages",
)


def record(kind, tag, **fields):
    with CALLS.open("a") as calls:
        calls.write(json.dumps({"kind": kind, "tag": tag, **fields}) + "\\n")


class PayloadLogger(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        metadata = data["metadata"]
        # The key fields are the caller's, whatever the body's metadata said.
        assert metadata["user_api_key_user_id"] == user_api_key_dict.user_id, metadata
        assert metadata["user_api_key_hash"] == user_api_key_dict.api_key, metadata
        assert metadata["user_api_key_team_id"] == user_api_key_dict.team_id, metadata
        record(
            "pre_call",
            data["messages"][-1]["content"],
            call_type=call_type,
            key_fields={k: metadata.get(k) for k in KEY_FIELDS},
            requester_metadata=metadata["requester_metadata"],
        )

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        tag = data["messages"][-1]["content"]
        record("success_hook", tag, cost=completion_cost(completion_response=response))

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        payload = kwargs["standard_logging_object"]
        record(
            "log_success",
            kwargs["messages"][-1]["content"],
            response_cost=kwargs["response_cost"],
            payload={k: payload[k] for k in PAYLOAD_FIELDS},
            times_ordered=payload["startTime"] <= payload["endTime"],
            payload_key_fields={k: payload["metadata"][k] for k in KEY_FIELDS},
            litellm_metadata={k: kwargs["litellm_params"]["metadata"].get(k) for k in KEY_FIELDS},
        )


handler = PayloadLogger()
"""
CONFIG = """
model_list:
  - model_name: team-model
    litellm_params: {model: team-model}
    model_info: {id: dep-team, input_cost_per_token: 0.001, output_cost_per_token: 0.002}
litellm_settings:
  callbacks: payload_logger.handler
extproc:
  auth:
    headers: {user_id: x-user-id, team_id: x-team-id, key_alias: x-key-alias}
    trusted_headers: true
"""
KEY = "sk-payload-e2e"
KEY_HASH = hashlib.sha256(KEY.encode()).hexdigest()
IDENTITY = {"x-user-id": "u-1", "x-team-id": "t-1", "x-key-alias": "ci-key"}
EXPECTED_KEY_FIELDS = {
    "user_api_key_hash": KEY_HASH,
    "user_api_key_user_id": "u-1",
    "user_api_key_team_id": "t-1",
    "user_api_key_alias": "ci-key",
    "user_api_key_end_user_id": "end-7",
    "user_api_key_org_id": None,
}


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"payload_logger.py": HANDLER})
    stack.mock_clear()
    return stack


def recorded(stack, kind: str, tag: str) -> dict[str, Any] | None:
    return next((c for c in stack.hook_calls() if c["kind"] == kind and c["tag"] == tag), None)


def expected_cost(usage: dict[str, Any]) -> float:
    return usage["prompt_tokens"] * 0.001 + usage["completion_tokens"] * 0.002


def test_success_event_gets_the_standard_payload_priced_from_model_info(stack):
    client_metadata = {"user_api_key_user_id": "forged-admin", "user_api_key_hash": "forged", "project": "p"}
    body = {
        "model": "team-model",
        "user": "end-7",
        "messages": [{"role": "user", "content": "buffered-1"}],
        "metadata": client_metadata,
    }
    response = stack.http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}", **IDENTITY}
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, usage
    cost = expected_cost(usage)

    pre_call = recorded(stack, "pre_call", "buffered-1")
    assert pre_call is not None
    assert pre_call["key_fields"] == EXPECTED_KEY_FIELDS
    assert pre_call["requester_metadata"] == {"project": "p"}
    # The upstream gets the client's metadata exactly as sent, none of the sidecar's.
    [upstream] = stack.mock_requests()
    assert upstream["json"]["metadata"] == client_metadata

    hook = recorded(stack, "success_hook", "buffered-1")
    assert hook is not None and hook["cost"] == pytest.approx(cost)

    # The logging event runs in the background after the answer: wait for its record.
    logged = poll(lambda: recorded(stack, "log_success", "buffered-1"), "the success logging event")
    assert logged["response_cost"] == pytest.approx(cost)
    payload = logged["payload"]
    assert payload["response_cost"] == pytest.approx(cost)
    assert {k: payload[k] for k in ("call_type", "stream", "status", "model", "model_id", "model_group")} == {
        "call_type": pre_call["call_type"],  # the name hooks are given
        "stream": False,
        "status": "success",
        "model": "team-model",
        "model_id": "dep-team",
        "model_group": "team-model",
    }
    assert (payload["prompt_tokens"], payload["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert payload["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert payload["error_str"] is None and payload["id"]
    assert payload["messages"] == [{"role": "user", "content": "buffered-1"}]
    assert logged["times_ordered"] is True
    assert logged["payload_key_fields"] == EXPECTED_KEY_FIELDS
    assert logged["litellm_metadata"] == EXPECTED_KEY_FIELDS


def test_a_stream_s_success_event_is_priced_from_its_usage_chunk(stack):
    client = openai.OpenAI(
        base_url=f"{stack.url}/v1", api_key=KEY, default_headers=IDENTITY, max_retries=0, timeout=10
    )
    with client:
        chunks = list(
            client.chat.completions.create(
                model="team-model",
                messages=[{"role": "user", "content": "streamed-1"}],
                user="end-7",
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    [usage_chunk] = [c for c in chunks if c.usage is not None]
    usage = usage_chunk.usage.model_dump()
    logged = poll(lambda: recorded(stack, "log_success", "streamed-1"), "the stream's success logging event")
    assert logged["response_cost"] == pytest.approx(expected_cost(usage))
    payload = logged["payload"]
    assert (payload["stream"], payload["status"], payload["prompt_tokens"]) == (
        True,
        "success",
        usage["prompt_tokens"],
    )
    assert logged["litellm_metadata"] == EXPECTED_KEY_FIELDS

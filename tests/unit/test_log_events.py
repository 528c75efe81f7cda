"""The kwargs of LiteLLM's logging events: `litellm_params.metadata` with the flattened key fields the
sidecar adds, and (success and failure only) `standard_logging_object` with LiteLLM's field names and a
`response_cost` from the config's prices."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from extproc.api.views import wrap
from extproc.compat.cost import use_prices
from extproc.errors import HTTPException
from extproc.hooks.log_events import USER_API_KEY_FIELDS, log_kwargs
from extproc.request import admission, pipeline
from extproc.request.state import RequestState
from extproc.settings import config as config_module

CONFIG = {
    "model_list": [
        {
            "model_name": "team-model",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": "http://llm.internal:8000/v1"},
            "model_info": {"id": "dep-1", "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
        }
    ],
    "extproc": {
        "auth": {
            "headers": {
                "user_id": "x-user-id",
                "team_id": "x-team-id",
                "team_alias": "x-team-alias",
                "key_alias": "x-key-alias",
                "org_id": "x-org-id",
                "user_email": "x-user-email",
                "spend": "x-spend",
                "max_budget": "x-max-budget",
                "metadata": "x-key-metadata",
            }
        }
    },
}
HEADERS = {
    ":path": "/v1/chat/completions",
    "content-type": "application/json",
    "authorization": "Bearer sk-log-events",
    "user-agent": "tests/1.0",
    "x-user-id": "u-1",
    "x-team-id": "t-1",
    "x-team-alias": "team one",
    "x-key-alias": "ci-key",
    "x-org-id": "org-1",
    "x-user-email": "u1@example.com",
    "x-spend": "1.5",
    "x-max-budget": "10",
    "x-key-metadata": '{"tier": "gold"}',
    "x-trace": "abc",
}
KEY_HASH = hashlib.sha256(b"sk-log-events").hexdigest()
START = datetime(2026, 1, 2, 3, 4, 5)
END = START + timedelta(seconds=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pipeline.Pipeline]:
    path: Path = tmp_path_factory.mktemp("log-events") / "config.yaml"
    yield pipeline.build(config_module.parse(CONFIG, path))
    use_prices(())


def request_data(built: pipeline.Pipeline, model: str = "team-model", **body: Any) -> dict[str, Any]:
    request = RequestState(built)
    request.headers = HEADERS
    request.request_id = "req-42"
    data = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "user": "end-user-7",
        "metadata": {"spend_logs_metadata": {"project": "p"}, "tags": ["a", "b"]},
        **body,
    }
    request.user.end_user_id = "end-user-7"
    return admission.add_sidecar_keys(data, request)


def answer(model: str, prompt: int = 10, completion: int = 5) -> Any:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    message = {"role": "assistant", "content": "hello"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return wrap(
        {"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [choice], "usage": usage}
    )


def test_metadata_carries_litellm_s_flattened_key_fields(built):
    metadata = request_data(built)["metadata"]
    assert {key: metadata[key] for key in metadata if key.startswith("user_api_key")} == {
        "user_api_key": KEY_HASH,
        "user_api_key_hash": KEY_HASH,
        "user_api_key_alias": "ci-key",
        "user_api_key_user_id": "u-1",
        "user_api_key_user_email": "u1@example.com",
        "user_api_key_team_id": "t-1",
        "user_api_key_team_alias": "team one",
        "user_api_key_org_id": "org-1",
        "user_api_key_end_user_id": "end-user-7",
        "user_api_key_spend": 1.5,
        "user_api_key_max_budget": 10.0,
        "user_api_key_metadata": {"tier": "gold"},
        "user_api_key_auth_metadata": {"tier": "gold"},
        "user_api_key_team_metadata": {},
        "user_api_key_request_route": "",
    }
    assert metadata["requester_metadata"] == {"spend_logs_metadata": {"project": "p"}, "tags": ["a", "b"]}
    assert metadata["user_agent"] == "tests/1.0"
    assert metadata["endpoint"] == "/v1/chat/completions" and metadata["request_id"] == "req-42"
    assert "authorization" not in metadata["headers"]


def test_the_pre_call_event_gets_litellm_params_metadata_and_no_standard_payload(built):
    data = request_data(built)
    kwargs = log_kwargs(data, "completion")
    assert kwargs["litellm_params"]["metadata"] is data["metadata"]
    assert kwargs["litellm_params"]["metadata"]["user_api_key_user_id"] == "u-1"
    assert "standard_logging_object" not in kwargs and "response_cost" not in kwargs


def test_a_success_gets_the_standard_logging_payload_priced_from_model_info(built):
    data = request_data(built, stream=False)
    response = answer("team-model", prompt=10, completion=5)
    kwargs = log_kwargs(data, "completion", response=response, start_time=START, end_time=END)
    payload = kwargs["standard_logging_object"]
    expected_cost = 10 * 0.001 + 5 * 0.002
    assert kwargs["response_cost"] == payload["response_cost"] == pytest.approx(expected_cost)
    assert payload["hidden_params"]["response_cost"] == pytest.approx(expected_cost)
    assert {k: payload[k] for k in ("id", "trace_id", "call_type", "stream", "status", "error_str")} == {
        "id": "req-42",
        "trace_id": "req-42",
        "call_type": "completion",
        "stream": False,
        "status": "success",
        "error_str": None,
    }
    assert (payload["prompt_tokens"], payload["completion_tokens"], payload["total_tokens"]) == (10, 5, 15)
    assert (payload["startTime"], payload["endTime"]) == (START.timestamp(), END.timestamp())
    assert payload["completionStartTime"] == END.timestamp() and payload["response_time"] == 2.0
    assert (payload["model"], payload["model_group"], payload["model_id"]) == (
        "openai/gpt-4o-mini",
        "team-model",
        "dep-1",
    )
    assert payload["api_base"] == "http://llm.internal:8000/v1" and payload["custom_llm_provider"] == "openai"
    assert payload["messages"] == [{"role": "user", "content": "hi"}]
    assert payload["response"]["choices"][0]["message"]["content"] == "hello"
    assert payload["request_tags"] == ["a", "b"] and payload["end_user"] == "end-user-7"
    assert payload["model_parameters"] == {"temperature": 0.3}
    assert payload["error_information"] is None and payload["response_cost_failure_debug_info"] is None
    metadata = payload["metadata"]
    assert set(USER_API_KEY_FIELDS) <= set(metadata)
    assert (
        metadata["user_api_key_hash"],
        metadata["user_api_key_team_id"],
        metadata["user_api_key_org_id"],
    ) == (
        KEY_HASH,
        "t-1",
        "org-1",
    )
    assert metadata["user_api_key_end_user_id"] == "end-user-7" and metadata["team_alias"] == "team one"
    assert metadata["spend_logs_metadata"] == {"project": "p"}
    assert metadata["requester_custom_headers"]["x-trace"] == "abc"
    assert metadata["applied_guardrails"] == [] and metadata["usage_object"]["total_tokens"] == 15
    assert kwargs["log_event_type"] == "successful_api_call"
    assert (kwargs["start_time"], kwargs["end_time"]) == (START, END)


def test_a_model_without_a_price_logs_no_cost_and_says_why(built):
    data = request_data(built, model="my-private-llm")
    kwargs = log_kwargs(data, "completion", response=answer("my-private-llm"), start_time=START, end_time=END)
    payload = kwargs["standard_logging_object"]
    assert kwargs["response_cost"] is None and payload["response_cost"] is None
    assert payload["response_cost_failure_debug_info"]["error_str"].startswith("This model isn't mapped yet")
    assert payload["model_group"] == "my-private-llm" and payload["model_id"] is None


def test_the_response_s_model_prices_a_request_whose_own_name_has_no_price(built):
    data = request_data(built, model="my-alias")
    response = answer("gpt-4o-2024-08-06", prompt=100, completion=0)
    kwargs = log_kwargs(data, "completion", response=response, start_time=START, end_time=END)
    assert kwargs["response_cost"] == pytest.approx(100 * 2.5e-06)


def test_a_failure_gets_the_payload_with_its_error_and_no_cost(built):
    data = request_data(built)
    error = HTTPException(status_code=429, detail="slow down")
    kwargs = log_kwargs(data, "completion", error, start_time=START, end_time=END)
    payload = kwargs["standard_logging_object"]
    assert (payload["status"], payload["response_cost"], payload["response"]) == ("failure", 0.0, None)
    assert payload["error_str"] == str(error)
    info = payload["error_information"]
    assert (info["error_code"], info["error_class"], info["error_message"]) == (
        "429",
        "HTTPException",
        str(error),
    )
    assert "HTTPException" in kwargs["traceback_exception"] == info["traceback"]
    assert (kwargs["exception"], kwargs["status_code"], kwargs["log_event_type"]) == (
        error,
        429,
        "failed_api_call",
    )

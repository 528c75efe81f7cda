"""Response-side hooks through a real Envoy: moderation, post-call success and failure, logging events,
the phases the sidecar asks for and the dynamic metadata it leaves in Envoy's access log.

Every request goes client -> Envoy -> sidecar -> mock upstream. The handlers are written as users write
them; they do what the request's `x-*-action` headers say and record what they saw as JSON lines in
`calls.jsonl` next to the config (read back with `stack.hook_calls()`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers import SEED_MODERATION, poll
from helpers import ext_proc_phases as phases

pytestmark = pytest.mark.e2e

# ---- handlers ----

TIMED_MODERATION = '''
import asyncio
import json
import time
from pathlib import Path

from extproc import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


class TimedModeration(CustomLogger):
    """Takes 300 ms when asked (`x-timed: 1`) and records when it started and ended."""

    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if data["metadata"]["headers"].get("x-timed") != "1":
            return
        start = time.time()
        await asyncio.sleep(0.3)
        end = time.time()
        with CALLS.open("a") as calls:
            record = {"hook": "moderation", "request_id": data["litellm_call_id"], "start": start, "end": end}
            calls.write(json.dumps(record) + "\\n")


handler = TimedModeration()
'''

PRE_CALL_ONLY = """
from extproc import CustomLogger


class PreCallOnly(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["temperature"] = 0.25
        return data


handler = PreCallOnly()
"""

RESPONSE_HOOKS = """
import json
from datetime import datetime
from pathlib import Path

from extproc import CustomLogger, HTTPException

CALLS = Path(__file__).with_name("calls.jsonl")


def record(**fields):
    with CALLS.open("a") as calls:
        calls.write(json.dumps(fields, default=repr) + "\\n")


def headers_of(data):
    metadata = data.get("metadata") if isinstance(data, dict) else None
    headers = metadata.get("headers") if isinstance(metadata, dict) else None
    return headers if isinstance(headers, dict) else {}


def log_headers(kwargs):
    return headers_of(kwargs.get("litellm_params") or {})


class ResponseHooks(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        action = headers_of(data).get("x-hook-action")
        if action == "http403":
            raise HTTPException(status_code=403, detail="not for you")
        if action == "model":
            data["model"] = "rewritten-model"
        return None

    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if headers_of(data).get("x-moderation-action") == "block":
            raise HTTPException(status_code=400, detail={"error": "flagged by moderation"})

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        action = headers_of(data).get("x-success-action")
        if action == "chat-in-place":
            response.choices[0].message.content += " [checked]"
        elif action == "text-in-place":
            response.choices[0].text += " [checked]"
        elif action == "chat-return":
            return {
                "id": response.id,
                "object": "chat.completion",
                "created": response.created,
                "model": response.model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "a replaced answer ☃"},
                    }
                ],
            }
        elif action == "text-return":
            return {
                "id": response.id,
                "object": "text_completion",
                "created": response.created,
                "model": response.model,
                "choices": [{"index": 0, "text": "a replaced text", "logprobs": None, "finish_reason": "stop"}],
            }
        elif action == "raise":
            raise HTTPException(status_code=422, detail="bad answer")
        return None

    async def async_post_call_failure_hook(
        self, request_data, original_exception, user_api_key_dict, traceback_str=None
    ):
        exc = original_exception
        record(
            hook="failure",
            request_id=request_data.get("litellm_call_id"),
            keys=sorted(request_data),
            exception=type(exc).__name__,
            status_code=getattr(exc, "status_code", None),
            message=getattr(exc, "message", None),
            detail=getattr(exc, "detail", None),
            text=str(exc),
            user_type=type(user_api_key_dict).__name__,
            api_key=getattr(user_api_key_dict, "api_key", None),
        )
        action = headers_of(request_data).get("x-failure-action")
        if action == "replace":
            raise HTTPException(status_code=503, detail="replaced")
        if action == "crash":
            raise RuntimeError("the failure hook itself broke")

    async def async_log_pre_api_call(self, model, messages, kwargs):
        record(hook="log_pre", request_id=kwargs.get("litellm_call_id"), model=model, messages=messages)
        if log_headers(kwargs).get("x-log-action") == "raise":
            raise RuntimeError("log_pre_api_call broke")

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        choice = response_obj.choices[0]
        content = choice.message.content if choice.message is not None else choice.text
        record(
            hook="log_success",
            request_id=kwargs.get("litellm_call_id"),
            content=content,
            datetimes=isinstance(start_time, datetime) and isinstance(end_time, datetime),
            ordered=end_time >= start_time,
        )
        if log_headers(kwargs).get("x-log-action") == "raise":
            raise RuntimeError("log_success_event broke")

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        exc = kwargs.get("exception")
        record(
            hook="log_failure",
            request_id=kwargs.get("litellm_call_id"),
            status_code=kwargs.get("status_code"),
            exception=type(exc).__name__,
            text=str(exc),
            datetimes=isinstance(start_time, datetime) and isinstance(end_time, datetime),
            ordered=end_time >= start_time,
        )


handler = ResponseHooks()
"""

MODERATION_CONFIG = (
    "litellm_settings:\n  callbacks: [seed_moderation.proxy_handler_instance, timed_moderation.handler]\n"
)
MODERATION_FILES = {"seed_moderation.py": SEED_MODERATION, "timed_moderation.py": TIMED_MODERATION}
PRE_CALL_CONFIG = "litellm_settings:\n  callbacks: pre_call_only.handler\n"
MAIN_CONFIG = "litellm_settings:\n  callbacks: response_hooks.handler\n"
ENFORCE_CONFIG = MAIN_CONFIG + "general_settings:\n  enforce_user_param: true\n"
API_KEY = "sk-e2e-response-hooks"
VIOLATION = "Violated content safety policy"
POLL_DEADLINE_S = 5.0


@pytest.fixture()
def moderation_stack(e2e_stack):
    stack = e2e_stack(MODERATION_CONFIG, MODERATION_FILES)
    stack.mock_clear()
    return stack


@pytest.fixture()
def pre_call_stack(e2e_stack):
    stack = e2e_stack(PRE_CALL_CONFIG, {"pre_call_only.py": PRE_CALL_ONLY})
    stack.mock_clear()
    return stack


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(MAIN_CONFIG, {"response_hooks.py": RESPONSE_HOOKS})
    stack.mock_clear()
    return stack


@pytest.fixture()
def enforce_stack(e2e_stack):
    stack = e2e_stack(ENFORCE_CONFIG, {"response_hooks.py": RESPONSE_HOOKS})
    stack.mock_clear()
    return stack


# ---- helpers ----
def chat(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def completion(prompt: str = "say hi", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, **extra}


def headers(request_id: str, **actions: str) -> dict[str, str]:
    """`x-request-id` plus `x-<name>` action headers (underscores become dashes)."""
    extra = {f"x-{name.replace('_', '-')}": value for name, value in actions.items()}
    return {"x-request-id": request_id, "authorization": f"Bearer {API_KEY}", **extra}


def calls(stack, request_id: str, hook: str) -> list[dict[str, Any]]:
    """A hook's records for the request the client sent as `request_id` (hooks see Envoy's own id)."""
    envoy_id = stack.request_id_of(request_id)
    return [c for c in stack.hook_calls() if c.get("hook") == hook and c.get("request_id") == envoy_id]


def content_of(response) -> str:
    return response.json()["choices"][0]["message"]["content"]


def streamed_pieces(text: str) -> list[str]:
    """The content pieces of a chat SSE body."""
    pieces = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            choices = json.loads(line[len("data: ") :])["choices"]
            if choices and choices[0]["delta"].get("content"):
                pieces.append(choices[0]["delta"]["content"])
    return pieces


# ---- 1. the seed's moderation example ----
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_seed_moderation_refuses(moderation_stack, assert_error, request_id, stream):
    body = chat("hello world", stream=stream)
    response = moderation_stack.http.post(
        "/v1/chat/completions", json=body, headers={"x-request-id": request_id}
    )
    error = assert_error(response, 400, message=VIOLATION, kind="invalid_request_error")
    assert error["provider_specific_fields"] == {"error": VIOLATION}
    assert "[mock:" not in response.text
    assert not response.text.startswith("data:")
    assert moderation_stack.access_entry(request_id)["status"] == 400


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_seed_moderation_is_case_sensitive(moderation_stack, stream):
    response = moderation_stack.http.post("/v1/chat/completions", json=chat("Hello world", stream=stream))
    assert response.status_code == 200, response.text
    if not stream:
        assert content_of(response) == "[mock:gpt-4o] Hello world"
    else:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "".join(streamed_pieces(response.text)) == "[mock:gpt-4o] Hello world"


# ---- 2. moderation runs beside the upstream call ----
def test_moderation_runs_in_parallel_with_upstream(moderation_stack, request_id):
    response = moderation_stack.http.post(
        "/v1/chat/completions",
        json=chat("in parallel"),
        headers={"x-request-id": request_id, "x-timed": "1", "x-mock-delay-ms": "300"},
    )
    assert response.status_code == 200, response.text
    [hook] = calls(moderation_stack, request_id, "moderation")
    [mock] = moderation_stack.mock_requests()
    assert mock["headers"]["x-request-id"] == moderation_stack.request_id_of(request_id)
    # Sequential in either order would break one of these: the hook started before the upstream
    # answered, and the upstream had the request before the hook ended.
    assert hook["start"] < mock["answered_at"], (hook, mock["received_at"], mock["answered_at"])
    assert mock["received_at"] < hook["end"], (hook, mock["received_at"], mock["answered_at"])


# ---- 3. post-call success hooks ----
def assert_length_matches(response) -> None:
    assert int(response.headers["content-length"]) == len(response.content)


def test_success_hook_edits_chat_in_place(stack, request_id):
    hdrs = headers(request_id, success_action="chat-in-place")
    response = stack.http.post("/v1/chat/completions", json=chat("check me"), headers=hdrs)
    assert response.status_code == 200, response.text
    assert content_of(response) == "[mock:gpt-4o] check me [checked]"
    assert response.json()["usage"]["total_tokens"] > 0  # the rest of the response is kept
    assert_length_matches(response)
    assert stack.access_entry(request_id)["llm_extproc"]["verdict"] == "modified"


def test_success_hook_replaces_chat_by_return_value(stack, request_id):
    hdrs = headers(request_id, success_action="chat-return")
    response = stack.http.post("/v1/chat/completions", json=chat("replace me"), headers=hdrs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "a replaced answer ☃"},
        }
    ]
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["id"].startswith("chatcmpl-mock-")
    assert "usage" not in body
    assert_length_matches(response)


def test_success_hook_edits_text_completion_in_place(stack, request_id):
    hdrs = headers(request_id, success_action="text-in-place")
    response = stack.http.post("/v1/completions", json=completion("check text"), headers=hdrs)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "[mock:gpt-3.5-turbo-instruct] check text [checked]"
    assert_length_matches(response)


def test_success_hook_replaces_text_completion_by_return_value(stack, request_id):
    hdrs = headers(request_id, success_action="text-return")
    response = stack.http.post("/v1/completions", json=completion("replace text"), headers=hdrs)
    assert response.status_code == 200, response.text
    assert response.json()["choices"] == [
        {"index": 0, "text": "a replaced text", "logprobs": None, "finish_reason": "stop"}
    ]
    assert_length_matches(response)


def test_success_hook_untouched_passes_as_is(stack, request_id):
    response = stack.http.post("/v1/chat/completions", json=chat("untouched"), headers=headers(request_id))
    assert response.status_code == 200, response.text
    assert content_of(response) == "[mock:gpt-4o] untouched"
    assert_length_matches(response)
    assert stack.access_entry(request_id)["llm_extproc"]["verdict"] == "pass"


def test_success_hook_exception_is_the_clients_error(stack, assert_error, request_id):
    hdrs = headers(request_id, success_action="raise")
    response = stack.http.post("/v1/chat/completions", json=chat("raise"), headers=hdrs)
    error = assert_error(response, 422, message="bad answer", kind="invalid_request_error")
    assert "provider_specific_fields" not in error
    assert "[mock:" not in response.text
    assert len(stack.mock_requests()) == 1  # the upstream did answer; its answer was replaced


# ---- 4. post-call failure hooks: what they see ----
def failure_call(stack, request_id: str) -> dict[str, Any]:
    [call] = calls(stack, request_id, "failure")
    assert call["user_type"] == "UserAPIKeyAuth"
    assert "litellm_call_id" in call["keys"]
    assert isinstance(call["status_code"], int)
    return call


@pytest.mark.parametrize("status", [500, 429])
def test_failure_hook_sees_upstream_error(stack, request_id, status):
    hdrs = {**headers(request_id), "x-mock-status": str(status)}
    response = stack.http.post("/v1/chat/completions", json=chat("upstream fails"), headers=hdrs)
    assert response.status_code == status
    # No hook replaced it: the upstream's error passes as it came.
    assert response.json()["error"]["message"] == f"mock upstream error {status}"
    call = failure_call(stack, request_id)
    assert call["status_code"] == status
    assert call["message"] == f"mock upstream error {status}"
    assert call["api_key"] == hashlib.sha256(API_KEY.encode()).hexdigest()
    assert {"model", "messages", "metadata"} <= set(call["keys"])


def test_failure_hook_sees_pre_call_refusal(stack, assert_error, request_id):
    hdrs = headers(request_id, hook_action="http403")
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    assert_error(response, 403, message="not for you", kind="permission_error")
    call = failure_call(stack, request_id)
    assert (call["exception"], call["status_code"], call["detail"]) == ("HTTPException", 403, "not for you")
    assert stack.mock_requests() == []


def test_failure_hook_sees_moderation_refusal(stack, assert_error, request_id):
    hdrs = headers(request_id, moderation_action="block")
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    error = assert_error(response, 400, message="flagged by moderation")
    assert error["provider_specific_fields"] == {"error": "flagged by moderation"}
    call = failure_call(stack, request_id)
    assert call["status_code"] == 400
    assert call["detail"] == {"error": "flagged by moderation"}


def test_failure_hook_sees_success_hook_exception(stack, assert_error, request_id):
    hdrs = headers(request_id, success_action="raise")
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    assert_error(response, 422, message="bad answer")
    call = failure_call(stack, request_id)
    assert (call["status_code"], call["detail"]) == (422, "bad answer")


MALFORMED = b'{"model": "gpt-4o", "messages": ['
ENFORCE_MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"


def new_failure_calls(stack, send: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Send a request; the failure hook calls it caused (they run before the reply, tests run one by one)."""
    before = len(stack.hook_calls())
    response = send()
    return response, [c for c in stack.hook_calls()[before:] if c["hook"] == "failure"]


def post_malformed(stack, request_id: str):
    hdrs = {**headers(request_id), "content-type": "application/json"}
    return stack.http.post("/v1/chat/completions", content=MALFORMED, headers=hdrs)


def test_failure_hook_sees_malformed_json(stack, assert_error, request_id):
    response, [call] = new_failure_calls(stack, lambda: post_malformed(stack, request_id))
    assert_error(response, 400, param="request_body")
    assert (call["exception"], call["status_code"]) == ("ProxyException", 400)
    assert call["message"].startswith("Invalid JSON payload")
    assert call["message"] == response.json()["error"]["message"]
    assert call["user_type"] == "UserAPIKeyAuth"
    assert stack.mock_requests() == []


def test_failure_hook_sees_enforce_user_param(enforce_stack, assert_error, request_id):
    def send():
        return enforce_stack.http.post("/v1/chat/completions", json=chat(), headers=headers(request_id))

    response, [call] = new_failure_calls(enforce_stack, send)
    assert_error(response, 401, message=ENFORCE_MESSAGE, kind="auth_error")
    assert (call["exception"], call["status_code"], call["message"]) == (
        "ProxyException",
        401,
        ENFORCE_MESSAGE,
    )
    assert call["user_type"] == "UserAPIKeyAuth"
    assert enforce_stack.mock_requests() == []


def test_failure_hook_request_data_has_call_id_for_malformed_json(stack, request_id):
    response = post_malformed(stack, request_id)
    assert response.status_code == 400
    failure_call(stack, request_id)


def test_failure_hook_request_data_has_call_id_for_enforce_user_param(enforce_stack, request_id):
    response = enforce_stack.http.post("/v1/chat/completions", json=chat(), headers=headers(request_id))
    assert response.status_code == 401
    failure_call(enforce_stack, request_id)


# ---- 5. a failure hook replacing the error ----
def test_failure_hook_replaces_upstream_error(stack, assert_error, request_id):
    hdrs = {**headers(request_id, failure_action="replace"), "x-mock-status": "500"}
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    assert_error(response, 503, message="replaced", kind="internal_server_error")
    assert "mock upstream error" not in response.text
    assert failure_call(stack, request_id)["status_code"] == 500


def test_failure_hook_that_crashes_changes_nothing(stack, request_id):
    hdrs = {**headers(request_id, failure_action="crash"), "x-mock-status": "500"}
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "mock upstream error 500"
    assert failure_call(stack, request_id)["status_code"] == 500
    poll(lambda: "the failure hook itself broke" in stack.sidecar_log(), "the crash in the sidecar log")


def test_failure_hook_replaces_sidecar_error(stack, assert_error, request_id):
    hdrs = headers(request_id, hook_action="http403", failure_action="replace")
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=hdrs)
    assert_error(response, 503, message="replaced")


# ---- 6. logging events ----
def test_logging_events_on_success(stack, request_id):
    response = stack.http.post("/v1/chat/completions", json=chat("log me"), headers=headers(request_id))
    assert response.status_code == 200, response.text
    [pre] = poll(lambda: calls(stack, request_id, "log_pre"), "async_log_pre_api_call")
    assert pre["model"] == "gpt-4o"
    assert pre["messages"] == [{"role": "user", "content": "log me"}]
    [success] = poll(lambda: calls(stack, request_id, "log_success"), "async_log_success_event")
    assert success["content"] == "[mock:gpt-4o] log me" == content_of(response)
    assert success["datetimes"] is True
    assert success["ordered"] is True
    assert calls(stack, request_id, "log_failure") == []


def test_logging_events_on_text_completion(stack, request_id):
    response = stack.http.post("/v1/completions", json=completion("log text"), headers=headers(request_id))
    assert response.status_code == 200, response.text
    [success] = poll(lambda: calls(stack, request_id, "log_success"), "async_log_success_event")
    assert success["content"] == "[mock:gpt-3.5-turbo-instruct] log text"


def test_logging_failure_event_on_upstream_500(stack, request_id):
    hdrs = {**headers(request_id), "x-mock-status": "500"}
    response = stack.http.post("/v1/chat/completions", json=chat("fail me"), headers=hdrs)
    assert response.status_code == 500
    [failure] = poll(lambda: calls(stack, request_id, "log_failure"), "async_log_failure_event")
    assert failure["status_code"] == 500
    assert failure["text"] == "mock upstream error 500"
    assert failure["datetimes"] is True
    assert failure["ordered"] is True
    assert calls(stack, request_id, "log_success") == []


def test_logging_hooks_that_raise_do_not_affect_the_client(stack, request_id):
    hdrs = headers(request_id, log_action="raise")
    response = stack.http.post("/v1/chat/completions", json=chat("log and raise"), headers=hdrs)
    assert response.status_code == 200, response.text
    assert content_of(response) == "[mock:gpt-4o] log and raise"
    poll(lambda: calls(stack, request_id, "log_success"), "async_log_success_event")
    poll(lambda: "log_success_event broke" in stack.sidecar_log(), "the raise in the sidecar log")
    poll(lambda: "log_pre_api_call broke" in stack.sidecar_log(), "the other raise in the sidecar log")


# ---- 7. phase economy ----
def msgs_sent(stack) -> int:
    return stack.stat("http.llm.ext_proc.stream_msgs_sent")


def test_pre_call_only_gets_request_phases(pre_call_stack, request_id):
    before = msgs_sent(pre_call_stack)
    response = pre_call_stack.http.post(
        "/v1/chat/completions", json=chat("phases"), headers={"x-request-id": request_id}
    )
    assert response.status_code == 200, response.text
    assert pre_call_stack.mock_last()["json"]["temperature"] == 0.25  # the hook did run
    assert phases(pre_call_stack.access_entry(request_id)) == {"rb": 1}  # one message (the default)
    assert msgs_sent(pre_call_stack) - before == 1


def test_success_hook_gets_response_phases(stack, request_id):
    before = msgs_sent(stack)
    response = stack.http.post("/v1/chat/completions", json=chat("phases"), headers=headers(request_id))
    assert response.status_code == 200, response.text
    assert phases(stack.access_entry(request_id)) == {"rb": 1, "sh": 1, "sb": 1}
    assert msgs_sent(stack) - before == 3


def test_moderation_only_gets_response_headers_not_body(moderation_stack, request_id):
    before = msgs_sent(moderation_stack)
    response = moderation_stack.http.post(
        "/v1/chat/completions", json=chat("phases"), headers={"x-request-id": request_id}
    )
    assert response.status_code == 200, response.text
    assert phases(moderation_stack.access_entry(request_id)) == {"rb": 1, "sh": 1}
    assert msgs_sent(moderation_stack) - before == 2


# ---- 8. dynamic metadata in Envoy's access log ----
def test_access_log_metadata_with_model_rewrite_and_usage(stack, request_id):
    hdrs = headers(request_id, hook_action="model")
    response = stack.http.post("/v1/chat/completions", json=chat("count my tokens please"), headers=hdrs)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["total_tokens"] > 0
    assert stack.mock_last()["json"]["model"] == "rewritten-model"
    metadata = stack.access_entry(request_id)["llm_extproc"]
    assert metadata["call_type"] == "completion"
    assert metadata["model"] == "gpt-4o"
    assert metadata["upstream_model"] == "rewritten-model"
    assert metadata["verdict"] == "modified"
    assert metadata["upstream_status"] == 200
    assert metadata["api_key_hash"] == hashlib.sha256(API_KEY.encode()).hexdigest()
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert metadata[field] == usage[field], (field, metadata, usage)


def test_envoy_reports_the_usage_when_no_hook_reads_the_answer(pre_call_stack, request_id):
    """Only a pre-call hook: the sidecar never sees the answer, and Envoy's json_to_metadata filter puts
    its token counts where the rate-limit recipe reads them (OpenAI's names; Messages' too)."""
    response = pre_call_stack.http.post(
        "/v1/chat/completions", json=chat("count me"), headers={"x-request-id": request_id}
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    metadata = pre_call_stack.access_entry(request_id)["llm_extproc"]
    assert "upstream_status" not in metadata  # the sidecar did not read the answer...
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert metadata[field] == usage[field], (field, metadata, usage)  # ...Envoy did
    body = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "count me"}]}
    response = pre_call_stack.http.post("/v1/messages", json=body, headers={"x-request-id": request_id + "-m"})
    assert response.status_code == 200, response.text
    metadata = pre_call_stack.access_entry(request_id + "-m")["llm_extproc"]
    assert metadata["prompt_tokens"] == response.json()["usage"]["input_tokens"]
    assert metadata["completion_tokens"] == response.json()["usage"]["output_tokens"]


def _stream_events(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize(
    ("path", "body", "counts"),
    [
        (
            "/v1/chat/completions",
            chat("count my stream", stream=True, stream_options={"include_usage": True}),
            lambda events: events[-1]["usage"],
        ),
        (
            "/v1/messages",
            {"model": "claude", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            lambda events: {
                "prompt_tokens": events[0]["message"]["usage"]["input_tokens"],
                "completion_tokens": next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"],
            },
        ),
        (
            "/v1/responses",
            {"model": "gpt-4o", "input": "count my stream", "stream": True},
            lambda events: {
                {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}.get(k, k): v
                for k, v in events[-1]["response"]["usage"].items()
                if k in ("input_tokens", "output_tokens", "total_tokens")
            },
        ),
    ],
    ids=["chat", "messages", "responses"],
)
def test_envoy_reports_a_streams_usage_when_no_hook_reads_it(pre_call_stack, request_id, path, body, counts):
    """Only a pre-call hook: Envoy's sse_to_metadata filter puts a stream's token counts (from its last
    chunk, or the Messages and Responses APIs' events) where the rate-limit recipe reads them."""
    response = pre_call_stack.http.post(path, json=body, headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    expected = counts(_stream_events(response))
    assert expected and all(isinstance(v, int) and v > 0 for v in expected.values()), expected
    metadata = pre_call_stack.access_entry(request_id)["llm_extproc"]
    assert "upstream_status" not in metadata  # the sidecar did not read the stream: Envoy did
    assert {k: metadata.get(k) for k in expected} == expected, metadata


def test_access_log_metadata_of_a_text_completion(stack, request_id):
    response = stack.http.post("/v1/completions", json=completion("two words"), headers=headers(request_id))
    assert response.status_code == 200, response.text
    metadata = stack.access_entry(request_id)["llm_extproc"]
    assert metadata["call_type"] == "text_completion"
    assert (metadata["model"], metadata["upstream_model"]) == ("gpt-3.5-turbo-instruct",) * 2
    assert metadata["verdict"] == "pass"
    assert metadata["total_tokens"] == response.json()["usage"]["total_tokens"]


def test_access_log_metadata_of_a_refusal(stack, request_id):
    response = stack.http.post(
        "/v1/chat/completions", json=chat(), headers=headers(request_id, hook_action="http403")
    )
    assert response.status_code == 403
    metadata = stack.access_entry(request_id)["llm_extproc"]
    assert metadata["verdict"] == "error"
    assert metadata["status"] == 403
    assert "total_tokens" not in metadata

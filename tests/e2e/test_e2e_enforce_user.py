"""`general_settings.enforce_user_param: true` through a real Envoy, on every endpoint it covers."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e

RECORDER = """
import json
from pathlib import Path

from extproc import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


class Recorder(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        with CALLS.open("a") as calls:
            calls.write(json.dumps({"request_id": data["litellm_call_id"], "call_type": call_type}) + "\\n")


recorder = Recorder()
"""
CONFIG = """
litellm_settings:
  callbacks: [recorder.recorder]
general_settings:
  enforce_user_param: true
"""
MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"
BOUNDARY = "enforceBoundary42"

JSON_ENDPOINTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        "acompletion",
    ),
    ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}, "atext_completion"),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, "aembedding"),
    ("/v1/images/generations", {"model": "dall-e-3", "prompt": "a cat"}, "aimage_generation"),
    ("/v1/moderations", {"model": "omni-moderation-latest", "input": "hi"}, "amoderation"),
]


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"recorder.py": RECORDER})
    stack.mock_clear()
    return stack


def audio_form(user: str | None) -> bytes:
    delimiter = f"--{BOUNDARY}\r\n".encode()
    parts = [
        delimiter + b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF....WAVEdata\r\n",
        delimiter + b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n',
    ]
    if user is not None:
        parts.append(
            delimiter + b'Content-Disposition: form-data; name="user"\r\n\r\n' + user.encode() + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(stack, path: str, body: dict[str, Any] | bytes, request_id: str):
    headers = {"x-request-id": request_id}
    if isinstance(body, bytes):
        headers["content-type"] = f"multipart/form-data; boundary={BOUNDARY}"
        return stack.http.post(path, content=body, headers=headers)
    return stack.http.post(path, json=body, headers=headers)


def hooked(stack, request_id: str) -> list[dict[str, Any]]:
    envoy_id = stack.request_id_of(request_id)  # hooks see Envoy's id, not the client's
    return [
        {**call, "request_id": request_id} for call in stack.hook_calls() if call["request_id"] == envoy_id
    ]


CASES = [pytest.param(path, body, call_type, id=path) for path, body, call_type in JSON_ENDPOINTS]
CASES.append(
    pytest.param("/v1/audio/transcriptions", None, "atranscription", id="/v1/audio/transcriptions")
)


@pytest.mark.parametrize(("path", "body", "call_type"), CASES)
def test_without_user_is_401_before_any_hook(stack, assert_error, request_id, path, body, call_type):
    payload = audio_form(None) if body is None else body
    response = post(stack, path, payload, request_id)
    assert_error(response, 401, message=MESSAGE, kind="auth_error", param=None)
    assert hooked(stack, request_id) == []
    assert stack.mock_requests() == []


@pytest.mark.parametrize(("path", "body", "call_type"), CASES)
def test_empty_user_passes(stack, request_id, path, body, call_type):
    payload = audio_form("") if body is None else {**body, "user": ""}
    response = post(stack, path, payload, request_id)
    assert response.status_code == 200, response.text
    assert hooked(stack, request_id) == [{"request_id": request_id, "call_type": call_type}]
    record = stack.mock_last()
    assert record["path"] == path
    if body is None:
        assert record["body"].encode() == payload
    else:
        assert record["json"] == payload


def test_user_in_metadata_does_not_count(stack, assert_error, request_id):
    body = {**JSON_ENDPOINTS[0][1], "metadata": {"user": "alice"}}
    response = post(stack, "/v1/chat/completions", body, request_id)
    assert_error(response, 401, message=MESSAGE, kind="auth_error")
    assert hooked(stack, request_id) == []
    assert stack.mock_requests() == []


def test_streaming_request_without_user_is_401(stack, assert_error, request_id):
    body = {**JSON_ENDPOINTS[0][1], "stream": True}
    response = post(stack, "/v1/chat/completions", body, request_id)
    assert_error(response, 401, message=MESSAGE, kind="auth_error")
    assert stack.mock_requests() == []

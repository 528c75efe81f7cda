"""`extproc.max_request_bytes` and `hook_timeout_ms` through a real Envoy: OpenAI envelopes, nothing upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.e2e

HANDLER = """
import asyncio

from extproc import CustomLogger


class Tagger(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        await asyncio.sleep(int(data["metadata"]["headers"].get("x-sleep-ms", "0")) / 1000)
        data["model"] = "tagged"
        return data


tagger = Tagger()
"""
CONFIG = """
litellm_settings:
  callbacks: tagger.tagger
extproc:
  max_request_bytes: 4096
  hook_timeout_ms: 300
"""
TOO_LARGE = "Request body too large: the limit is 4096 bytes"


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"tagger.py": HANDLER})
    stack.mock_clear()
    return stack


def chat_of_size(size: int) -> bytes:
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": ""}]}
    filler = size - len(json.dumps(base))
    base["messages"][0]["content"] = "x" * filler
    body = json.dumps(base).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("size", [4000, 4096])
def test_body_up_to_the_limit_passes(stack, size, chunked):
    body = chat_of_size(size)
    content = iter([body[:1000], body[1000:]]) if chunked else body
    response = stack.http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert stack.mock_last()["json"] == {**json.loads(body), "model": "tagged"}


@pytest.mark.parametrize("size", [4097, 20_000, 200_000])
def test_body_over_the_limit_is_413(stack, assert_error, size):
    body = chat_of_size(size)
    response = stack.http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=5
    )
    assert_error(response, 413, message=TOO_LARGE, kind="invalid_request_error", param="request_body")
    assert stack.mock_requests() == []


@pytest.mark.parametrize("size", [4097, 200_000])
def test_chunked_body_over_the_limit_is_413(stack, assert_error, size):
    body = chat_of_size(size)

    def parts() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = stack.http.post(
        "/v1/chat/completions", content=parts(), headers={"content-type": "application/json"}, timeout=5
    )
    assert_error(response, 413, message=TOO_LARGE, kind="invalid_request_error", param="request_body")
    assert stack.mock_requests() == []


def test_slow_hook_times_out_with_an_envelope(stack, assert_error):
    body = chat_of_size(200)
    headers = {"content-type": "application/json", "x-sleep-ms": "2000"}
    response = stack.http.post("/v1/chat/completions", content=body, headers=headers, timeout=5)
    error = assert_error(response, 504, kind="internal_server_error")
    assert "did not finish within 300 ms" in error["message"], error
    assert response.elapsed.total_seconds() < 1.5
    assert stack.mock_requests() == []


def test_hook_within_its_time_passes(stack):
    headers = {"content-type": "application/json", "x-sleep-ms": "100"}
    response = stack.http.post("/v1/chat/completions", content=chat_of_size(200), headers=headers)
    assert response.status_code == 200, response.text
    assert stack.mock_last()["json"]["model"] == "tagged"

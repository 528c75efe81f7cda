"""Pre-call hooks through a real Envoy: refusals, exceptions, body rewrites, multipart, routing, bad bodies.

One stack serves the whole module: its handler does what the request's `x-hook-action` header says
and records every call (with the request id) in `calls.jsonl` next to the config.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

pytestmark = pytest.mark.e2e

HANDLER = '''
import json
from pathlib import Path

from extproc import CustomLogger, HTTPException

CALLS = Path(__file__).with_name("calls.jsonl")
LONG_SYSTEM = "You are a careful assistant. " * 2000


class TeapotError(Exception):
    """Shaped like fastapi's HTTPException, but not ours."""

    def __init__(self, status_code, detail):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class Scripted(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        action = data["metadata"]["headers"].get("x-hook-action", "none")
        with CALLS.open("a") as calls:
            record = {"request_id": data["litellm_call_id"], "call_type": call_type, "action": action}
            calls.write(json.dumps(record) + "\\n")
        if action == "refuse":
            return "Sorry, I can't help with that."
        if action == "http403":
            raise HTTPException(status_code=403, detail={"error": "nope"})
        if action == "foreign":
            raise TeapotError(418, "I am a teapot")
        if action == "valueerror":
            raise ValueError("boom")
        if action == "http429":
            raise HTTPException(status_code=429, detail="slow down", headers={"Retry-After": "7"})
        if action == "unencodable":
            data["temperature"] = object()
            return data
        if action == "grow":
            data["messages"].insert(0, {"role": "system", "content": LONG_SYSTEM})
            return data
        if action == "shrink":
            return {"model": data["model"], "messages": data["messages"][-1:]}
        if action == "model":
            data["model"] = "rewritten-model"
        return None


handler = Scripted()
'''
CONFIG = "litellm_settings:\n  callbacks: scripted_hooks.handler\n"
REFUSAL = "Sorry, I can't help with that."
LONG_SYSTEM = "You are a careful assistant. " * 2000


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG, {"scripted_hooks.py": HANDLER})
    stack.mock_clear()
    return stack


def chat(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def hooked(stack, request_id: str) -> list[dict[str, Any]]:
    envoy_id = stack.request_id_of(request_id)  # hooks see Envoy's id, not the client's
    return [
        {**call, "request_id": request_id} for call in stack.hook_calls() if call["request_id"] == envoy_id
    ]


def received_body(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["body_base64"])


def assert_length_matches(record: dict[str, Any]) -> None:
    """A rewritten body goes upstream with a content-length that matches it (never a stale one)."""
    body = received_body(record)
    assert int(record["headers"]["content-length"]) == len(body)
    assert not record["chunked"]


# ---- 2. a pre-call hook refusing with a string ----
def test_refusal_chat_is_a_completion(stack, request_id):
    headers = {"x-hook-action": "refuse", "x-request-id": request_id}
    response = stack.http.post("/v1/chat/completions", json=chat(), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] is None
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REFUSAL}}
    ]
    assert hooked(stack, request_id) == [
        {"request_id": request_id, "call_type": "acompletion", "action": "refuse"}
    ]
    assert stack.mock_requests() == []


def test_refusal_chat_stream_is_sse(stack):
    headers = {"x-hook-action": "refuse"}
    with stack.http.stream(
        "POST", "/v1/chat/completions", json=chat(stream=True), headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(event["object"] == "chat.completion.chunk" for event in events)
    first, last = events[0]["choices"][0], events[-1]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": REFUSAL}
    assert last["finish_reason"] == "stop"
    assert last["delta"] == {}
    assert stack.mock_requests() == []


def test_refusal_stream_through_openai_sdk(stack):
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-dummy", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_headers={"x-hook-action": "refuse"},
        )
        with stream:
            chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stack.mock_requests() == []


def test_refusal_text_completion(stack):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi"}
    response = stack.http.post("/v1/completions", json=body, headers={"x-hook-action": "refuse"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == REFUSAL
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert stack.mock_requests() == []


@pytest.mark.parametrize(
    ("path", "body", "call_type"),
    [
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}, "aembedding"),
        ("/v1/images/generations", {"model": "dall-e-3", "prompt": "a cat"}, "aimage_generation"),
        ("/v1/moderations", {"model": "omni-moderation-latest", "input": "hello"}, "amoderation"),
    ],
)
def test_refusal_elsewhere_is_400(stack, assert_error, request_id, path, body, call_type):
    headers = {"x-hook-action": "refuse", "x-request-id": request_id}
    response = stack.http.post(path, json=body, headers=headers)
    assert_error(response, 400, message=REFUSAL, kind="invalid_request_error")
    assert hooked(stack, request_id)[0]["call_type"] == call_type
    assert stack.mock_requests() == []


def test_refusal_text_completion_stream(stack):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "say hi", "stream": True}
    response = stack.http.post("/v1/completions", json=body, headers={"x-hook-action": "refuse"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"text_completion"}
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == REFUSAL
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stack.mock_requests() == []


# ---- 3. a pre-call hook raising ----
def test_http_exception_with_dict_detail(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-hook-action": "http403"})
    error = assert_error(response, 403, message="nope", kind="permission_error")
    assert error["provider_specific_fields"] == {"error": "nope"}
    assert stack.mock_requests() == []


def test_foreign_http_exception_class(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-hook-action": "foreign"})
    assert_error(response, 418, message="I am a teapot", kind="invalid_request_error")
    assert stack.mock_requests() == []


def test_other_exception_is_500(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-hook-action": "valueerror"})
    assert_error(response, 500, message="boom", kind="internal_server_error")
    assert stack.mock_requests() == []


def test_http_exception_headers_reach_the_client(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-hook-action": "http429"})
    error = assert_error(response, 429, message="slow down", kind="throttling_error")
    assert "provider_specific_fields" not in error
    assert response.headers["retry-after"] == "7"
    assert stack.mock_requests() == []


def test_data_that_cannot_be_encoded_is_500(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-hook-action": "unencodable"})
    error = assert_error(response, 500, kind="internal_server_error")
    assert "cannot be encoded" in error["message"]
    assert stack.mock_requests() == []


# ---- a normal call, and 5. bodies that grow and shrink ----
def test_unchanged_request_through_openai_sdk(stack):
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-dummy", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello sdk"}], temperature=0.5
        )
    assert completion.choices[0].message.content == "[mock:gpt-4o] hello sdk"
    record = stack.mock_last()
    assert record["json"] == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hello sdk"}],
        "temperature": 0.5,
    }
    assert "metadata" not in record["json"] and "litellm_call_id" not in record["json"]


def test_body_that_grows(stack):
    sent = chat("grow me", temperature=0.2, user="alice")
    response = stack.http.post("/v1/chat/completions", json=sent, headers={"x-hook-action": "grow"})
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    expected = {**sent, "messages": [{"role": "system", "content": LONG_SYSTEM}, *sent["messages"]]}
    assert record["json"] == expected
    assert len(received_body(record)) > 50_000
    assert_length_matches(record)
    assert response.json()["choices"][0]["message"]["content"] == "[mock:gpt-4o] grow me"


def test_body_that_shrinks(stack):
    sent = chat("shrink me", temperature=0.2, top_p=0.9, user="bob", tools=[], n=1)
    sent["messages"].insert(0, {"role": "system", "content": "x" * 3000})
    response = stack.http.post("/v1/chat/completions", json=sent, headers={"x-hook-action": "shrink"})
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    assert record["json"] == {"model": "gpt-4o", "messages": [{"role": "user", "content": "shrink me"}]}
    assert len(received_body(record)) < 100
    assert_length_matches(record)


def test_chunked_request_body_is_rewritten(stack):
    sent = chat("chunked", user="carol")
    raw = json.dumps(sent).encode()

    def parts() -> Iterator[bytes]:
        for start in range(0, len(raw), 7):
            yield raw[start : start + 7]

    response = stack.http.post(
        "/v1/chat/completions",
        content=parts(),
        headers={"content-type": "application/json", "x-hook-action": "grow"},
    )
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    assert record["json"] == {
        **sent,
        "messages": [{"role": "system", "content": LONG_SYSTEM}, *sent["messages"]],
    }
    assert_length_matches(record)


def test_chunked_request_body_unchanged(stack):
    raw = json.dumps(chat("chunked, untouched")).encode()
    response = stack.http.post(
        "/v1/chat/completions",
        content=iter([raw[:10], raw[10:]]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert received_body(stack.mock_last()) == raw


def test_client_metadata_and_unicode_survive_a_rewrite(stack):
    sent = chat("héllo ☃ 😀 \u2028", metadata={"team": "a", "tags": ["x"]}, user="dora")
    response = stack.http.post("/v1/chat/completions", json=sent, headers={"x-hook-action": "model"})
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    # The sidecar's own `metadata` (headers, key hash) is for hooks only; the client's goes upstream as sent.
    assert record["json"] == {**sent, "model": "rewritten-model"}
    assert_length_matches(record)


def test_untouched_big_integer_survives_a_rewrite(stack):
    raw = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "seed": 123456789012345678901234567890}'
    headers = {"content-type": "application/json", "x-hook-action": "model"}
    response = stack.http.post("/v1/chat/completions", content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert b'"seed":123456789012345678901234567890' in received_body(stack.mock_last())


def test_large_body_rewrite(stack):
    """6 MB: above grpcio's default 4 MiB message limit and Envoy's default 1 MiB buffer."""
    sent = chat("z" * 6_000_000)
    response = stack.http.post(
        "/v1/chat/completions", json=sent, headers={"x-hook-action": "model"}, timeout=30
    )
    assert response.status_code == 200, response.text[:300]
    record = stack.mock_last()
    assert record["json"] == {**sent, "model": "rewritten-model"}
    assert_length_matches(record)


def test_streaming_response_passes_through_openai_sdk(stack):
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-dummy", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            extra_headers={"x-hook-action": "model"},
        )
        with stream:
            chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[mock:rewritten-model] stream me"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stack.mock_last()["json"]["model"] == "rewritten-model"


# ---- 6. multipart audio ----
BOUNDARY = "e2eBoundary7MA4YWxkTrZu0gW"
AUDIO = bytes(range(256)) * 64 + b"\r\n--e2eBoundary\r\n" + b"\x00\xff" * 1000


def multipart(model: str) -> tuple[bytes, bytes]:
    """A transcription form; returns (body, the file part's raw bytes)."""
    file_part = (
        b'Content-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + AUDIO
    )
    delimiter = b"--" + BOUNDARY.encode()
    body = (
        delimiter + b"\r\n" + file_part + b"\r\n"
        + delimiter + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + model.encode() + b"\r\n"
        + delimiter + b'\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n'
        + delimiter + b"--\r\n"
    )  # fmt: skip
    return body, file_part


def post_audio(stack, body: bytes, action: str, request_id: str) -> httpx.Response:
    headers = {
        "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "x-hook-action": action,
        "x-request-id": request_id,
    }
    return stack.http.post("/v1/audio/transcriptions", content=body, headers=headers)


def test_multipart_unchanged_is_byte_identical(stack, request_id):
    body, _ = multipart("whisper-1")
    response = post_audio(stack, body, "none", request_id)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": f"[mock:whisper-1] transcribed {len(AUDIO)} bytes from speech.wav"}
    assert stack.mock_last()["body_base64"] == base64.b64encode(body).decode()
    assert hooked(stack, request_id)[0]["call_type"] == "atranscription"


def test_multipart_model_rewrite_keeps_the_file(stack, request_id):
    body, file_part = multipart("whisper-1")
    response = post_audio(stack, body, "model", request_id)
    assert response.status_code == 200, response.text
    # The mock parses the form with aiohttp: the model changed, the file arrived whole.
    assert response.json() == {
        "text": f"[mock:rewritten-model] transcribed {len(AUDIO)} bytes from speech.wav"
    }
    record = stack.mock_last()
    received = received_body(record)
    assert file_part in received
    assert b'name="model"\r\n\r\nrewritten-model\r\n' in received
    assert b'name="language"\r\n\r\nen\r\n' in received
    assert_length_matches(record)


# ---- 7. paths the sidecar does not know pass straight through ----
@pytest.mark.parametrize(
    ("method", "path", "content"),
    [("GET", "/v1/models", None), ("POST", "/v1/files-like/whatever?purpose=x", b'{"not": "an llm call"}')],
)
def test_unknown_path_bypasses_the_sidecar(stack, request_id, method, path, content):
    started = stack.stat("http.llm.ext_proc.streams_started")
    headers = {"x-request-id": request_id, "content-type": "application/json", "x-hook-action": "refuse"}
    response = stack.http.request(method, path, content=content, headers=headers)
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    assert (record["method"], record["path"]) == (method, path.partition("?")[0])
    assert received_body(record) == (content or b"")
    if path == "/v1/models":
        assert [m["id"] for m in response.json()["data"]] == ["gpt-3.5-turbo", "gpt-4o"]
    else:
        assert response.json() == {
            "mock": "echo",
            "method": "POST",
            "path": path.partition("?")[0],
            "query": "purpose=x",
        }
    entry = stack.access_entry(request_id)
    assert "rh:" not in entry["ext_proc_timing"], entry  # Envoy never sent request headers to ext_proc
    assert stack.stat("http.llm.ext_proc.streams_started") == started
    assert hooked(stack, request_id) == []


def test_llm_path_does_go_through_the_sidecar(stack, request_id):
    """The counterpart of the test above, so its observations are known to change."""
    started = stack.stat("http.llm.ext_proc.streams_started")
    response = stack.http.post("/v1/chat/completions", json=chat(), headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    assert stack.access_entry(request_id)["ext_proc_timing"].startswith("rb:")  # one message: the body
    assert stack.stat("http.llm.ext_proc.streams_started") == started + 1
    assert len(hooked(stack, request_id)) == 1


# ---- 8. bad inputs: the right status, an OpenAI envelope, no hang ----
JSON = {"content-type": "application/json"}
CHAT = json.dumps(chat()).encode()
NESTED = b'{"model": "m", "messages": [], "x": ' + b"[" * 200 + b"]" * 200 + b"}"


@pytest.mark.parametrize(
    ("content", "headers", "status", "message", "param"),
    [
        pytest.param(b'{"model": "m", "messages": [', JSON, 400, "Invalid JSON payload", "request_body", id="malformed"),
        pytest.param(b"", JSON, 400, "Invalid request: the request body is empty", "request_body", id="empty"),
        pytest.param(b"[1, 2]", JSON, 400, "Invalid JSON payload", "request_body", id="array"),
        pytest.param(CHAT, {"content-type": "text/plain"}, 415, "Unsupported content-type", "content-type", id="text-plain"),
        pytest.param(
            gzip.compress(CHAT), {**JSON, "content-encoding": "gzip"}, 415, "Unsupported content-encoding", "content-encoding",
            id="gzip",
        ),
        pytest.param(
            b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}', JSON, 400,
            "Invalid JSON payload", "request_body", id="bad-utf8",
        ),
        pytest.param(NESTED, JSON, 400, "Invalid JSON payload: nested deeper", "request_body", id="too-deep"),
        pytest.param(
            b'{"model": "gpt-4o"}', JSON, 400, "/chat/completions: Missing required parameter: 'messages'.",
            "messages", id="no-messages",
        ),
    ],
)  # fmt: skip
def test_bad_request_body(stack, assert_error, request_id, content, headers, status, message, param):
    headers = {**headers, "x-request-id": request_id}
    response = stack.http.post("/v1/chat/completions", content=content, headers=headers, timeout=5)
    error = assert_error(response, status, param=param)
    assert error["message"].startswith(message), error
    assert error["type"] == "invalid_request_error"
    assert hooked(stack, request_id) == []
    assert stack.mock_requests() == []


def test_missing_messages_exact_message(stack, assert_error):
    response = stack.http.post("/v1/chat/completions", json={"model": "gpt-4o"})
    assert_error(
        response, 400, message="/chat/completions: Missing required parameter: 'messages'.", param="messages"
    )


# ---- 9. query strings and paths without /v1 still run the hooks ----
@pytest.mark.parametrize(
    ("path", "body", "call_type"),
    [
        ("/chat/completions?x=1", chat(), "acompletion"),
        ("/v1/chat/completions?x=1&y=2", chat(), "acompletion"),
        ("/embeddings?x=1", {"model": "e", "input": "hi"}, "aembedding"),
        ("/v1/moderations/?x=1", {"model": "m", "input": "hi"}, "amoderation"),
    ],
)
def test_query_and_short_paths_run_hooks(stack, request_id, path, body, call_type):
    headers = {"x-hook-action": "model", "x-request-id": request_id}
    response = stack.http.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert hooked(stack, request_id) == [
        {"request_id": request_id, "call_type": call_type, "action": "model"}
    ]
    record = stack.mock_last()
    assert record["json"] == {**body, "model": "rewritten-model"}
    assert (record["path"], record["query"]) == tuple(path.split("?"))

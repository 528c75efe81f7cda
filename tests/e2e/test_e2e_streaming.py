"""Streaming responses through a real Envoy: iterator hooks, per-chunk hooks, usage, refusals,
client disconnects, and the phases the sidecar asks for.

Every request goes client -> Envoy -> sidecar -> mock upstream. The mock splits its content
(`[mock:<model>] <last user text>`) into `x-mock-chunks` pieces, one SSE write each, then a finish chunk,
a usage chunk when `stream_options.include_usage` is set, and `data: [DONE]`. Handlers do what the
request's headers (or, for per-chunk hooks, which only see the caller, its `user`) ask for, and record
what they saw as JSON lines in `calls.jsonl` next to the config.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
from helpers import SEED_MODERATION, poll
from helpers import ext_proc_phases as phases

pytestmark = pytest.mark.e2e


STREAM_HOOKS = """
import json
from pathlib import Path

from extproc import CustomLogger, HTTPException

CALLS = Path(__file__).with_name("calls.jsonl")
REFUSAL = "I will not stream that."


def record(**fields):
    with CALLS.open("a") as calls:
        calls.write(json.dumps(fields) + "\\n")


def text_of(chunk):
    if not chunk.choices:
        return None
    choice = chunk.choices[0]
    return choice.delta.content if choice.delta is not None else choice.text


def set_text(chunk, text):
    choice = chunk.choices[0]
    if choice.delta is not None:
        choice.delta.content = text
    else:
        choice.text = text


class StreamHooks(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        action = data["metadata"]["headers"].get("x-hook-action")
        if action == "refuse":
            return REFUSAL
        if action == "http403":
            raise HTTPException(status_code=403, detail="no streams for you")
        return None

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        action = request_data["metadata"]["headers"].get("x-stream-action", "none")
        if action == "upper":
            async for chunk in response:
                text = text_of(chunk)
                if text:
                    set_text(chunk, text.upper())
                yield chunk
        elif action == "drop":  # every second content chunk
            seen = 0
            async for chunk in response:
                if text_of(chunk):
                    seen += 1
                    if seen % 2 == 0:
                        continue
                yield chunk
        elif action == "merge":  # pairs of content chunks become one
            held = None
            async for chunk in response:
                text = text_of(chunk)
                if not text:
                    if held is not None:
                        yield held
                        held = None
                    yield chunk
                elif held is None:
                    held = chunk
                else:
                    set_text(held, text_of(held) + text)
                    yield held
                    held = None
            if held is not None:
                yield held
        elif action == "sentence":  # hold text back until a sentence is complete
            buffer, last = "", None
            async for chunk in response:
                text = text_of(chunk)
                if not text:
                    if buffer:
                        set_text(last, buffer)
                        buffer = ""
                        yield last
                    yield chunk
                    continue
                buffer += text
                last = chunk
                if "." in buffer:
                    cut = buffer.rindex(".") + 1
                    set_text(chunk, buffer[:cut])
                    buffer = buffer[cut:]
                    yield chunk
            if buffer:
                set_text(last, buffer)
                yield last
        elif action == "append":
            last = None
            async for chunk in response:
                last = chunk
                yield chunk
            yield {
                "id": last.id,
                "object": "chat.completion.chunk",
                "created": last.created,
                "model": last.model,
                "choices": [{"index": 0, "delta": {"content": " [appended]"}, "finish_reason": None}],
            }
        elif action == "stop":  # after two content chunks: a finish chunk, and no more
            seen = 0
            async for chunk in response:
                yield chunk
                if text_of(chunk):
                    seen += 1
                if seen == 2:
                    yield {
                        "id": chunk.id,
                        "object": "chat.completion.chunk",
                        "created": chunk.created,
                        "model": chunk.model,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    }
                    return
        elif action in ("raise", "raise-http"):  # at the third content chunk
            seen = 0
            async for chunk in response:
                if text_of(chunk):
                    seen += 1
                    if seen == 3 and action == "raise":
                        raise ValueError("the stream hook exploded")
                    if seen == 3:
                        raise HTTPException(status_code=429, detail="stream quota used up")
                yield chunk
        elif action == "track":
            seen, completed = 0, False
            try:
                async for chunk in response:
                    seen += 1
                    yield chunk
                completed = True
            finally:
                record(hook="finally", request_id=request_data["litellm_call_id"], seen=seen, completed=completed)
        else:
            async for chunk in response:
                yield chunk


handler = StreamHooks()
"""

CHUNK_HOOKS = """
import json
from pathlib import Path

from extproc import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


class ChunkHooks(CustomLogger):
    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        user = user_api_key_dict.end_user_id or ""
        with CALLS.open("a") as calls:
            calls.write(json.dumps({"hook": "chunk", "user": user, "text": response}) + "\\n")
        if user.startswith("redact"):
            return "[redacted]"
        return None


handler = ChunkHooks()
"""

PRE_CALL_ONLY = """
import json
from pathlib import Path

from extproc import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


class PreCallOnly(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        with CALLS.open("a") as calls:
            calls.write(json.dumps({"hook": "pre_call", "request_id": data["litellm_call_id"]}) + "\\n")


handler = PreCallOnly()
"""

ITER_CONFIG = "litellm_settings:\n  callbacks: stream_hooks.handler\n"
# The seed's moderation hook reads data["messages"], so it only goes where chat alone is sent.
CHUNK_CONFIG = (
    "litellm_settings:\n  callbacks: [seed_moderation.proxy_handler_instance, chunk_hooks.handler]\n"
    "general_settings:\n  enforce_user_param: true\n"
)
CHUNK_FILES = {"seed_moderation.py": SEED_MODERATION, "chunk_hooks.py": CHUNK_HOOKS}
PLAIN_CONFIG = "litellm_settings:\n  callbacks: pre_call_only.handler\n"
REFUSAL = "I will not stream that."
CHUNKS = 6
FINALLY_DEADLINE_S = 5.0


@pytest.fixture()
def stack(e2e_stack):
    """Iterator hooks (FULL_DUPLEX_STREAMED) and a pre-call hook."""
    stack = e2e_stack(ITER_CONFIG, {"stream_hooks.py": STREAM_HOOKS})
    stack.mock_clear()
    return stack


@pytest.fixture()
def chunk_stack(e2e_stack):
    """A per-chunk streaming hook (STREAMED), the seed's moderation hook, enforce_user_param."""
    stack = e2e_stack(CHUNK_CONFIG, CHUNK_FILES)
    stack.mock_clear()
    return stack


@pytest.fixture()
def plain_stack(e2e_stack):
    """A pre-call hook only: no response phase is needed."""
    stack = e2e_stack(PLAIN_CONFIG, {"pre_call_only.py": PRE_CALL_ONLY})
    stack.mock_clear()
    return stack


# ---- helpers ----
def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "stream": True, **extra}


def completion(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "stream": True, **extra}


USAGE = {"stream_options": {"include_usage": True}}


def split(text: str, pieces: int) -> list[str]:
    """How the mock cuts its content into `x-mock-chunks` pieces."""
    bounds = [i * len(text) // pieces for i in range(pieces + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(pieces)]


def headers(request_id: str | None = None, chunks: int = CHUNKS, **actions: str) -> dict[str, str]:
    extra = {f"x-{name.replace('_', '-')}": value for name, value in actions.items()}
    result = {"x-mock-chunks": str(chunks), **extra}
    if request_id:
        result["x-request-id"] = request_id
    return result


def sse(response: httpx.Response) -> list[Any]:
    """The data of each SSE event: parsed JSON, or the string "[DONE]"."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert all(line.startswith("data: ") for line in lines), block
        data = "\n".join(line[len("data: ") :] for line in lines)
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def text_of(event: Any) -> str | None:
    if not isinstance(event, dict) or not event.get("choices"):
        return None
    choice = event["choices"][0]
    return choice["delta"].get("content") if "delta" in choice else choice.get("text")


def contents(events: list[Any]) -> list[str]:
    """The non-empty texts of the content events, in order."""
    return [text for event in events if (text := text_of(event))]


def sdk(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-test", max_retries=0)


def sdk_chat(stack, text: str, extra_headers: dict[str, str], **extra: Any) -> list[Any]:
    with sdk(stack) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": text}],
            stream=True,
            extra_headers=extra_headers,
            **extra,
        )
        with stream:
            return list(stream)


def sdk_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# ---- 1. an iterator hook upper-casing every chunk ----
def test_iterator_upper_cases_chat(stack, request_id):
    text = "hello streaming world"
    content = f"[mock:gpt-4o] {text}"
    response = stack.http.post(
        "/v1/chat/completions", json=chat(text), headers=headers(request_id, stream_action="upper")
    )
    events = sse(response)
    assert events[-1] == "[DONE]"
    pieces = split(content, CHUNKS)
    assert all(piece != piece.upper() for piece in pieces)  # so every event must have changed
    assert contents(events) == [piece.upper() for piece in pieces]
    assert "".join(contents(events)) == content.upper()
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stack.access_entry(request_id)["llm_extproc"]["call_type"] == "completion"


def test_iterator_upper_cases_text_completion(stack):
    prompt = "complete this text"
    content = f"[mock:gpt-3.5-turbo-instruct] {prompt}"
    response = stack.http.post(
        "/v1/completions", json=completion(prompt), headers=headers(stream_action="upper")
    )
    events = sse(response)
    assert {event["object"] for event in events[:-1]} == {"text_completion"}
    assert contents(events) == [piece.upper() for piece in split(content, CHUNKS)]


def test_iterator_upper_cases_through_openai_sdk(stack):
    chunks = sdk_chat(stack, "sdk upper", headers(stream_action="upper"))
    assert sdk_text(chunks) == "[MOCK:GPT-4O] SDK UPPER"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == CHUNKS
    assert chunks[-1].choices[0].finish_reason == "stop"
    with sdk(stack) as client:
        stream = client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="sdk text",
            stream=True,
            extra_headers=headers(stream_action="upper"),
        )
        with stream:
            text_chunks = list(stream)
    assert "".join(c.choices[0].text for c in text_chunks) == "[MOCK:GPT-3.5-TURBO-INSTRUCT] SDK TEXT"
    assert text_chunks[-1].choices[0].finish_reason == "stop"


def test_iterator_streams_as_it_goes(stack):
    """The first event reaches the client before the upstream has finished sending (order of events)."""
    hdrs = {**headers(stream_action="upper"), "x-mock-chunk-delay-ms": "60"}
    with stack.http.stream("POST", "/v1/chat/completions", json=chat("as it goes"), headers=hdrs) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.time()
        rest = [line for line in lines if line.startswith("data: ")]
    assert text_of(json.loads(first[len("data: ") :])) == split("[mock:gpt-4o] as it goes", CHUNKS)[0].upper()
    assert rest[-1] == "data: [DONE]"
    assert first_at < stack.mock_last()["answered_at"]


# ---- 2. iterator hooks dropping, merging, holding back, adding, stopping, raising ----
CONTENT = "[mock:gpt-4o] streaming hooks at work"


def test_iterator_drops_chunks(stack):
    response = stack.http.post(
        "/v1/chat/completions", json=chat("streaming hooks at work"), headers=headers(stream_action="drop")
    )
    events = sse(response)
    pieces = split(CONTENT, CHUNKS)
    assert contents(events) == pieces[0::2]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_iterator_merges_chunks(stack):
    response = stack.http.post(
        "/v1/chat/completions", json=chat("streaming hooks at work"), headers=headers(stream_action="merge")
    )
    events = sse(response)
    pieces = split(CONTENT, CHUNKS)
    assert contents(events) == [pieces[i] + pieces[i + 1] for i in range(0, CHUNKS, 2)]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_iterator_holds_text_until_a_sentence_is_complete(stack):
    text = "One two three. Four five six. Seven"
    response = stack.http.post(
        "/v1/chat/completions", json=chat(text), headers=headers(stream_action="sentence")
    )
    events = sse(response)
    assert contents(events) == ["[mock:gpt-4o] One two three.", " Four five six.", " Seven"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1] == "[DONE]"


def test_iterator_appends_a_chunk(stack):
    response = stack.http.post(
        "/v1/chat/completions", json=chat("streaming hooks at work"), headers=headers(stream_action="append")
    )
    events = sse(response)
    assert events[-2]["choices"] == [{"index": 0, "delta": {"content": " [appended]"}, "finish_reason": None}]
    assert "".join(contents(events)) == CONTENT + " [appended]"
    chunks = sdk_chat(stack, "streaming hooks at work", headers(stream_action="append"))
    assert sdk_text(chunks) == CONTENT + " [appended]"


def test_iterator_stops_early(stack):
    hdrs = headers(stream_action="stop")
    response = stack.http.post("/v1/chat/completions", json=chat("streaming hooks at work"), headers=hdrs)
    events = sse(response)
    pieces = split(CONTENT, CHUNKS)
    assert contents(events) == pieces[:2]
    assert len(events) == 4  # two content chunks, the hook's finish chunk, [DONE]
    assert events[2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert events[3] == "[DONE]"
    chunks = sdk_chat(stack, "streaming hooks at work", hdrs)
    assert sdk_text(chunks) == "".join(pieces[:2])
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_iterator_raising_mid_stream_sends_an_error_event(stack, request_id):
    hdrs = headers(request_id, stream_action="raise")
    response = stack.http.post("/v1/chat/completions", json=chat("streaming hooks at work"), headers=hdrs)
    events = sse(response)
    assert contents(events) == split(CONTENT, CHUNKS)[:2]
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["message"] == "the stream hook exploded"
    assert (error["type"], error["code"]) == ("internal_server_error", "500")
    assert stack.access_entry(request_id)["status"] == 200  # the status had gone out already


def test_iterator_raising_mid_stream_makes_the_sdk_raise(stack):
    with pytest.raises(openai.APIError) as caught:
        sdk_chat(stack, "streaming hooks at work", headers(stream_action="raise"))
    assert caught.value.message == "the stream hook exploded"
    with pytest.raises(openai.APIError) as caught:
        sdk_chat(stack, "streaming hooks at work", headers(stream_action="raise-http"))
    assert caught.value.message == "stream quota used up"
    assert caught.value.body["code"] == "429"


# ---- 3. a per-chunk hook ----
def test_per_chunk_hook_sees_the_text_grow(chunk_stack):
    user = f"recorder-{uuid.uuid4().hex}"
    text = "watch the text grow"
    content = f"[mock:gpt-4o] {text}"
    response = chunk_stack.http.post("/v1/chat/completions", json=chat(text, user=user), headers=headers())
    assert "".join(contents(sse(response))) == content  # kept as it was: the hook returned None
    seen = [call["text"] for call in chunk_stack.hook_calls() if call.get("user") == user]
    distinct = [t for i, t in enumerate(seen) if i == 0 or t != seen[i - 1]]
    pieces = split(content, CHUNKS)
    assert distinct == ["".join(pieces[: i + 1]) for i in range(CHUNKS)]
    assert len(seen) == CHUNKS + 1  # the finish chunk is seen too, with the whole text
    assert seen[-1] == content


def test_per_chunk_hook_replacement_keeps_events_valid_json(chunk_stack):
    body = chat("replace every chunk", user="redactor", **USAGE)
    response = chunk_stack.http.post("/v1/chat/completions", json=body, headers=headers())
    events = sse(response)  # every event parses as JSON
    assert events[-1] == "[DONE]"
    assert all(event["object"] == "chat.completion.chunk" for event in events[:-1])
    assert "[mock:" not in response.text
    assert len(contents(events)) >= CHUNKS
    assert set(contents(events)) == {"[redacted]"}
    chunks = sdk_chat(chunk_stack, "replace via sdk", headers(), user="redactor")
    assert "[mock:" not in sdk_text(chunks)
    assert sdk_text(chunks).startswith("[redacted]" * CHUNKS)


# ---- 4. usage captured from the stream into the access log ----
@pytest.mark.parametrize("which", ["per-chunk", "iterator"])
def test_stream_usage_in_access_log(stack, chunk_stack, request_id, which):
    target = chunk_stack if which == "per-chunk" else stack
    body = chat("count the tokens of this stream", user="usage", **USAGE)
    response = target.http.post(
        "/v1/chat/completions", json=body, headers=headers(request_id, stream_action="upper")
    )
    events = sse(response)
    [usage_event] = [event for event in events[:-1] if event.get("usage")]
    usage = usage_event["usage"]
    assert usage["total_tokens"] > 0
    metadata = target.access_entry(request_id)["llm_extproc"]
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert metadata[field] == usage[field], (field, metadata, usage)
    assert metadata["call_type"] == "completion"


# ---- 5. refusals of a streaming request ----
def test_pre_call_string_refusal_streams_an_answer(stack):
    response = stack.http.post("/v1/chat/completions", json=chat("hi"), headers=headers(hook_action="refuse"))
    events = sse(response)
    assert events[-1] == "[DONE]"
    assert len(events) == 3
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": REFUSAL}
    assert events[1]["choices"][0]["delta"] == {}
    assert events[1]["choices"][0]["finish_reason"] == "stop"
    chunks = sdk_chat(stack, "hi", headers(hook_action="refuse"))
    assert sdk_text(chunks) == REFUSAL
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert stack.mock_requests() == []


def test_pre_call_http_exception_refuses_a_stream(stack, assert_error):
    response = stack.http.post(
        "/v1/chat/completions", json=chat("hi"), headers=headers(hook_action="http403")
    )
    assert_error(response, 403, message="no streams for you", kind="permission_error")
    assert stack.mock_requests() == []


def test_seed_moderation_refuses_a_stream(chunk_stack, assert_error):
    response = chunk_stack.http.post(
        "/v1/chat/completions", json=chat("hello world", user="someone"), headers=headers()
    )
    error = assert_error(response, 400, message="Violated content safety policy")
    assert error["provider_specific_fields"] == {"error": "Violated content safety policy"}
    assert "[mock:" not in response.text
    passing = chunk_stack.http.post(
        "/v1/chat/completions", json=chat("Hello world", user="someone"), headers=headers()
    )
    assert "".join(contents(sse(passing))) == "[mock:gpt-4o] Hello world"


def test_enforce_user_param_refuses_a_stream(chunk_stack, assert_error):
    response = chunk_stack.http.post("/v1/chat/completions", json=chat("no user"), headers=headers())
    assert_error(response, 401, kind="auth_error")
    assert chunk_stack.mock_requests() == []


# ---- 6. the client going away mid-stream ----
def test_client_disconnect_runs_the_generators_finally(stack, request_id):
    hdrs = {**headers(request_id, chunks=50, stream_action="track"), "x-mock-chunk-delay-ms": "50"}
    got = []
    with (
        httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as client,
        client.stream("POST", "/v1/chat/completions", json=chat("x" * 100), headers=hdrs) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                got.append(line)
            if len(got) == 2:
                break
    # Both clients are closed: the connection is gone with 48 of the 50 chunks still to come.
    assert len(got) == 2
    envoy_id = stack.request_id_of(request_id)  # hooks see Envoy's id, not the client's
    [done] = poll(
        lambda: [c for c in stack.hook_calls() if c.get("request_id") == envoy_id],
        "the iterator hook's finally",
        FINALLY_DEADLINE_S,
    )
    assert done["completed"] is False
    assert done["seen"] < 50
    assert "DC" in stack.access_entry(request_id)["flags"]
    with httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as fresh:
        after = fresh.post("/v1/chat/completions", json=chat("after"), headers=headers(stream_action="upper"))
    assert "".join(contents(sse(after))) == "[MOCK:GPT-4O] AFTER"


# ---- 7. no streaming hook: the stream passes untouched ----
def normalized(body: bytes) -> bytes:
    """The mock's ids count up and `created` is the current second; everything else must be identical."""
    body = re.sub(rb'"id":"chatcmpl-mock-\d+"', b'"id":"ID"', body)
    return re.sub(rb'"created":\d+', b'"created":0', body)


def test_stream_without_streaming_hooks_is_byte_identical(plain_stack, request_id):
    body = chat("pass me through untouched", **USAGE)
    response = plain_stack.http.post("/v1/chat/completions", json=body, headers=headers(request_id))
    assert response.status_code == 200
    envoy_id = plain_stack.request_id_of(request_id)  # hooks see Envoy's id, not the client's
    assert [c["request_id"] for c in plain_stack.hook_calls() if c["request_id"] == envoy_id] == [envoy_id]
    with httpx.Client(timeout=10, trust_env=False) as direct:
        straight = direct.post(f"{plain_stack.mock_url}/v1/chat/completions", json=body, headers=headers())
    assert straight.status_code == 200
    assert b"[mock:gpt-4o] pass me" in b"".join(split_content(straight.content))
    assert normalized(response.content) == normalized(straight.content)
    counts = phases(plain_stack.access_entry(request_id))
    assert counts == {"rb": 1}  # one message per request (the default): no request headers
    assert "sb" not in counts


def split_content(body: bytes) -> list[bytes]:
    """The content pieces of a raw chat stream, joined by the caller to check it is a real answer."""
    pieces = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            text = text_of(json.loads(line[len(b"data: ") :]))
            if text:
                pieces.append(text.encode())
    return pieces


# ---- 8. per-chunk hooks use STREAMED mode: one message per upstream write ----
def test_per_chunk_hook_gets_one_message_per_write(chunk_stack, request_id):
    hdrs = {**headers(request_id), "x-mock-chunk-delay-ms": "40"}
    body = chat("one message per write", user="streamed")
    with chunk_stack.http.stream("POST", "/v1/chat/completions", json=body, headers=hdrs) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        first_at = time.time()
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    assert len(rest) == CHUNKS + 1  # the other content chunks, the finish chunk, [DONE]
    assert json.loads(first[len("data: ") :])["choices"][0]["delta"]["role"] == "assistant"
    # Not buffered: the first event was out before the upstream finished writing.
    assert first_at < chunk_stack.mock_last()["answered_at"]
    counts = phases(chunk_stack.access_entry(request_id))
    assert counts["sh"] == 1
    assert counts["sb"] >= 2, counts

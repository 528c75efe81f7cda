"""Answers for a pre-call hook that returned a string: a well-formed completion, or a 400."""

from __future__ import annotations

import time
import uuid

import orjson

from extproc.errors import envelope
from extproc.request.decisions import Reply
from extproc.types import CallType, JSONDict

SSE = "text/event-stream"


def _completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _chat(text: str) -> JSONDict:
    return {
        "id": _completion_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": None,
        "system_fingerprint": None,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {},
    }


def _text(text: str) -> JSONDict:
    return {
        "id": _completion_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": None,
        "system_fingerprint": None,
        "choices": [{"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}],
        "usage": {},
    }


def _sse(events: list[JSONDict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _chat_stream(text: str) -> bytes:
    base = {
        "id": _completion_id("chatcmpl"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": None,
        "system_fingerprint": None,
    }
    first = {
        **base,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
    }
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    return _sse([first, last])


def _text_stream(text: str) -> bytes:
    base = {
        "id": _completion_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": None,
    }
    first = {**base, "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
    last = {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}
    return _sse([first, last])


def refusal_reply(call_type: CallType, stream: bool, text: str) -> Reply:
    """The client's answer when a pre-call hook refuses with `text` (hook-semantics.md)."""
    if call_type is CallType.COMPLETION:
        if stream:
            return Reply(200, _chat_stream(text), details="pre_call_refusal", content_type=SSE)
        return Reply(200, orjson.dumps(_chat(text)), details="pre_call_refusal")
    if call_type is CallType.TEXT_COMPLETION:
        if stream:
            return Reply(200, _text_stream(text), details="pre_call_refusal", content_type=SSE)
        return Reply(200, orjson.dumps(_text(text)), details="pre_call_refusal")
    error = envelope(400, text)
    return Reply(400, error.body, details="pre_call_refusal")

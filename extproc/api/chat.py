"""`POST /v1/chat/completions`: a string refusal is an assistant message, streamed when asked."""

from __future__ import annotations

import time
import uuid

import orjson

from extproc.api.openai import SSE, OpenAIFamily
from extproc.api.sse import DONE, encode_json
from extproc.decisions import Reply
from extproc.types import CallType, JSONDict


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChatCompletions(OpenAIFamily):
    path = "/chat/completions"
    call_type = CallType.COMPLETION
    required = "messages"

    __slots__ = ()

    def refusal(self, text: str, stream: bool) -> Reply:
        ident, created = completion_id("chatcmpl"), int(time.time())

        def head(kind: str) -> JSONDict:
            return {
                "id": ident,
                "object": kind,
                "created": created,
                "model": None,
                "system_fingerprint": None,
            }

        if not stream:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            answer = {**head("chat.completion"), "choices": [choice], "usage": {}}
            return Reply(200, orjson.dumps(answer), details="pre_call_refusal")
        delta = {"role": "assistant", "content": text}
        first = {
            **head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        last = {
            **head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        body = encode_json(first) + encode_json(last) + DONE
        return Reply(200, body, details="pre_call_refusal", content_type=SSE)

"""`POST /v1/completions`: a string refusal is a completion's text, streamed when asked."""

from __future__ import annotations

import time

import orjson

from extproc.api.chat import completion_id
from extproc.api.openai import SSE, OpenAIFamily
from extproc.api.sse import DONE, encode_json
from extproc.decisions import Reply
from extproc.types import CallType


class TextCompletions(OpenAIFamily):
    path = "/completions"
    call_type = CallType.TEXT_COMPLETION
    required = "prompt"

    __slots__ = ()

    def refusal(self, text: str, stream: bool) -> Reply:
        base = {"id": completion_id("cmpl"), "object": "text_completion", "created": int(time.time())}
        if not stream:
            choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}
            answer = {**base, "model": None, "system_fingerprint": None, "choices": [choice], "usage": {}}
            return Reply(200, orjson.dumps(answer), details="pre_call_refusal")
        base["model"] = None
        first = {**base, "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]}
        last = {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}
        body = encode_json(first) + encode_json(last) + DONE
        return Reply(200, body, details="pre_call_refusal", content_type=SSE)

"""`POST /v1/responses`: OpenAI's Responses API.

Requests: `input` (a string, or a list of items: messages with `input_text` parts, function calls and
their outputs, ...), `instructions`, `tools`, `previous_response_id`. Answers: a `response` object (its
text also as `output_text`); streams: named events (`response.created`, `response.output_text.delta`, ...,
`response.completed`), every frame keeping its `event:` line and no `[DONE]`. Errors are the OpenAI
envelope; a string refusal is a 400 carrying the string (the 200 answer is for chat and completions).
"""

from __future__ import annotations

from typing import Any

from extproc.api.openai import OpenAIFamily, error_object
from extproc.api.sse import encode_named
from extproc.api.views import ResponsesAPIResponseView
from extproc.errors import ErrorInfo, dumps_any
from extproc.types import CallType, JSONDict

_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "input": ((str, list), "a string or an array"),
    "instructions": (str, "a string"),
    "tools": (list, "an array"),
    "stream": (bool, "a boolean"),
    "user": (str, "a string"),
    "metadata": (dict, "an object"),
}
TEXT_DELTA = "response.output_text.delta"
FINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")


def usage_of(usage: Any) -> dict[str, int]:
    """The Responses API's `usage` as the sidecar counts tokens."""
    if not isinstance(usage, dict):
        return {}
    counts: dict[str, int] = {}
    pairs = (
        ("input_tokens", "prompt_tokens"),
        ("output_tokens", "completion_tokens"),
        ("total_tokens", "total_tokens"),
    )
    for theirs, ours in pairs:
        value = usage.get(theirs)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
            counts[ours] = value
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int) and not isinstance(cached, bool) and 0 <= cached <= 2**53:
        counts["cached_tokens"] = cached
    return counts


class Responses(OpenAIFamily):
    path = "/responses"
    call_type = CallType.RESPONSES
    metadata_key = "litellm_metadata"
    named_events = True

    __slots__ = ()

    def problem(self, data: JSONDict) -> tuple[str, str] | None:
        for name, (kind, described) in _TYPES.items():
            value = data.get(name)
            if value is not None and not isinstance(value, kind):
                return f"{self.path}: Invalid type for '{name}': expected {described}.", name
        return None

    def usage(self, response: Any) -> dict[str, int]:
        """A response's usage, or the final stream event's (`response.completed` carries the response)."""
        if not isinstance(response, dict):
            return {}
        if response.get("type") in FINAL_EVENTS:
            inner = response.get("response")
            return usage_of(inner.get("usage")) if isinstance(inner, dict) else {}
        return usage_of(response.get("usage"))

    def error_event(self, error: ErrorInfo) -> bytes:
        """An `error` event; its `error` object makes OpenAI's SDKs raise it as an APIError."""
        inner = error_object(error)
        event = {
            "type": "error",
            "code": inner["code"],
            "message": error.message,
            "param": error.param,
            "sequence_number": 0,
            "error": inner,
        }
        return b"event: error\ndata: " + dumps_any(event) + b"\n\n"

    def chunk_text(self, chunk: JSONDict) -> str | None:
        text = chunk.get("delta") if chunk.get("type") == TEXT_DELTA else None
        return text if isinstance(text, str) else None

    def set_chunk_text(self, chunk: JSONDict, text: str) -> bool:
        """Only a text delta has text to replace: other events stay as they came (False)."""
        if chunk.get("type") != TEXT_DELTA or chunk.get("delta") == text:
            return False
        chunk["delta"] = text
        return True

    def encode_event(self, chunk: JSONDict, name: str | None) -> bytes:
        return encode_named(name or str(chunk.get("type") or "message"), chunk)

    def answer_view(self, response: JSONDict) -> Any:
        """Success hooks get a `ResponsesAPIResponse` view: attribute and item access, `output_text`."""
        return ResponsesAPIResponseView(response)

    def end_of_stream(self) -> bytes:
        return b""

    def assembled(self, model: Any, text: str, usage: dict[str, int]) -> JSONDict:
        message = {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        return {
            "object": "response",
            "model": model,
            "status": "completed",
            "output": [message],
            "output_text": text,
            "usage": {
                "input_tokens": usage.get("prompt_tokens"),
                "output_tokens": usage.get("completion_tokens"),
                "total_tokens": usage.get("total_tokens"),
            },
        }

"""`POST /v1/messages` (also `/anthropic/v1/messages`): Anthropic's Messages API.

Requests: `messages` of content blocks, `system`, `tools`, `max_tokens`, `metadata.user_id` (the end user:
Anthropic has no top-level `user`). Answers: a `message` object; streams: named events (`message_start`,
`content_block_delta`, ..., `message_stop`), every frame keeping its `event:` line and no `[DONE]`.
Errors, refusals included, are Anthropic's error body with Anthropic's error type for the status.
Streaming iterator hooks receive whole SSE frames as `bytes` (as LiteLLM hands them), and what they yield
goes out as it is.
"""

from __future__ import annotations

from typing import Any, ClassVar

from extproc.api import anthropic
from extproc.api.openai import MAX_TOKENS, OpenAIFamily
from extproc.api.sse import encode_named
from extproc.decisions import Reply
from extproc.errors import ErrorInfo
from extproc.types import CallType, JSONDict

_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "messages": (list, "an array"),
    "system": ((str, list), "a string or an array of content blocks"),
    "max_tokens": (int, "an integer"),
    "metadata": (dict, "an object"),
    "stream": (bool, "a boolean"),
    "tools": (list, "an array"),
}


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def usage_of(usage: Any) -> dict[str, int]:
    """Anthropic's `usage` as the sidecar counts tokens: prompt tokens include the cache's."""
    if not isinstance(usage, dict):
        return {}
    counts: dict[str, int] = {}
    read = _count(usage.get("cache_read_input_tokens")) or 0
    written = _count(usage.get("cache_creation_input_tokens")) or 0
    given = _count(usage.get("input_tokens"))
    if given is not None:
        counts["prompt_tokens"] = given + read + written
        counts["cached_tokens"] = read
    output = _count(usage.get("output_tokens"))
    if output is not None:
        counts["completion_tokens"] = output
    if "prompt_tokens" in counts and "completion_tokens" in counts:
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts


class AnthropicMessages(OpenAIFamily):
    path = "/messages"
    aliases: ClassVar[tuple[str, ...]] = ("/anthropic/v1/messages",)
    call_type = CallType.ANTHROPIC_MESSAGES
    required = "messages"
    metadata_key = "litellm_metadata"
    named_events = True
    hook_frames = True

    __slots__ = ()

    def problem(self, data: JSONDict) -> tuple[str, str] | None:
        if data.get("messages") is None:
            return "messages: Field required", "messages"
        for name, (kind, described) in _TYPES.items():
            value = data.get(name)
            wrong_bool = isinstance(value, bool) and kind is not bool  # True is an int to Python
            if value is not None and (not isinstance(value, kind) or wrong_bool):
                return f"{name}: Input should be {described}", name
        return None

    def user(self, data: JSONDict) -> Any:
        metadata = data.get("metadata")
        return metadata.get("user_id") if isinstance(metadata, dict) else None

    def has_user(self, data: JSONDict) -> bool:
        metadata = data.get("metadata")
        return isinstance(metadata, dict) and "user_id" in metadata

    def refusal(self, text: str, stream: bool) -> Reply:
        return Reply(400, anthropic.error_body(400, text), details="pre_call_refusal")

    def error_reply(self, error: ErrorInfo, details: str, metadata: dict[str, Any] | None) -> Reply:
        body = anthropic.error_body(error.status, error.message)
        return Reply(error.status, body, error.headers, details, metadata=metadata)

    def usage(self, response: Any) -> dict[str, int]:
        """A message's usage, or a stream event's: `message_start` (input) or `message_delta` (output)."""
        if not isinstance(response, dict):
            return {}
        if response.get("type") == "message_start":
            message = response.get("message")
            return usage_of(message.get("usage")) if isinstance(message, dict) else {}
        return usage_of(response.get("usage"))

    def error_event(self, error: ErrorInfo) -> bytes:
        return anthropic.error_frame(error)

    def chunk_text(self, chunk: JSONDict) -> str | None:
        if chunk.get("type") != "content_block_delta":
            return None
        delta = chunk.get("delta")
        text = delta.get("text") if isinstance(delta, dict) and delta.get("type") == "text_delta" else None
        return text if isinstance(text, str) else None

    def set_chunk_text(self, chunk: JSONDict, text: str) -> bool:
        """Only a text delta has text to replace: other events stay as they came (False)."""
        delta = chunk.get("delta")
        if self.chunk_text(chunk) is None or not isinstance(delta, dict) or delta["text"] == text:
            return False
        delta["text"] = text
        return True

    def encode_event(self, chunk: JSONDict, name: str | None) -> bytes:
        return encode_named(name or str(chunk.get("type") or "message"), chunk)

    def answer_view(self, response: JSONDict) -> Any:
        """Success hooks get the message as a dict, as LiteLLM hands it on this route."""
        return response

    def end_of_stream(self) -> bytes:
        return b""

    def assembled(self, model: Any, text: str, usage: dict[str, int]) -> JSONDict:
        return {
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "usage": {
                "input_tokens": usage.get("prompt_tokens"),
                "output_tokens": usage.get("completion_tokens"),
                "total_tokens": usage.get("total_tokens"),
            },
        }

"""The OpenAI wire shapes every OpenAI endpoint family shares: the error envelope, the error event of a
stream, `usage`, and `OpenAIFamily`, the base the six OpenAI families build on.

Envoy's own local replies write the same envelope from the generated config
(`extproc.envoy.local_replies`); a test pins the two shapes together.
"""

from __future__ import annotations

from typing import Any, ClassVar

from extproc.api.codecs import Codec
from extproc.api.prompt import get_formatted_prompt
from extproc.api.sse import DONE, encode_data, encode_json
from extproc.api.views import wrap
from extproc.decisions import Reply
from extproc.errors import ErrorInfo, describe, dumps_any, error_type
from extproc.types import CallType, JSONDict

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_TOKENS = 2**53  # beyond it a count is not a count (and Envoy's metadata numbers are doubles)
SSE = "text/event-stream"


def error_object(error: ErrorInfo) -> JSONDict:
    """The envelope's inner `error` object."""
    inner: JSONDict = {
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": str(error.status),
    }
    if error.provider_specific_fields is not None:
        inner["provider_specific_fields"] = error.provider_specific_fields
    return inner


def envelope(status: int, message: str, *, param: str | None = None, kind: str | None = None) -> bytes:
    """The OpenAI error envelope `{"error": {"message", "type", "param", "code"}}`, encoded."""
    return dumps_any({"error": error_object(ErrorInfo(status, message, kind or error_type(status), param))})


INTERNAL_ERROR = Reply(
    500,
    envelope(500, "llm-extproc: internal error while processing the request"),
    details="llm-extproc_internal_error",
)


def reply_for(exc: BaseException, details: str = "llm-extproc_error") -> Reply:
    """The OpenAI error answer for any exception, ours included."""
    error = describe(exc)
    return Reply(error.status, dumps_any({"error": error_object(error)}), error.headers, details)


def usage_of(response: Any) -> dict[str, int]:
    """`usage` token counts of an OpenAI response or final stream chunk (ints only)."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return {}
    return {
        k: v
        for k in USAGE_FIELDS
        if isinstance(v := usage.get(k), int) and not isinstance(v, bool) and 0 <= v <= MAX_TOKENS
    }


# Well-known parameters whose type is checked before any hook sees the body.
_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "stream": (bool, "a boolean"),
    "user": (str, "a string"),
    "messages": (list, "an array"),
}


class OpenAIFamily:
    """What the OpenAI endpoints share; a family sets its path, call type and required field, and
    overrides what differs (refusals and stream text for the two completion families)."""

    path: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    call_type: ClassVar[CallType]
    required: ClassVar[str | None] = None
    form: ClassVar[bool] = False  # multipart form fields are strings: only string types are checked
    metadata_key: ClassVar[str] = "metadata"
    named_events: ClassVar[bool] = False
    hook_frames: ClassVar[bool] = False

    __slots__ = ("codec",)

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def problem(self, data: JSONDict) -> tuple[str, str] | None:
        required = self.required
        if required is not None and data.get(required) is None:
            return f"{self.path}: Missing required parameter: '{required}'.", required
        for name, (kind, described) in _TYPES.items():
            if self.form and kind is not str:
                continue
            if name in data and data[name] is not None and not isinstance(data[name], kind):
                return f"{self.path}: Invalid type for '{name}': expected {described}.", name
        return None

    def model(self, data: JSONDict) -> Any:
        return data.get("model")

    def user(self, data: JSONDict) -> Any:
        return data.get("user")

    def has_user(self, data: JSONDict) -> bool:
        return "user" in data

    def prompt_text(self, data: JSONDict) -> str:
        return get_formatted_prompt(data, self.call_type.value)

    def refusal(self, text: str, stream: bool) -> Reply:
        """Endpoints without a completion to carry it refuse with a 400 (as LiteLLM's proxy does)."""
        return Reply(400, envelope(400, text), details="pre_call_refusal")

    def error_reply(self, error: ErrorInfo, details: str, metadata: dict[str, Any] | None) -> Reply:
        body = dumps_any({"error": error_object(error)})
        return Reply(error.status, body, error.headers, details, metadata=metadata)

    def usage(self, response: Any) -> dict[str, int]:
        return usage_of(response)

    def error_event(self, error: ErrorInfo) -> bytes:
        """An error event, as LiteLLM sends mid-stream; OpenAI's SDKs raise it as an APIError."""
        return encode_data(dumps_any({"error": error_object(error)})) + DONE

    def chunk_text(self, chunk: JSONDict) -> str | None:
        """`choices[0].delta.content` (chat) or `choices[0].text` (completions)."""
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        return text if isinstance(text, str) else None

    def set_chunk_text(self, chunk: JSONDict, text: str) -> bool | None:
        choices = chunk.get("choices")
        if not choices or not isinstance(choices[0], dict):
            chunk["choices"] = choices = [{"index": 0, "delta": {}}]
        choice = choices[0]
        if isinstance(choice.get("delta"), dict):
            choice["delta"]["content"] = text
        elif "text" in choice:
            choice["text"] = text
        else:
            choice["delta"] = {"content": text}
        return True

    def encode_event(self, chunk: JSONDict, name: str | None) -> bytes:
        return encode_json(chunk)

    def answer_view(self, response: JSONDict) -> Any:
        return wrap(response)

    def end_of_stream(self) -> bytes:
        return DONE

    def assembled(self, model: Any, text: str, usage: dict[str, int]) -> JSONDict:
        return {
            "object": "chat.completion",
            "model": model,
            "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        }

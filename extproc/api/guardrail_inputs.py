"""What LiteLLM's unified `apply_guardrail` is handed, read from a request or an answer of any endpoint, and
its returned texts written back where they came from.

`GuardrailInputs.of_request(data, call_type)` and `GuardrailInputs.of_response(response, call_type)` list
the texts (`inputs["texts"]`) with the place each came from; `write_back(returned)` puts the returned
texts into those places (a place whose text did not change is left as it was). Alongside the texts:
- requests: `tools` (chat's tool definitions), `tool_calls` (assistant messages' calls),
  `structured_messages` (chat's messages as sent), `model`;
- answers: `tool_calls` of the answer's messages.

Texts of a request: chat messages' contents of every role (a string, or each `text` part), a
completion's prompt (a string or each string of a list), embeddings' and moderations' input, an image
or transcription prompt; a Responses request's instructions, input messages and tool outputs; a Messages
request's system, text blocks and tool results. Of an answer: each choice's message content (chat) or
text (completions), a response's output text parts, a message's text blocks.
A new API family adds its readers to `_REQUEST_READERS` / `_RESPONSE_READERS` under its call type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

from extproc.types import JSONDict


class GenericGuardrailAPIInputs(TypedDict, total=False):
    """What `apply_guardrail` receives and returns (LiteLLM's `litellm.types.utils` name)."""

    texts: list[str]
    images: list[str]
    tools: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    structured_messages: list[dict[str, Any]]
    model: str | None


Place = tuple[Any, Any]  # (container, key): container[key] holds the text


def _strings(owner: Any, key: Any, places: list[Place]) -> None:
    """`owner[key]` when a string, or each string of a list there."""
    value = owner.get(key) if isinstance(owner, dict) else None
    if isinstance(value, str):
        places.append((owner, key))
    elif isinstance(value, list):
        places.extend((value, i) for i, item in enumerate(value) if isinstance(item, str))


def _content(owner: dict[str, Any], key: str, places: list[Place]) -> None:
    """A chat content: a string, or the `text` of each text part."""
    value = owner.get(key)
    if isinstance(value, str):
        places.append((owner, key))
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                places.append((part, "text"))


def _chat_request(data: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    messages = data.get("messages")
    tool_calls: list[dict[str, Any]] = []
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                _content(message, "content", places)
                calls = message.get("tool_calls")
                if isinstance(calls, list):
                    tool_calls.extend(call for call in calls if isinstance(call, dict))
        inputs["structured_messages"] = [m for m in messages if isinstance(m, dict)]
    tools = data.get("tools")
    if isinstance(tools, list):
        inputs["tools"] = [tool for tool in tools if isinstance(tool, dict)]
    if tool_calls:
        inputs["tool_calls"] = tool_calls


def _field(name: str) -> Callable[[JSONDict, GenericGuardrailAPIInputs, list[Place]], None]:
    def read(data: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
        _strings(data, name, places)

    return read


def _chat_response(response: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    tool_calls: list[dict[str, Any]] = []
    for choice in response.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            _content(message, "content", places)
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                tool_calls.extend(call for call in calls if isinstance(call, dict))
    if tool_calls:
        inputs["tool_calls"] = tool_calls


def _completion_response(response: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    for choice in response.get("choices") or ():
        if isinstance(choice, dict):
            _strings(choice, "text", places)


def _responses_request(data: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    _strings(data, "instructions", places)
    items = data.get("input")
    if isinstance(items, str):
        places.append((data, "input"))
    tool_calls: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if "content" in item:
            _content(item, "content", places)
            messages.append(item)
        elif item.get("type") == "function_call":
            tool_calls.append(item)
        elif item.get("type") == "function_call_output":
            _strings(item, "output", places)
    tools = data.get("tools")
    if isinstance(tools, list):
        inputs["tools"] = [tool for tool in tools if isinstance(tool, dict)]
    if tool_calls:
        inputs["tool_calls"] = tool_calls
    if messages:
        inputs["structured_messages"] = messages


def _responses_response(response: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    tool_calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            tool_calls.append(item)
        _content(item, "content", places)
    if tool_calls:
        inputs["tool_calls"] = tool_calls


def _blocks(owner: dict[str, Any], key: str, places: list[Place], tool_calls: list[dict[str, Any]]) -> None:
    """Messages content: a string, text blocks, tool results' contents; tool_use blocks are tool calls."""
    value = owner.get(key)
    if isinstance(value, str):
        places.append((owner, key))
        return
    for block in value if isinstance(value, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            places.append((block, "text"))
        elif kind == "tool_result":
            _blocks(block, "content", places, tool_calls)
        elif kind == "tool_use":
            tool_calls.append(block)


def _messages_request(data: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    tool_calls: list[dict[str, Any]] = []
    _blocks(data, "system", places, tool_calls)
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                _blocks(message, "content", places, tool_calls)
        inputs["structured_messages"] = [m for m in messages if isinstance(m, dict)]
    tools = data.get("tools")
    if isinstance(tools, list):
        inputs["tools"] = [tool for tool in tools if isinstance(tool, dict)]
    if tool_calls:
        inputs["tool_calls"] = tool_calls


def _messages_response(response: JSONDict, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
    tool_calls: list[dict[str, Any]] = []
    _blocks(response, "content", places, tool_calls)
    if tool_calls:
        inputs["tool_calls"] = tool_calls


Reader = Callable[[JSONDict, GenericGuardrailAPIInputs, list[Place]], None]
_PROMPT = _field("prompt")
_INPUT = _field("input")
_REQUEST_READERS: dict[str, Reader] = {
    "completion": _chat_request,
    "text_completion": _PROMPT,
    "embeddings": _INPUT,
    "moderation": _INPUT,
    "image_generation": _PROMPT,
    "audio_transcription": _PROMPT,
    "responses": _responses_request,
    "anthropic_messages": _messages_request,
}
_RESPONSE_READERS: dict[str, Reader] = {
    "completion": _chat_response,
    "text_completion": _completion_response,
    "responses": _responses_response,
    "anthropic_messages": _messages_response,
}
# LiteLLM's proxy names of the same call types
_PROXY_NAMES = {
    "acompletion": "completion",
    "atext_completion": "text_completion",
    "aembedding": "embeddings",
    "amoderation": "moderation",
    "aimage_generation": "image_generation",
    "atranscription": "audio_transcription",
    "aresponses": "responses",
}


def _documented(call_type: str) -> str:
    return _PROXY_NAMES.get(call_type, call_type)


class GuardrailInputs:
    """The inputs handed to `apply_guardrail`, and where each text came from."""

    __slots__ = ("inputs", "places")

    def __init__(self, inputs: GenericGuardrailAPIInputs, places: list[Place]) -> None:
        self.inputs = inputs
        self.places = places

    @property
    def has_content(self) -> bool:
        """Whether there is anything to check: a text, a tool or a tool call."""
        return bool(self.places or self.inputs.get("tools") or self.inputs.get("tool_calls"))

    @classmethod
    def _read(cls, readers: dict[str, Reader], source: JSONDict, call_type: str) -> GuardrailInputs | None:
        reader = readers.get(_documented(call_type))
        if reader is None:
            return None
        inputs: GenericGuardrailAPIInputs = {}
        places: list[Place] = []
        reader(source, inputs, places)
        inputs["texts"] = [owner[key] for owner, key in places]
        model = source.get("model")
        inputs["model"] = model if isinstance(model, str) else None
        return cls(inputs, places)

    @classmethod
    def of_request(cls, data: JSONDict, call_type: str) -> GuardrailInputs | None:
        """The request's inputs; None for a call type without a reader."""
        return cls._read(_REQUEST_READERS, data, call_type)

    @classmethod
    def of_response(cls, response: JSONDict, call_type: str) -> GuardrailInputs | None:
        """An answer's inputs; None for a call type whose answers hold no text (embeddings, images)."""
        return cls._read(_RESPONSE_READERS, response, call_type)

    def write_back(self, returned: Any) -> bool:
        """Put the returned texts where they came from; True when one changed. A returned list of another
        length than what was handed out cannot be placed: ValueError."""
        if not isinstance(returned, dict):
            return False
        texts = returned.get("texts")
        if texts is None:
            return False
        if not isinstance(texts, list) or len(texts) != len(self.places):
            raise ValueError(
                f"apply_guardrail returned {len(texts) if isinstance(texts, list) else type(texts).__name__} "
                f"texts for {len(self.places)}: return one text for each text it was given"
            )
        changed = False
        for (owner, key), text in zip(self.places, texts, strict=True):
            if not isinstance(text, str):
                raise ValueError(f"apply_guardrail returned a {type(text).__name__} among its texts")
            if owner[key] != text:
                owner[key] = text
                changed = True
        return changed

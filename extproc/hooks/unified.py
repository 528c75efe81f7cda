"""`UnifiedGuardrail`: the hooks of a guardrail that implements LiteLLM's unified `apply_guardrail`.

For each event the guardrail runs on, the matching hook hands `apply_guardrail` the texts of the request
or the answer (extproc/api/guardrail_inputs.py) and writes what it returns back:
- pre_call (`async_pre_call_hook`): the request's texts, `input_type="request"`; changes go upstream.
- during_call (`async_moderation_hook`): the same, beside the upstream call; only a refusal counts.
- post_call (`async_post_call_success_hook`): the answer's texts, `input_type="response"`; changes reach
  the client. Streams (`async_post_call_streaming_iterator_hook`): the chunks are held to the end (within
  `extproc.max_stream_hold_bytes`), the guardrail sees each choice's whole text, and a changed text is
  put in that choice's first text chunk, the others emptied.
A hook the guardrail's class defines itself is used instead of the unified one (extproc/hooks/chain.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from extproc.api.guardrail_inputs import GuardrailInputs
from extproc.api.sse import SSEDecoder, encode_named
from extproc.api.views import unwrap
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.guardrail import CustomGuardrail
from extproc.types import HookKind, JSONDict

# The hooks this adapter gives a guardrail, per event.
UNIFIED_KINDS = {
    HookKind.PRE_CALL: "pre_call",
    HookKind.MODERATION: "during_call",
    HookKind.POST_CALL_SUCCESS: "post_call",
    HookKind.POST_CALL_STREAMING_ITERATOR: "post_call",
}


def _response_request_data(request_data: JSONDict, response: JSONDict) -> JSONDict:
    """What `request_data` holds for an answer: the request's data with the answer under "response"."""
    return {**request_data, "response": response}


class UnifiedGuardrail(CustomLogger):
    """Adapts `apply_guardrail` to the hook methods the chain calls."""

    def __init__(self, guardrail: CustomGuardrail) -> None:
        super().__init__()
        self.guardrail = guardrail

    async def _request(self, data: JSONDict, call_type: str, write: bool) -> None:
        found = GuardrailInputs.of_request(data, call_type)
        if found is None or not found.has_content:
            return
        returned = await self.guardrail.apply_guardrail(found.inputs, data, "request", None)
        if write:
            found.write_back(returned)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: str
    ) -> Any:
        await self._request(data, call_type, write=True)
        return data

    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, call_type: str
    ) -> Any:
        await self._request(data, call_type, write=False)

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        answer = unwrap(response)
        if not isinstance(answer, dict):
            return None
        found = GuardrailInputs.of_response(answer, _answer_kind(answer))
        if found is None or not found.has_content:
            return None
        returned = await self.guardrail.apply_guardrail(
            found.inputs, _response_request_data(data, answer), "response", None
        )
        found.write_back(returned)
        return None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: AsyncIterator[Any], request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        held = [_Held(item) async for item in response]
        texts: dict[int, list[tuple[_Held, JSONDict, str]]] = {}  # index -> where its text pieces are
        for held_item in held:
            for index, holder, key in _text_slots(held_item.chunk):
                texts.setdefault(index, []).append((held_item, holder, key))
        if texts:
            order = sorted(texts)
            whole = ["".join(holder[key] for _, holder, key in texts[i]) for i in order]
            answer = {"choices": [{"index": i, "text": t} for i, t in zip(order, whole, strict=True)]}
            returned = await self.guardrail.apply_guardrail(
                {"texts": list(whole), "model": request_data.get("model")},
                _response_request_data(request_data, answer),
                "response",
                None,
            )
            new_texts = returned.get("texts") if isinstance(returned, dict) else None
            if isinstance(new_texts, list) and len(new_texts) == len(order):
                for i, old, new in zip(order, whole, new_texts, strict=True):
                    if isinstance(new, str) and new != old:
                        for n, (held_item, holder, key) in enumerate(texts[i]):
                            holder[key] = new if n == 0 else ""
                            held_item.changed = True
        for held_item in held:
            yield held_item.out()


class _Held:
    """A stream item held until the guardrail has seen the whole text: a chunk (a view), or an SSE frame's
    bytes (Messages), decoded to read and re-encoded only if its text changed."""

    __slots__ = ("changed", "chunk", "item", "name")

    def __init__(self, item: Any) -> None:
        self.item, self.changed, self.name = item, False, None
        if isinstance(item, bytes | bytearray):
            events = SSEDecoder().feed(bytes(item)) or SSEDecoder().flush()
            event = events[0] if events else None
            try:
                parsed = event.json() if event is not None else None
            except ValueError:
                parsed = None
            self.chunk = parsed if isinstance(parsed, dict) else None
            self.name = event.event if event is not None else None
        else:
            chunk = unwrap(item)
            self.chunk = chunk if isinstance(chunk, dict) else None

    def out(self) -> Any:
        if self.changed and isinstance(self.item, bytes | bytearray) and self.chunk is not None:
            return encode_named(self.name or str(self.chunk.get("type")), self.chunk)
        return self.item


def _text_slots(chunk: JSONDict | None) -> list[tuple[int, JSONDict, str]]:
    """Where a stream event holds answer text: (choice or block index, the dict, its key)."""
    if chunk is None:
        return []
    kind = chunk.get("type")
    if kind == "response.output_text.delta" and isinstance(chunk.get("delta"), str):  # Responses
        index = chunk.get("output_index", 0)
        return [(index if isinstance(index, int) else 0, chunk, "delta")]
    if kind == "content_block_delta":  # Messages
        delta = chunk.get("delta")
        if (
            isinstance(delta, dict)
            and delta.get("type") == "text_delta"
            and isinstance(delta.get("text"), str)
        ):
            index = chunk.get("index", 0)
            return [(index if isinstance(index, int) else 0, delta, "text")]
        return []
    slots = []
    for choice in chunk.get("choices") or ():  # chat and text completions
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        delta = choice.get("delta")
        holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
        if isinstance(holder.get(key), str):
            slots.append((index if isinstance(index, int) else 0, holder, key))
    return slots


def _answer_kind(answer: JSONDict) -> str:
    """Which call type's reader an answer needs, told by its shape (success hooks get no call type)."""
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return "completion" if "message" in choices[0] else "text_completion"
    if isinstance(answer.get("output"), list):
        return "responses"
    if answer.get("type") == "message":
        return "anthropic_messages"
    return ""

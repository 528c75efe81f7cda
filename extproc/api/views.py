"""Attribute-and-item views over decoded JSON, so hooks written against LiteLLM's pydantic responses work.

`response.choices[0].message.content += "!"` and `response["choices"][0]["message"]["content"]` both
read and write the same underlying dicts and lists: nothing is copied, so the sidecar sees every edit.
A missing field reads as None, as an unset pydantic field does.

A JSON object with `choices` is a completion, and its view is one of LiteLLM's response classes, picked
by shape: `ModelResponseStream` for a chat chunk (`object: chat.completion.chunk`), `ModelResponse` for
anything else (chat and text completions). Its choices, messages, deltas and usage are `Choices` /
`StreamingChoices`, `Message` / `Delta` and `Usage` views, so `isinstance` checks a LiteLLM hook makes
hold. The same classes are constructible with LiteLLM's keyword arguments and defaults (an id, `created`,
one empty choice); a constructed object is a view over the dict it built, so returning one from a hook
replaces the answer with that dict.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import orjson


def wrap(value: Any) -> Any:
    """A view for dicts and lists; other values as they are."""
    if isinstance(value, dict):
        if value.get("object") == "chat.completion.chunk":
            return _ModelResponseStreamView(value)
        if "choices" in value:
            return _ModelResponseView(value)
        return ObjectView(value)
    if isinstance(value, list):
        return ListView(value)
    return value


def unwrap(value: Any) -> Any:
    """The plain JSON behind a view (or a pydantic-like object's `model_dump()`), else the value."""
    if isinstance(value, ObjectView | ListView):
        return value._raw
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump()
    return value


class ObjectView:
    """A JSON object seen as an object with attributes and as a mapping."""

    __slots__ = ("_raw",)
    _raw: dict[str, Any]

    def __init__(self, raw: dict[str, Any]) -> None:
        object.__setattr__(self, "_raw", raw)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return wrap(self._raw.get(name))

    def __setattr__(self, name: str, value: Any) -> None:
        self._raw[name] = unwrap(value)

    def __delattr__(self, name: str) -> None:
        self._raw.pop(name, None)

    def __getitem__(self, key: str) -> Any:
        return wrap(self._raw[key])

    def __setitem__(self, key: str, value: Any) -> None:
        self._raw[key] = unwrap(value)

    def __delitem__(self, key: str) -> None:
        del self._raw[key]

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __eq__(self, other: object) -> bool:
        return bool(self._raw == unwrap(other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw!r})"

    def get(self, key: str, default: Any = None) -> Any:
        return wrap(self._raw.get(key, default))

    def keys(self) -> Any:
        return self._raw.keys()

    def values(self) -> list[Any]:
        return [wrap(v) for v in self._raw.values()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, wrap(v)) for k, v in self._raw.items()]

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return self._raw

    def model_dump_json(self, **_: Any) -> str:
        return orjson.dumps(self._raw).decode()

    json = model_dump_json
    dict = model_dump


class ListView:
    """A JSON array whose items are seen through views."""

    __slots__ = ("_raw",)
    _raw: list[Any]

    def __init__(self, raw: list[Any]) -> None:
        self._raw = raw

    def __getitem__(self, index: int) -> Any:
        return wrap(self._raw[index])

    def __setitem__(self, index: int, value: Any) -> None:
        self._raw[index] = unwrap(value)

    def __delitem__(self, index: int) -> None:
        del self._raw[index]

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[Any]:
        return (wrap(v) for v in self._raw)

    def __eq__(self, other: object) -> bool:
        return bool(self._raw == unwrap(other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListView({self._raw!r})"

    def append(self, value: Any) -> None:
        self._raw.append(unwrap(value))

    def insert(self, index: int, value: Any) -> None:
        self._raw.insert(index, unwrap(value))

    def pop(self, index: int = -1) -> Any:
        return wrap(self._raw.pop(index))


ViewOf = Callable[[dict[str, Any]], Any]  # makes the view of one kind over an existing dict


def _view(kind: ViewOf, value: Any) -> Any:
    """A dict as `kind`, a list as views of `kind`, anything else as usual."""
    if type(value) is dict:
        return kind(value)
    if type(value) is list:
        return TypedListView(value, kind)
    return wrap(value)


class TypedListView(ListView):
    """A JSON array whose object items are all seen as one view class (an answer's choices)."""

    __slots__ = ("_kind",)

    def __init__(self, raw: list[Any], kind: ViewOf) -> None:
        self._raw = raw
        self._kind = kind

    def __getitem__(self, index: int) -> Any:
        return _view(self._kind, self._raw[index])

    def __iter__(self) -> Iterator[Any]:
        return (_view(self._kind, v) for v in self._raw)

    def pop(self, index: int = -1) -> Any:
        return _view(self._kind, self._raw.pop(index))


class ShapedView(ObjectView):
    """A view whose fields named in `FIELDS` are seen through the view class of their shape."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, ViewOf]] = {}

    def _field(self, name: str, value: Any) -> Any:
        kind = self.FIELDS.get(name)
        return wrap(value) if kind is None else _view(kind, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._field(name, self._raw.get(name))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):  # LiteLLM's private attributes (`_hidden_params`) never reach the JSON
            object.__setattr__(self, name, value)
        else:
            self._raw[name] = unwrap(value)

    def __getitem__(self, key: str) -> Any:
        return self._field(key, self._raw[key])

    def get(self, key: str, default: Any = None) -> Any:
        return self._field(key, self._raw.get(key, default))

    def values(self) -> list[Any]:
        return [self._field(k, v) for k, v in self._raw.items()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, self._field(k, v)) for k, v in self._raw.items()]


def _view_class(cls: type[ShapedView]) -> ViewOf:
    """`cls` as a view over an existing dict: a subclass (so `isinstance` holds, and the name is the
    same) whose constructor only stores the dict, as cheap as a plain `ObjectView`."""
    namespace = {
        "__slots__": (),
        "__init__": ObjectView.__init__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": f"A `{cls.__name__}` over a decoded JSON object (nothing copied, no defaults added).",
    }
    view: ViewOf = type(cls.__name__, (cls,), namespace)
    return view


def _plain(value: Any) -> dict[str, Any]:
    """A constructor argument (a view, a pydantic-like object or a dict) as a plain dict."""
    raw = unwrap(value)
    if not isinstance(raw, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return raw


def _extras(params: dict[str, Any]) -> dict[str, Any]:
    """Extra keyword arguments as JSON fields; unset (None) ones are left out, as LiteLLM leaves them."""
    return {key: unwrap(value) for key, value in params.items() if value is not None}


def _generated_id() -> str:
    return f"chatcmpl-{uuid.uuid4()}"


class Message(ShapedView):
    """An answer's message (LiteLLM's `Message`): `content`, `role` (default assistant), tool calls."""

    __slots__ = ()

    def __init__(
        self,
        content: str | None = None,
        role: str = "assistant",
        function_call: Any = None,
        tool_calls: list[Any] | None = None,
        **params: Any,
    ) -> None:
        raw: dict[str, Any] = {
            "content": content,
            "role": role or "assistant",
            "tool_calls": [_plain(call) for call in tool_calls] if tool_calls else None,
            "function_call": None if function_call is None else _plain(function_call),
        }
        object.__setattr__(self, "_raw", raw | _extras(params))

    def json(self, **_: Any) -> dict[str, Any]:  # type: ignore[override]
        """LiteLLM's `Message.json()` is its `model_dump()`: a dict."""
        return self._raw


class Delta(ShapedView):
    """A stream chunk's change to the message (LiteLLM's `Delta`)."""

    __slots__ = ()

    def __init__(
        self,
        content: str | None = None,
        role: str | None = None,
        function_call: Any = None,
        tool_calls: list[Any] | None = None,
        **params: Any,
    ) -> None:
        calls = None
        if isinstance(tool_calls, list):
            calls = []
            for position, call in enumerate(tool_calls):
                plain = dict(_plain(call))
                plain.setdefault("index", position)
                plain["type"] = plain.get("type") or "function"
                calls.append(plain)
        raw: dict[str, Any] = {
            "content": content,
            "role": role,
            "function_call": None if function_call is None else _plain(function_call),
            "tool_calls": calls,
        }
        object.__setattr__(self, "_raw", raw | _extras(params))


_MessageView = _view_class(Message)
_DeltaView = _view_class(Delta)


class Usage(ShapedView):
    """Token counts (LiteLLM's `Usage`); counts not given are 0."""

    __slots__ = ()

    def __init__(
        self,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        total_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        **params: Any,
    ) -> None:
        raw: dict[str, Any] = {
            "prompt_tokens": prompt_tokens or 0,
            "completion_tokens": completion_tokens or 0,
            "total_tokens": total_tokens or 0,
        }
        extras = _extras(params)
        if reasoning_tokens:
            details = dict(extras.get("completion_tokens_details") or {})
            details.setdefault("reasoning_tokens", reasoning_tokens)
            extras["completion_tokens_details"] = details
        object.__setattr__(self, "_raw", raw | extras)


_UsageView = _view_class(Usage)


class Choices(ShapedView):
    """One choice of an answer (LiteLLM's `Choices`): finish reason (default stop), index, message."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, ViewOf]] = {"message": _MessageView}

    def __init__(
        self,
        finish_reason: str | None = None,
        index: int | None = 0,
        message: Any = None,
        logprobs: Any = None,
        **params: Any,
    ) -> None:
        if message is None:
            message_raw = Message()._raw
        elif isinstance(message, Message):
            message_raw = message._raw
        else:
            message_raw = Message(**_plain(message))._raw
        raw: dict[str, Any] = {
            "finish_reason": finish_reason or "stop",
            "index": 0 if index is None else index,
            "message": message_raw,
        }
        if logprobs is not None:
            raw["logprobs"] = unwrap(logprobs)
        object.__setattr__(self, "_raw", raw | _extras(params))


_ChoicesView = _view_class(Choices)


class StreamingChoices(ShapedView):
    """One choice of a stream chunk (LiteLLM's `StreamingChoices`): finish reason, index, delta."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, ViewOf]] = {"delta": _DeltaView}

    def __init__(
        self,
        finish_reason: str | None = None,
        index: int = 0,
        delta: Any = None,
        logprobs: Any = None,
        **params: Any,
    ) -> None:
        params.pop("message", None)
        if delta is None:
            delta_raw = Delta()._raw
        elif isinstance(delta, Delta):
            delta_raw = delta._raw
        else:
            delta_raw = Delta(**_plain(delta))._raw
        raw: dict[str, Any] = {
            "finish_reason": finish_reason or None,
            "index": index,
            "delta": delta_raw,
            "logprobs": unwrap(logprobs),
        }
        object.__setattr__(self, "_raw", raw | _extras(params))


_StreamingChoicesView = _view_class(StreamingChoices)


def _choices(items: Any, kind: type[Choices] | type[StreamingChoices]) -> list[Any]:
    if not isinstance(items, list | ListView):
        return [kind()._raw]
    return [item._raw if isinstance(item, kind) else kind(**_plain(item))._raw for item in items]


def _usage(usage: Any) -> dict[str, Any]:
    return usage._raw if isinstance(usage, Usage) else Usage(**_plain(usage))._raw


class CompletionView(ShapedView):
    """What both response classes share: LiteLLM's private `_hidden_params`, and `json()` as a dict."""

    __slots__ = ("_hidden",)

    @property
    def _hidden_params(self) -> dict[str, Any]:
        try:
            return object.__getattribute__(self, "_hidden")  # type: ignore[no-any-return]
        except AttributeError:
            hidden: dict[str, Any] = {}
            object.__setattr__(self, "_hidden", hidden)
            return hidden

    @_hidden_params.setter
    def _hidden_params(self, value: dict[str, Any]) -> None:
        object.__setattr__(self, "_hidden", value)

    def json(self, **_: Any) -> dict[str, Any]:  # type: ignore[override]
        """LiteLLM's response `json()` is its `model_dump()`: a dict."""
        return self._raw


class ModelResponse(CompletionView):
    """A whole answer (LiteLLM's `ModelResponse`); hooks receive chat and text completions as one."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, ViewOf]] = {"choices": _ChoicesView, "usage": _UsageView}

    def __init__(
        self,
        id: str | None = None,
        choices: list[Any] | None = None,
        created: int | None = None,
        model: str | None = None,
        object: str | None = None,
        system_fingerprint: str | None = None,
        usage: Any = None,
        stream: bool | None = None,
        stream_options: Any = None,
        response_ms: float | None = None,
        hidden_params: dict[str, Any] | None = None,
        **params: Any,
    ) -> None:
        params.pop("_response_headers", None)
        raw: dict[str, Any] = {
            "id": id or _generated_id(),
            "choices": _choices(choices, Choices),
            "created": int(time.time()) if created is None else created,
            "model": model,
            "object": "chat.completion",
            "system_fingerprint": system_fingerprint,
        }
        if usage is not None:
            raw["usage"] = _usage(usage)
        raw.update({key: unwrap(value) for key, value in params.items()})
        ShapedView.__setattr__(self, "_raw", raw)
        if hidden_params:
            self._hidden_params = hidden_params


class ModelResponseStream(CompletionView):
    """One chunk of a streamed chat answer (LiteLLM's `ModelResponseStream`)."""

    __slots__ = ()
    FIELDS: ClassVar[dict[str, ViewOf]] = {"choices": _StreamingChoicesView, "usage": _UsageView}

    def __init__(
        self,
        choices: list[Any] | None = None,
        id: str | None = None,
        created: int | None = None,
        provider_specific_fields: dict[str, Any] | None = None,
        **params: Any,
    ) -> None:
        usage = params.pop("usage", None)
        params.pop("object", None)
        raw: dict[str, Any] = {
            "id": id or _generated_id(),
            "created": int(time.time()) if created is None else created,
            "model": params.pop("model", None),
            "object": "chat.completion.chunk",
            "choices": _choices(choices, StreamingChoices),
        }
        if usage is not None:
            raw["usage"] = _usage(usage)
        if provider_specific_fields is not None:
            raw["provider_specific_fields"] = provider_specific_fields
        raw.update({key: unwrap(value) for key, value in params.items()})
        ShapedView.__setattr__(self, "_raw", raw)


_ModelResponseView = _view_class(ModelResponse)
_ModelResponseStreamView = _view_class(ModelResponseStream)


class ResponsesAPIResponse(ShapedView):
    """A whole Responses API answer (LiteLLM's `ResponsesAPIResponse`), with `output_text`: the text of
    its `output_text` parts, joined, as OpenAI's SDK computes it. Setting it puts the new text in the
    first part and empties the others."""

    __slots__ = ()

    def _text_parts(self) -> list[dict[str, Any]]:
        parts = []
        for item in self._raw.get("output") or ():
            if isinstance(item, dict) and item.get("type") == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and part.get("type") == "output_text":
                        parts.append(part)
        return parts

    @property
    def output_text(self) -> str:
        return "".join(str(part.get("text") or "") for part in self._text_parts())

    @output_text.setter
    def output_text(self, text: str) -> None:
        parts = self._text_parts()
        if not parts:
            raise ValueError("the response has no output_text part to hold the text")
        for index, part in enumerate(parts):
            part["text"] = text if index == 0 else ""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "output_text":
            object.__setattr__(self, name, value)
        else:
            ShapedView.__setattr__(self, name, value)


ResponsesAPIResponseView = _view_class(ResponsesAPIResponse)

"""Attribute-and-item views over decoded JSON, so hooks written against LiteLLM's pydantic responses work.

`response.choices[0].message.content += "!"` and `response["choices"][0]["message"]["content"]` both
read and write the same underlying dicts and lists: nothing is copied, so the sidecar sees every edit.
A missing field reads as None, as an unset pydantic field does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson


def wrap(value: Any) -> Any:
    """A view for dicts and lists; other values as they are."""
    if isinstance(value, dict):
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

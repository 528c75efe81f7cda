"""Body codecs: bytes in, a decoded `data` dict out, and back only when a hook changed something."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import orjson

from extproc.multipart import MultipartBody, MultipartError
from extproc.types import JSONDict


class BodyError(Exception):
    """A body the sidecar cannot decode; `status` and `message` go into the error envelope."""

    def __init__(self, status: int, message: str, param: str | None = "request_body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class Codec(Protocol):
    """Decodes a body once; encodes `data` back into the same wire format."""

    def accepts(self, content_type: str) -> bool: ...
    def decode(self, body: bytes, content_type: str) -> JSONDict: ...
    def encode(self, data: JSONDict, content_type: str) -> bytes: ...


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
# orjson reads integers beyond 64 bits as floats; bodies that may hold one take the exact stdlib path.
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_exact(body: bytes) -> Any:
    """Decode JSON without losing integer precision; NaN and Infinity are refused, as orjson does."""
    if _LONG_DIGITS.search(body) is None:
        return orjson.loads(body)
    return json.loads(body, parse_constant=_no_constants)


def dumps_exact(data: Any) -> bytes:
    """orjson, or the stdlib for what orjson cannot write (integers beyond 64 bits)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects, with string contents skipped."""
    depth = deepest = 0
    for char in _STRINGS.sub(b'""', body):
        if char == 0x7B or char == 0x5B:  # { [
            depth += 1
            if depth > deepest:
                deepest = depth
        elif char == 0x7D or char == 0x5D:  # } ]
            depth -= 1
    return deepest


class JsonCodec:
    """`application/json` bodies (a missing content-type is taken as JSON, as OpenAI's SDKs send it)."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth

    def accepts(self, content_type: str) -> bool:
        media = content_type.partition(";")[0].strip().lower()
        return media in ("", "application/json") or media.endswith("+json")

    def decode(self, body: bytes, content_type: str) -> JSONDict:
        if not body.strip():
            raise BodyError(400, "Invalid JSON payload: the request body is empty")
        # Brackets can only nest as deep as there are brackets: scan precisely only when it matters.
        if body.count(b"{") + body.count(b"[") > self.max_depth and json_depth(body) > self.max_depth:
            raise BodyError(400, f"Invalid JSON payload: nested deeper than {self.max_depth} levels")
        try:
            data = loads_exact(body)
        except ValueError as exc:  # orjson's JSONDecodeError, the stdlib's, and UnicodeDecodeError
            raise BodyError(400, f"Invalid JSON payload: {exc}") from None
        if not isinstance(data, dict):
            raise BodyError(400, f"Invalid JSON payload: expected an object, got {_json_kind(data)}")
        return data

    def encode(self, data: JSONDict, content_type: str) -> bytes:
        return dumps_exact(data)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


class MultipartCodec:
    """`multipart/form-data` (audio): text fields decoded, the file kept as bytes, re-used on encode."""

    def accepts(self, content_type: str) -> bool:
        return content_type.partition(";")[0].strip().lower() == "multipart/form-data"

    def decode(self, body: bytes, content_type: str) -> JSONDict:
        try:
            return MultipartBody.parse(body, content_type).to_data()
        except MultipartError as exc:
            raise BodyError(400, f"Invalid multipart payload: {exc}") from None

    def encode(self, data: JSONDict, content_type: str) -> bytes:
        return MultipartBody.from_data(data, content_type).encode()

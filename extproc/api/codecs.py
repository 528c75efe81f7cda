"""Body codecs: bytes in, a decoded `data` dict out, and back only when a hook changed something."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import orjson

from extproc.api.multipart import MultipartBody
from extproc.errors import BodyError, MultipartError
from extproc.types import JSONDict


class Codec(Protocol):
    """Decodes a body once; encodes `data` back into the same wire format."""

    def accepts(self, content_type: str) -> bool: ...
    def decode(self, body: bytes, content_type: str) -> JSONDict: ...
    def encode(self, data: JSONDict, content_type: str) -> bytes: ...


# orjson reads integers beyond 64 bits as floats; a body that may hold one (a run of 19 digits) is decoded
# again, exactly, by the stdlib, once orjson has validated it.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def loads_exact(body: bytes) -> Any:
    """Strict JSON (orjson's rules: no NaN/Infinity, no BOM, valid UTF-8, no lone surrogates, nesting up to
    1024) with integers of any size kept exact; raises ValueError."""
    data = orjson.loads(body)
    if _LONG_DIGITS.search(body) is None:
        return data
    try:
        return json.loads(body)  # the same document orjson accepted, now with exact integers
    except RecursionError:
        return data


def dumps_exact(data: Any) -> bytes:
    """orjson, or the stdlib for what orjson cannot write (integers beyond 64 bits)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, separators=(",", ":")).encode()


def depth_of(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded document (iterative: no recursion limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


class JsonCodec:
    """`application/json` bodies (a missing content-type is taken as JSON, as OpenAI's SDKs send it)."""

    def __init__(self, max_depth: int, max_nodes: int = 1_000_000) -> None:
        self.max_depth = max_depth
        self.max_nodes = max_nodes

    def accepts(self, content_type: str) -> bool:
        media = content_type.partition(";")[0].strip().lower()
        return media in ("", "application/json") or media.endswith("+json")

    def decode(self, body: bytes, content_type: str) -> JSONDict:
        if not body.strip():
            raise BodyError(400, "Invalid JSON payload: the request body is empty")
        # Every array and object costs memory and time to build (and to scan, for every hook): a body of
        # millions of them would hold the event loop for seconds. Counting brackets is a memchr.
        brackets = body.count(b"{") + body.count(b"[")
        if brackets > self.max_nodes:
            raise BodyError(400, f"Invalid JSON payload: more than {self.max_nodes} arrays and objects")
        try:
            data = loads_exact(body)  # linear, and bounded by orjson's own nesting limit
        except ValueError as exc:  # orjson's JSONDecodeError, the stdlib's, UnicodeDecodeError
            raise BodyError(400, f"Invalid JSON payload: {exc}") from None
        if not isinstance(data, dict):
            raise BodyError(400, f"Invalid JSON payload: expected an object, got {_json_kind(data)}")
        # Brackets can only nest as deep as there are brackets: walk the document only when it matters.
        if brackets > self.max_depth and depth_of(data) > self.max_depth:
            raise BodyError(400, f"Invalid JSON payload: nested deeper than {self.max_depth} levels")
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

"""`request_texts`: every user-controlled string of a request, each with a way to write a new value back;
`TextScan`: all of them normalised and joined, so a policy runs each of its patterns once per request.

Where text lives is one table (`_PLACES`): per call type, the top-level fields a client fills with text.
Under those fields every string counts (and every number: a card number needs no quotes), except:
- values of fields that only hold a fixed vocabulary (`role`, `type`, `detail`, `format`), outside a
  tool call's arguments (where any key is the client's own);
- base64 payloads of content parts (`input_audio.data`, `file.file_data`, a `data:` image URL);
- object keys, except inside free-form JSON (`arguments`, `parameters`, `schema`), where a key is text
  the client chose like any value.
A tool call's `arguments` is a JSON document in a string: its strings, numbers and keys are places of
their own, and writing one re-encodes the document, so it stays a valid JSON string.

A new API family adds a row to `_PLACES` (and a key to `_FREE_FORM` if it carries JSON documents).
"""

from __future__ import annotations

import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import orjson

# per call type (both spellings LiteLLM uses), the top-level fields whose contents are text
_CHAT = ("messages", "tools", "functions", "prediction", "response_format")
_PLACES: dict[str, tuple[str, ...]] = {
    "completion": _CHAT,
    "acompletion": _CHAT,
    "text_completion": ("prompt", "suffix"),
    "atext_completion": ("prompt", "suffix"),
    "embeddings": ("input",),
    "aembedding": ("input",),
    "moderation": ("input",),
    "amoderation": ("input",),
    "image_generation": ("prompt",),
    "aimage_generation": ("prompt",),
    "audio_transcription": ("prompt",),
    "atranscription": ("prompt",),
}
_VOCABULARY = frozenset({"role", "type", "detail", "format"})  # upstreams accept only fixed values here
_BINARY = frozenset({("input_audio", "data"), ("file", "file_data")})
_FREE_FORM = frozenset({"arguments", "parameters", "schema"})

SEPARATOR = "\n\x00\n"
"""What `TextScan` puts between places: no whitespace run, word or PII pattern crosses a NUL, and with
`re.MULTILINE` a `^`/`$` still matches at each place's start and end."""


def _format_characters() -> dict[int, None]:
    # Unicode category Cf (zero-width space and joiners, soft hyphen, bidi controls, tags) lives in
    # planes 0, 1 and 14; scanning only those keeps this to milliseconds at import.
    planes = (range(0x20000), range(0xE0000, min(0xE1000, sys.maxunicode + 1)))
    return {code: None for plane in planes for code in plane if unicodedata.category(chr(code)) == "Cf"}


_FORMAT_CHARACTERS = _format_characters()


def normalize_text(text: str) -> str:
    """`text` as policies should read it: format characters (Unicode Cf) removed, then NFKC, so
    fullwidth "forbidden" and "forb\\u200bidden" read "forbidden". ASCII text is returned as it is."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text.translate(_FORMAT_CHARACTERS))


class _Document:
    """A JSON document held in a string field (a tool call's `arguments`), decoded once into `value[0]`."""

    __slots__ = ("key", "owner", "value")

    def __init__(self, owner: Any, key: Any, value: Any) -> None:
        self.owner, self.key, self.value = owner, key, value

    def write_back(self) -> None:
        self.owner[self.key] = orjson.dumps(self.value[0]).decode()


class TextPlace:
    """One user-controlled string (or number) of a request: `text` reads it, `replace` writes it back
    where it stands (a number becomes a string; a key is renamed in place)."""

    __slots__ = ("_document", "_is_key", "_key", "_owner", "text")

    def __init__(
        self, text: str, owner: Any, key: Any, document: _Document | None = None, is_key: bool = False
    ) -> None:
        self.text = text
        self._owner, self._key, self._document, self._is_key = owner, key, document, is_key

    def replace(self, text: str) -> None:
        if text == self.text:
            return
        if self._is_key:
            items = list(self._owner.items())
            self._owner.clear()
            self._owner.update((text if key == self._key else key, value) for key, value in items)
            self._key = text
        else:
            self._owner[self._key] = text
        self.text = text
        if self._document is not None:
            self._document.write_back()


def _decoded(text: str) -> Any:
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # not JSON (or beyond orjson's depth or 64-bit range): plain text
        return None


def _walk(owner: Any, key: Any, places: list[TextPlace]) -> None:
    """Every place under `owner[key]`, iteratively (a decoded document may be deep). A key's place
    comes after the places under it, so renaming the key never strands a write to its value."""
    # (owner, key, parent key, free-form, document), or a key's place once its subtree is done
    stack: list[tuple[Any, Any, Any, bool, _Document | None] | TextPlace] = [(owner, key, None, False, None)]
    while stack:
        item = stack.pop()
        if isinstance(item, TextPlace):
            places.append(item)
            continue
        owner, key, parent, free, document = item
        value = owner[key]
        if isinstance(value, str):
            if document is None and key in _VOCABULARY:
                continue
            if not free and ((parent, key) in _BINARY or (key == "url" and value.startswith("data:"))):
                continue
            inner = _decoded(value) if key in _FREE_FORM and document is None else None
            if isinstance(inner, dict | list):
                holder = _Document(owner, key, [inner])
                stack.append((holder.value, 0, key, True, holder))
            else:
                places.append(TextPlace(value, owner, key, document))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if document is not None or key not in _VOCABULARY:
                places.append(TextPlace(str(value), owner, key, document))
        elif isinstance(value, dict):
            inner_free = free or key in _FREE_FORM
            for name in reversed(list(value)):
                if inner_free and isinstance(name, str):
                    stack.append(TextPlace(name, value, name, document, is_key=True))
                stack.append((value, name, key, inner_free, document))
        elif isinstance(value, list):
            for index in range(len(value) - 1, -1, -1):
                stack.append((value, index, key, free, document))


def request_texts(data: dict[str, Any], call_type: str) -> list[TextPlace]:
    """Every user-controlled text place of a request of `call_type`, as the upstream would read it."""
    places: list[TextPlace] = []
    for field in _PLACES.get(call_type, ()):
        if field in data:
            _walk(data, field, places)
    return places


class TextScan:
    """The places' texts, normalised (`normalize_text`) and joined with `SEPARATOR` into `text`, so a
    pattern runs once per request; `locate` maps a match back to its place."""

    __slots__ = ("normalized", "places", "starts", "text")

    def __init__(self, places: Sequence[TextPlace]) -> None:
        self.places = places
        self.normalized = [normalize_text(place.text) for place in places]
        self.text = SEPARATOR.join(self.normalized)
        self.starts: list[int] = []
        offset = 0
        for text in self.normalized:
            self.starts.append(offset)
            offset += len(text) + len(SEPARATOR)

    def locate(self, start: int, end: int) -> tuple[int, int, int] | None:
        """(place index, start, end) in that place's normalised text; None for a span across places."""
        index = bisect_right(self.starts, start) - 1
        if index < 0:
            return None
        base = self.starts[index]
        if end - base > len(self.normalized[index]):
            return None
        return index, start - base, end - base

"""`request_texts`: every user-controlled string of a request, each with a way to write a new value back;
`TextScan`: all of them normalised and joined, so a policy runs each of its patterns once per request.

Where text lives is one table (`LAYOUTS`): per call type, a `TextLayout` naming the top-level fields a
client fills with text. Under those fields every string counts (and, in free-form JSON, every number:
a card number needs no quotes), except:
- values of fields that only hold a fixed vocabulary (`role`, `type`, `detail`, `format`), outside a
  tool call's arguments (where any key is the client's own);
- base64 payloads of content parts (`input_audio.data`, `file.file_data`, a `data:` image URL);
- object keys, except inside free-form JSON (`arguments`, `parameters`, `schema`), where a key is text
  the client chose like any value.
A tool call's `arguments` is a JSON document in a string: its strings, numbers and keys are places of
their own, and writing one re-encodes the document, so it stays a valid JSON string.

A new API family adds its row to `LAYOUTS`: its text fields, and where its vocabulary, payload and
free-form fields differ from OpenAI's, its own sets (an Anthropic `tool_use` block's `input` is a
free-form object; a base64 image block keeps its payload in `source.data`).
"""

from __future__ import annotations

import re
import sys
import unicodedata
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.api.codecs import dumps_exact, loads_exact


@dataclass(frozen=True, slots=True)
class TextLayout:
    """Where one call type's requests hold user-controlled text."""

    fields: tuple[str, ...]  # top-level fields whose contents are text
    vocabulary: frozenset[str] = frozenset({"role", "type", "detail", "format"})  # fixed values only
    binary: frozenset[tuple[str, str]] = frozenset({("input_audio", "data"), ("file", "file_data")})
    free_form: frozenset[str] = frozenset({"arguments", "parameters", "schema"})  # keys are text too
    data_urls: frozenset[str] = frozenset({"url"})  # keys whose `data:` URL values are payloads
    opaque: frozenset[str] = frozenset()  # keys whose values are tokens for the upstream, never text


_CHAT = TextLayout(("messages", "tools", "functions", "prediction", "response_format"))
_PROMPT = TextLayout(("prompt", "suffix"))
_INPUT = TextLayout(("input",))
# Responses: input items (messages with input_text parts, function calls and their outputs), instructions,
# tools and the text format's schema; images and files come as `data:` URLs or file data.
_RESPONSES = TextLayout(
    ("input", "instructions", "tools", "text"),
    vocabulary=frozenset({"role", "type", "detail", "format", "status"}),
    free_form=frozenset({"arguments", "parameters", "schema"}),
    data_urls=frozenset({"url", "image_url", "file_data"}),
    opaque=frozenset({"encrypted_content"}),
)
# Messages: content blocks (text, tool_use with its free-form `input`, tool_result), system, tools.
_MESSAGES = TextLayout(
    ("messages", "system", "tools"),
    vocabulary=frozenset({"role", "type", "media_type", "cache_control"}),
    binary=frozenset({("source", "data")}),
    free_form=frozenset({"input", "input_schema"}),
    opaque=frozenset({"signature", "data"}),
)
LAYOUTS: dict[str, TextLayout] = {  # both spellings of each call type LiteLLM uses
    "completion": _CHAT,
    "acompletion": _CHAT,
    "text_completion": _PROMPT,
    "atext_completion": _PROMPT,
    "embeddings": _INPUT,
    "aembedding": _INPUT,
    "moderation": _INPUT,
    "amoderation": _INPUT,
    "image_generation": _PROMPT,
    "aimage_generation": _PROMPT,
    "audio_transcription": _PROMPT,
    "atranscription": _PROMPT,
    "responses": _RESPONSES,
    "aresponses": _RESPONSES,
    "anthropic_messages": _MESSAGES,
}

SEPARATOR = "\n\x00\n"
"""What `TextScan` puts between places: no whitespace run, word or PII pattern crosses a NUL, and with
`re.MULTILINE` a `^`/`$` still matches at each place's start and end. Places hold no NUL of their own:
`normalize_text` removes control characters."""


def _ignored_characters() -> dict[int, None]:
    # Unicode format characters (Cf: zero-width space and joiners, soft hyphen, bidi controls, tags)
    # live in planes 0, 1 and 14; scanning only those keeps this to milliseconds at import. Control
    # characters (Cc) that are not whitespace go too: "forb\x00idden" reads "forbidden".
    planes = (range(0x20000), range(0xE0000, min(0xE1000, sys.maxunicode + 1)))
    ignored = {code for plane in planes for code in plane if unicodedata.category(chr(code)) == "Cf"}
    ignored |= {
        code for code in range(0xA0) if unicodedata.category(chr(code)) == "Cc" and not chr(code).isspace()
    }
    return dict.fromkeys(ignored)


_IGNORED = _ignored_characters()
_ASCII_IGNORED = bytes(code for code in _IGNORED if code < 0x80)


def normalize_text(text: str) -> str:
    """`text` as policies should read it: format and control characters (Unicode Cf, and Cc that are not
    whitespace) removed, then NFKC, so fullwidth "forbidden" and "forb\\u200bidden" read
    "forbidden". Text without such characters and already in NFKC is returned as it is."""
    if text.isascii():  # bytes.translate deletes in C, three times faster than a regex search
        encoded = text.encode("ascii")
        kept = encoded.translate(None, _ASCII_IGNORED)
        return text if len(kept) == len(encoded) else kept.decode("ascii")
    return unicodedata.normalize("NFKC", text.translate(_IGNORED))


class _Document:
    """A JSON document held in a string field (a tool call's `arguments`), decoded once into `value[0]`."""

    __slots__ = ("key", "owner", "value")

    def __init__(self, owner: Any, key: Any, value: Any) -> None:
        self.owner, self.key, self.value = owner, key, value

    def write_back(self) -> None:
        self.owner[self.key] = dumps_exact(self.value[0]).decode()


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
        return loads_exact(text.encode())  # integers beyond 64 bits stay exact when written back
    except ValueError:  # not JSON (or beyond orjson's depth): plain text
        return None


_LONG_LIST = 256
_TEXT_IN_JSON = re.compile(b'"')
_TEXT_OR_LONG_NUMBER_IN_JSON = re.compile(rb'"|\d{7}')


def _nothing_to_read(value: list[Any], free: bool) -> bool:
    """Whether a long list holds no string (and, in free-form JSON, no number of 7+ digits), told by
    encoding it in C: ten million empty arrays are not walked one by one on the event loop."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # not plain JSON (a hook put an object there): walk it
        return False
    return (_TEXT_OR_LONG_NUMBER_IN_JSON if free else _TEXT_IN_JSON).search(encoded) is None


def _walk(owner: Any, key: Any, layout: TextLayout, places: list[TextPlace]) -> None:
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
            if document is None and (key in layout.vocabulary or key in layout.opaque):
                continue
            if not free and (
                (parent, key) in layout.binary or (key in layout.data_urls and value.startswith("data:"))
            ):
                continue
            inner = _decoded(value) if key in layout.free_form and document is None else None
            if isinstance(inner, dict | list):
                holder = _Document(owner, key, [inner])
                stack.append((holder.value, 0, key, True, holder))
            else:
                places.append(TextPlace(value, owner, key, document))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if free and (document is not None or key not in layout.vocabulary):
                places.append(TextPlace(str(value), owner, key, document))
        elif isinstance(value, dict):
            inner_free = free or key in layout.free_form
            for name in reversed(list(value)):
                if inner_free and isinstance(name, str):
                    stack.append(TextPlace(name, value, name, document, is_key=True))
                stack.append((value, name, key, inner_free, document))
        elif isinstance(value, list):
            if len(value) > _LONG_LIST and _nothing_to_read(value, free):
                continue
            for index in range(len(value) - 1, -1, -1):
                entry = value[index]
                if free or isinstance(entry, str | dict) or (entry and isinstance(entry, list)):
                    stack.append((value, index, key, free, document))


def request_texts(data: dict[str, Any], call_type: str) -> list[TextPlace]:
    """Every user-controlled text place of a request of `call_type`, as the upstream would read it."""
    places: list[TextPlace] = []
    layout = LAYOUTS.get(call_type)
    if layout is None:
        return places
    for field in layout.fields:
        if field in data:
            _walk(data, field, layout, places)
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

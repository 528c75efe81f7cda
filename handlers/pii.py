"""PII: mask (or refuse) e-mail addresses, phone numbers, card numbers, IBANs, IP addresses, US SSNs and
API keys in requests, and optionally in answers.

Options (`extproc.handlers."handlers.pii".options`):
- `entities`: `{entity: "mask" | "block"}`; only the entities listed are looked for (default: all, "mask").
- `mask_format`: what a masked value becomes; `{ENTITY}` is the upper-case entity name (default `<{ENTITY}>`).
- `responses`: also mask every listed entity ("block" ones too) in answers, streamed or not.

Looked at: every text place `extproc.request_texts` yields (chat messages of every role with their
content parts, names, tool calls and their JSON arguments, tool and function definitions, completion
prompts, embeddings and moderation inputs, image and transcription prompts), read as `extproc.TextScan`
normalises it: zero-width and other format characters removed, then NFKC, so "a\u200b@b.com" or a
fullwidth card number counts. A place with PII is written back normalised with the PII masked (inside a
tool call's arguments, the JSON string is re-encoded and stays valid); a place without PII is left as
it was. `data["metadata"]["pii"]` counts what was masked per entity (`pii_response` for answers); the
values themselves are never kept.

What counts (precise rather than greedy; on overlaps the earlier entity in `ENTITIES` wins):
- secret: `sk-...` (OpenAI `sk-`, `sk-proj-`, Anthropic `sk-ant-`: 20+ chars mixing upper, lower and
  digits), `AKIA`/`ASIA` + 16 (AWS key id), `gh[pousr]_` + 36+ and `github_pat_...` (GitHub),
  `xox[baprs]-...` (Slack), `AIza` + 35 (Google); and a 32+ char `[A-Za-z0-9_-]` value with letters,
  digits and >= 3 bits/char of entropy right after "key", "token", "secret" or "bearer" (the value is masked).
- email: `local@domain.tld`.
- iban: 2 letters, 2 check digits, 11-30 letters/digits (groups of 4 may be spaced), mod-97 == 1.
- credit_card: 13-19 digits, optionally separated by spaces or dashes, passing the Luhn check.
- us_ssn: `AAA-GG-SSSS` (dashes required) without the never-issued 000/666/9xx areas, 00 group, 0000 serial.
- ipv6: what Python's `ipaddress` accepts (at least two colons); ipv4: a dotted quad of 0-255.
- phone: `+CC` then groups of digits (8-15 digits in all), or `(NNN) NNN-NNNN` / `NNN-NNN-NNNN` /
  `NNN.NNN.NNNN` / `NNN NNN NNNN`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from extproc import (
    CustomLogger,
    DualCache,
    HTTPException,
    TextScan,
    UserAPIKeyAuth,
    request_texts,
    sidecar_metadata,
)

ENTITIES = ("secret", "email", "iban", "credit_card", "us_ssn", "ipv6", "ipv4", "phone")
ACTIONS = ("mask", "block")
HOLD_CHARS = 64  # streams keep this much text back (more than the longest spaced entity) before emitting
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _luhn(text: str) -> bool:
    digits = [int(c) for c in _digits(text)][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return 13 <= len(digits) <= 19 and total % 10 == 0


def _iban(text: str) -> bool:
    code = text.replace(" ", "")
    number = "".join(str(int(c, 36)) for c in code[4:] + code[:4])
    return 15 <= len(code) <= 34 and int(number) % 97 == 1


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return text.strip(":") != ""


def _entropy(text: str) -> float:
    return -sum(n / len(text) * math.log2(n / len(text)) for n in Counter(text).values())


def _random_token(text: str) -> bool:
    return any(c.isalpha() for c in text) and any(c.isdigit() for c in text) and _entropy(text) >= 3.0


def _api_key(text: str) -> bool:
    kinds = (str.isupper, str.islower, str.isdigit)
    return all(any(kind(c) for c in text) for kind in kinds)


# Every pattern starts with a character or class to consume, and checks what precedes it with a
# lookbehind placed after it: the regex engine then skips to candidate characters at C speed instead of
# trying a lookbehind at every position (about ten times faster on prose).
_SECRET_VENDOR = (
    r"(?:AKIA|ASIA)(?<!\w....)[0-9A-Z]{16}\b"  # AWS access key id
    r"|gh[pousr]_(?<!\w....)[A-Za-z0-9]{36,255}\b|github_pat_(?<!\w.{11})[A-Za-z0-9_]{22,255}\b"  # GitHub
    r"|xox[baprs]-(?<!\w.{5})[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza(?<!\w....)[0-9A-Za-z_-]{35}(?![\w-])"  # Google
)
_SECRET_AFTER_KEYWORD = r"(?i:key|token|secret|bearer)s?\b[^\w\n]{1,5}(?P<value>[A-Za-z0-9_-]{32,})(?![\w-])"
_EMAIL = r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63}(?![\w-])"
_IPV6 = (  # candidates only: `ipaddress` decides
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}+(?:[0-9A-Fa-f]{1,4}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?+"
    r"(?![\w:]|\.\w)"
)
# the first octet of an IPv4 address, not right after a word character or a dot
_FIRST_OCTET = r"(?:2(?<![\w.].)(?:5[0-5]|[0-4]\d)|1(?<![\w.].)\d\d|[1-9](?<![\w.].)\d|\d(?<![\w.].))"
_PHONE = (
    r"\+(?<![\w+]\+)[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,6}(?!\w)"
    r"|(?:\((?<![\w+.-]\()\d{3}\) ?|\d(?<![\w+.-]\d)\d\d[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)"
)
_DIGITS = ("\\d",)  # a needle standing for any digit: `\d` also matches non-ASCII digits, which count
_ANY_DIGIT = re.compile(r"\d")


def _phone(text: str) -> bool:
    return 8 <= len(_digits(text)) <= 15


def _holds(text: str, lowered: str, needle: str) -> bool:
    if needle != _DIGITS[0]:
        return needle in lowered
    if text.isascii():  # a few searches in C rather than a regex over the whole text
        return any(digit in text for digit in "0123456789")
    return _ANY_DIGIT.search(text) is not None


# (entity, pattern, check of the masked text or None, whether a failed check may drop trailing groups,
# strings of which the lower-cased text must hold one for the pattern to be worth running)
_RULES: tuple[tuple[str, str, Callable[[str], bool] | None, bool, tuple[str, ...]], ...] = (
    ("secret", r"sk-(?<![\w-]sk-)[A-Za-z0-9_-]{20,}", _api_key, False, ("sk-",)),
    ("secret", _SECRET_VENDOR, None, False, ("akia", "asia", "gh", "github_pat_", "xox", "aiza")),
    ("secret", _SECRET_AFTER_KEYWORD, _random_token, False, ("key", "token", "secret", "bearer")),
    ("email", _EMAIL, None, False, ("@",)),
    ("iban", r"[A-Z][A-Z](?<!\w..)\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b", _iban, True, _DIGITS),
    # not the digits of a (failed) spaced IBAN: `DE89 3704 ...`
    ("credit_card", r"\d(?<![\w-]\d)(?<![A-Z]{2}\d\d \d)(?:[ -]?\d){12,18}(?!\w)", _luhn, False, _DIGITS),
    (
        "us_ssn",
        r"\d{3}(?<![\w-]...)(?<!000)(?<!666)(?<!9..)-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])",
        None,
        False,
        ("-",),
    ),
    ("ipv6", _IPV6, _ipv6, False, (":",)),
    ("ipv4", rf"{_FIRST_OCTET}\.(?:{_OCTET}\.){{2}}{_OCTET}(?!\w|\.\d)", None, False, _DIGITS),
    ("phone", _PHONE, _phone, False, _DIGITS),
)


@dataclass(frozen=True, slots=True)
class _Hit:
    entity: str
    start: int  # what is masked
    end: int
    whole_start: int  # the whole match (with a secret's keyword): never cut apart in streams
    whole_end: int


def _record(data: dict[str, Any], key: str, counts: Counter[str]) -> None:
    if counts:
        metadata = sidecar_metadata(data)
        if metadata is None:  # called without the sidecar's additions (a test, a direct call)
            metadata = data.setdefault("metadata", {})
        if isinstance(metadata, dict):
            previous = metadata.get(key) if isinstance(metadata.get(key), dict) else {}
            metadata[key] = dict(Counter(previous) + counts)


class Handler(CustomLogger):
    """Masks or refuses PII in requests; with `responses: true`, masks it in answers too."""

    def __new__(cls, *args: Any, **options: Any) -> Handler:
        # Answer hooks exist only on the subclass, so without `responses` the sidecar never reads answers.
        if cls is Handler and options.get("responses") is True:
            cls = _ResponseMasking
        return super().__new__(cls)

    def __init__(
        self,
        entities: Mapping[str, str] | None = None,
        mask_format: str = "<{ENTITY}>",
        responses: bool = False,
    ) -> None:
        super().__init__()
        entities = dict.fromkeys(ENTITIES, "mask") if entities is None else entities
        if not isinstance(entities, Mapping) or not entities:
            raise ValueError("entities: expected a non-empty mapping of entity to 'mask' or 'block'")
        for name, action in entities.items():
            if name not in ENTITIES:
                raise ValueError(f"entities: unknown entity {name!r} (known: {', '.join(ENTITIES)})")
            if action not in ACTIONS:
                raise ValueError(f"entities.{name}: {action!r} is neither 'mask' nor 'block'")
        if not isinstance(mask_format, str):
            raise ValueError("mask_format: expected a string such as '<{ENTITY}>'")
        try:
            mask_format.format(ENTITY="EMAIL")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"mask_format: {mask_format!r} may use only {{ENTITY}}: {exc!r}") from None
        if not isinstance(responses, bool):
            raise ValueError(f"responses: expected true or false, not {responses!r}")
        self.actions = dict(entities)
        self.masks = {name: mask_format.format(ENTITY=name.upper()) for name in ENTITIES}
        self.rules = [
            (name, re.compile(pattern), check, trim, needles)
            for name, pattern, check, trim, needles in _RULES
            if name in self.actions
        ]

    def hits(self, text: str) -> list[_Hit]:
        """Every entity found, in text order, never overlapping."""
        lowered = text.lower()
        present: dict[str, bool] = {}  # needle -> found, each looked for at most once
        found: list[_Hit] = []
        taken: list[tuple[int, int]] = []  # spans of `found`, sorted: overlaps checked in log time
        for name, pattern, check, trim, needles in self.rules:
            if not any(present.setdefault(n, _holds(text, lowered, n)) for n in needles):
                continue
            for match in pattern.finditer(text):
                group = "value" if "value" in pattern.groupindex else 0
                start, end = match.span(group)
                while check is not None and not check(text[start:end]):
                    space = text.rfind(" ", start, end)
                    end = space if trim and space > start else start
                    if end == start:
                        break
                at = bisect_left(taken, (start, end))
                free = (at == 0 or taken[at - 1][1] <= start) and (at == len(taken) or end <= taken[at][0])
                if end > start and free:
                    taken.insert(at, (start, end))
                    found.append(_Hit(name, start, end, min(start, match.start()), max(end, match.end())))
        return sorted(found, key=lambda hit: hit.start)

    def mask(self, text: str, hits: list[_Hit], counts: Counter[str]) -> str:
        parts: list[str] = []
        done = 0
        for hit in hits:
            parts += [text[done : hit.start], self.masks[hit.entity]]
            counts[hit.entity] += 1
            done = hit.end
        return "".join([*parts, text[done:]])

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: DualCache, data: dict[str, Any], call_type: str
    ) -> None:
        places = request_texts(data, call_type)
        if not places:
            return
        scan = TextScan(places)  # one pass of each pattern over every text place, normalised
        found: dict[int, list[_Hit]] = {}
        for hit in self.hits(scan.text):
            if self.actions[hit.entity] == "block":
                error = f"Request blocked: it contains {hit.entity}"
                raise HTTPException(status_code=400, detail={"error": error, "entity": hit.entity})
            located = scan.locate(hit.start, hit.end)
            if located is None:  # a match no single place holds cannot be masked: it must not go on
                error = f"Request blocked: it contains {hit.entity} that cannot be masked"
                raise HTTPException(status_code=400, detail={"error": error, "entity": hit.entity})
            index, start, end = located
            found.setdefault(index, []).append(_Hit(hit.entity, start, end, start, end))
        counts: Counter[str] = Counter()
        for index, hits in found.items():  # a place is rewritten (normalised) only where PII was found
            places[index].replace(self.mask(scan.normalized[index], hits, counts))
        _record(data, "pii", counts)


class _ResponseMasking(Handler):
    """`responses: true`: the same masking on answers (`Handler.__new__` picks this class)."""

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, response: Any
    ) -> None:
        counts: Counter[str] = Counter()
        for choice in getattr(response, "choices", None) or ():
            message = getattr(choice, "message", None)
            owner, field = (choice, "text") if message is None else (message, "content")
            text = getattr(owner, field, None)
            if isinstance(text, str):
                setattr(owner, field, self.mask(text, self.hits(text), counts))
        _record(data, "pii_response", counts)

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: UserAPIKeyAuth, response: AsyncIterator[Any], request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        held: dict[int, str] = {}  # per choice: text not sent yet, so no entity is split across chunks
        counts: Counter[str] = Counter()
        last: Any = None
        async for chunk in response:
            last = chunk
            for choice in getattr(chunk, "choices", None) or ():
                self._hold_back(choice, held, counts)
            yield chunk
        rest = {index: self.mask(text, self.hits(text), counts) for index, text in held.items() if text}
        if rest and last is not None:  # the stream ended without a finish_reason: send what was held
            chat = getattr(last, "object", None) != "text_completion"
            choices = [
                {"index": i, "delta": {"content": t}} if chat else {"index": i, "text": t}
                for i, t in rest.items()
            ]
            fields = {name: getattr(last, name, None) for name in ("id", "object", "created", "model")}
            yield {**fields, "choices": [{**c, "finish_reason": None} for c in choices]}
        _record(request_data, "pii_response", counts)

    def _hold_back(self, choice: Any, held: dict[int, str], counts: Counter[str]) -> None:
        delta = getattr(choice, "delta", None)
        owner, field = (choice, "text") if delta is None else (delta, "content")
        text = getattr(owner, field, None)
        index = getattr(choice, "index", None) or 0
        buffer = held.get(index, "") + (text if isinstance(text, str) else "")
        hits = self.hits(buffer)
        cut = len(buffer)
        if getattr(choice, "finish_reason", None) is None:
            limit = len(buffer) - HOLD_CHARS
            cut = max(buffer.rfind(c, 0, limit) for c in " \t\n") + 1 if limit > 0 else 0
            for hit in reversed(hits):
                if hit.whole_start < cut < hit.whole_end:
                    cut = hit.whole_start
        out = self.mask(buffer[:cut], [hit for hit in hits if hit.end <= cut], counts)
        held[index] = buffer[cut:]
        if isinstance(text, str) or out:
            setattr(owner, field, out)

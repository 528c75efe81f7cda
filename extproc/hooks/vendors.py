"""Vendor guardrail names (`guardrails[].litellm_params.guardrail: <name>`) the sidecar has an equivalent
for, mapped to a built-in handler and its options; every other vendor name fails at load, named.

A name is mapped only where the built-in does what LiteLLM's guardrail does, on the events the entry
asks for; an option or an event the built-in cannot honour stops the config with an error naming it
(a guardrail that silently checks less is worse than none). The loader builds the built-in with the
options a translation returns and gates it by the entry's `mode` and `default_on` itself, so a
translation returns only the built-in's own options.

- `generic_guardrail_api` -> `handlers.generic_guardrail_api`: pre, during and post call; options as is.
- `presidio` -> `handlers.pii`: pre and post call; `pii_entities_config` (entities both detect),
  `apply_to_output`.
- `litellm_content_filter` -> `handlers.keyword_moderation`: during call; `blocked_words` and regex
  `patterns` that BLOCK.
- `openai_moderation` -> `handlers.llm_judge` (moderations): during call; `api_base`, `api_key`, `model`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from extproc.errors import HandlerError
from extproc.settings.guardrails import GuardrailEntry

# vendor name -> (built-in reference, the entry's litellm_params -> the built-in's keyword arguments)
Translate = Callable[[GuardrailEntry], dict[str, Any]]

# Presidio's entity names -> the `handlers.pii` entities that detect the same thing.
PRESIDIO_ENTITIES: dict[str, tuple[str, ...]] = {
    "CREDIT_CARD": ("credit_card",),
    "EMAIL_ADDRESS": ("email",),
    "IBAN_CODE": ("iban",),
    "IP_ADDRESS": ("ipv4", "ipv6"),
    "PHONE_NUMBER": ("phone",),
    "US_SSN": ("us_ssn",),
}
# Where Presidio's services run and which language model they use: the built-in needs neither.
_PRESIDIO_SERVICE_KEYS = frozenset(
    {"presidio_analyzer_api_base", "presidio_anonymizer_api_base", "presidio_language"}
)

# LiteLLM names that look mapped but are not, with why and what to do instead.
NOT_EQUIVALENT: dict[str, str] = {
    "hide-secrets": (
        "LiteLLM's hide-secrets runs the detect-secrets plugins (private keys, JWTs, passwords, dozens of "
        "vendor keys); llm-extproc's secret detection (handlers.pii entity `secret`) finds fewer kinds, so "
        "it does not stand in for it silently. Configure handlers.pii with entities: {secret: mask} "
        "knowingly, or call a secrets scanner through generic_guardrail_api"
    ),
}


def _where(entry: GuardrailEntry, key: str | None = None) -> str:
    return f"{entry.where}.litellm_params" + (f".{key}" if key else "")


def _events(entry: GuardrailEntry, supported: Iterable[str], why: str) -> tuple[str, ...]:
    """The entry's events, each one the built-in can serve; `mode` must be given."""
    events = tuple(supported)
    if entry.modes is None:
        raise HandlerError(
            f"{_where(entry, 'mode')}: required for {entry.guardrail!r} (one or more of {', '.join(events)})"
        )
    for mode in entry.modes:
        if mode not in events:
            raise HandlerError(
                f"{_where(entry, 'mode')}: {entry.guardrail!r} runs here as a built-in that {why}, so it "
                f"supports {', '.join(events)}, not {mode!r}"
            )
    return entry.modes


def _refuse_unknown(entry: GuardrailEntry, known: Iterable[str]) -> None:
    for key in sorted(entry.params.keys() - set(known)):
        raise HandlerError(
            f"{_where(entry, key)}: {entry.guardrail!r} option that llm-extproc's equivalent does not have; "
            "remove it, or write the guardrail as a CustomGuardrail class"
        )


def _generic_guardrail_api(entry: GuardrailEntry) -> dict[str, Any]:
    options = dict(entry.params)
    if entry.timeout_ms is not None and "timeout" not in options:
        # The service's own deadline just inside the entry's, so a hung service counts as unreachable
        # (and `unreachable_fallback` applies) before the hook's timeout does.
        options["timeout"] = entry.timeout_ms * 0.9 / 1000
    return options


def _presidio(entry: GuardrailEntry) -> dict[str, Any]:
    events = _events(entry, ("pre_call", "post_call"), "masks requests before they go and answers after")
    _refuse_unknown(
        entry, {"pii_entities_config", "apply_to_output", "output_parse_pii", *_PRESIDIO_SERVICE_KEYS}
    )
    if entry.params.get("output_parse_pii"):
        raise HandlerError(
            f"{_where(entry, 'output_parse_pii')}: putting the original values back into answers is not "
            "something llm-extproc does; remove it"
        )
    config = entry.params.get("pii_entities_config")
    where = _where(entry, "pii_entities_config")
    if not isinstance(config, dict) or not config:
        raise HandlerError(
            f"{where}: required: Presidio masks every entity it knows by default (names, places, "
            "dates, ...), and llm-extproc detects only "
            + ", ".join(PRESIDIO_ENTITIES)
            + "; list those you want, "
            "each MASK or BLOCK"
        )
    entities: dict[str, str] = {}
    for name, action in config.items():
        ours = PRESIDIO_ENTITIES.get(str(name).upper())
        if ours is None:
            raise HandlerError(
                f"{where}.{name}: llm-extproc does not detect this entity (it detects "
                f"{', '.join(PRESIDIO_ENTITIES)}); remove it, or check it through generic_guardrail_api"
            )
        verb = str(action).lower()
        if verb not in ("mask", "block"):
            raise HandlerError(f"{where}.{name}: {action!r} is neither MASK nor BLOCK")
        entities.update(dict.fromkeys(ours, verb))
    responses = "post_call" in events or bool(entry.params.get("apply_to_output"))
    return {"entities": entities, "responses": responses}


def _content_filter(entry: GuardrailEntry) -> dict[str, Any]:
    _events(entry, ("during_call",), "refuses beside the upstream call and cannot mask")
    _refuse_unknown(entry, {"blocked_words", "patterns"})
    block: list[str] = []
    words = entry.params.get("blocked_words") or []
    if not isinstance(words, list):
        raise HandlerError(f"{_where(entry, 'blocked_words')}: expected a list of {{keyword, action}}")
    for i, word in enumerate(words):
        where = _where(entry, f"blocked_words[{i}]")
        keyword = word.get("keyword") if isinstance(word, dict) else None
        if not isinstance(keyword, str) or not keyword:
            raise HandlerError(f"{where}.keyword: expected a non-empty string")
        if str(word.get("action", "BLOCK")).upper() != "BLOCK":
            raise HandlerError(f"{where}.action: only BLOCK maps to llm-extproc's keyword moderation")
        block.append(f"/(?i:{re.escape(keyword)})/")  # LiteLLM: anywhere in the text, any case
    patterns = entry.params.get("patterns") or []
    if not isinstance(patterns, list):
        raise HandlerError(f"{_where(entry, 'patterns')}: expected a list of patterns")
    for i, pattern in enumerate(patterns):
        where = _where(entry, f"patterns[{i}]")
        if not isinstance(pattern, dict) or pattern.get("pattern_type") != "regex":
            raise HandlerError(
                f"{where}: only `pattern_type: regex` maps (prebuilt PII patterns: use presidio or "
                "handlers.pii)"
            )
        if str(pattern.get("action", "BLOCK")).upper() != "BLOCK":
            raise HandlerError(f"{where}.action: only BLOCK maps to llm-extproc's keyword moderation")
        source = pattern.get("pattern")
        if not isinstance(source, str) or not source:
            raise HandlerError(f"{where}.pattern: expected a regular expression")
        block.append(f"/{source}/")
    if not block:
        raise HandlerError(f"{_where(entry)}: no blocked_words or patterns to check")
    return {"block": block, "case_sensitive": True}


def _openai_moderation(entry: GuardrailEntry) -> dict[str, Any]:
    _events(entry, ("during_call",), "asks the moderations endpoint beside the upstream call")
    _refuse_unknown(entry, {"api_key", "api_base", "model"})
    if entry.open_when_unreachable and not entry.fail_open:
        raise HandlerError(
            f"{_where(entry, 'unreachable_fallback')}: the moderation judge cannot tell an unreachable "
            "endpoint from a failing one; use fail_on_error: false to let both through, or fail_closed"
        )
    options: dict[str, Any] = {
        "base_url": entry.params.get("api_base")
        or os.environ.get("OPENAI_API_BASE")
        or "https://api.openai.com/v1",
        "mode": "moderations",
        "fail_open": entry.fail_open,
    }
    api_key = entry.params.get("api_key") or os.environ.get("OPENAI_API_KEY")
    if api_key:
        options["api_key"] = api_key
    if entry.params.get("model"):
        options["model"] = entry.params["model"]
    if entry.timeout_ms is not None:
        options["timeout_ms"] = entry.timeout_ms
    return options


VENDOR_GUARDRAILS: dict[str, tuple[str, Translate]] = {
    "generic_guardrail_api": ("handlers.generic_guardrail_api.GenericGuardrailAPI", _generic_guardrail_api),
    "presidio": ("handlers.pii.Handler", _presidio),
    "litellm_content_filter": ("handlers.keyword_moderation.Handler", _content_filter),
    "openai_moderation": ("handlers.llm_judge.Handler", _openai_moderation),
}


def builtin_for(entry: GuardrailEntry) -> tuple[str, dict[str, Any]]:
    """The built-in handler reference and keyword arguments standing for a vendor guardrail."""
    mapped = VENDOR_GUARDRAILS.get(entry.guardrail)
    if mapped is None:
        known = ", ".join(sorted(VENDOR_GUARDRAILS))
        reason = NOT_EQUIVALENT.get(entry.guardrail)
        if reason is not None:
            raise HandlerError(f"{_where(entry, 'guardrail')}: {entry.guardrail!r}: {reason}")
        raise HandlerError(
            f"{_where(entry, 'guardrail')}: {entry.guardrail!r} is a vendor guardrail llm-extproc "
            f"does not have (it has: {known}); write it as a CustomGuardrail class and name it as "
            "module.Class, or call the vendor's service through generic_guardrail_api"
        )
    reference, translate = mapped
    return reference, translate(entry)

"""Vendor guardrail names (`guardrails[].litellm_params.guardrail: <name>`) the sidecar has an equivalent
for, mapped to a built-in handler and its options; every other vendor name fails at load, named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from extproc.errors import HandlerError
from extproc.settings.guardrails import GuardrailEntry

# vendor name -> (built-in reference, the entry's litellm_params -> the built-in's keyword arguments)
Translate = Callable[[GuardrailEntry], dict[str, Any]]
VENDOR_GUARDRAILS: dict[str, tuple[str, Translate]] = {
    "generic_guardrail_api": (
        "handlers.generic_guardrail_api.GenericGuardrailAPI",
        lambda entry: dict(entry.params),
    ),
}


def builtin_for(entry: GuardrailEntry) -> tuple[str, dict[str, Any]]:
    """The built-in handler reference and keyword arguments standing for a vendor guardrail."""
    mapped = VENDOR_GUARDRAILS.get(entry.guardrail)
    if mapped is None:
        known = ", ".join(sorted(VENDOR_GUARDRAILS))
        raise HandlerError(
            f"{entry.where}.litellm_params.guardrail: {entry.guardrail!r} is a vendor guardrail llm-extproc "
            f"does not have (it has: {known}); write it as a CustomGuardrail class and name it as "
            "module.Class, or call the vendor's service through generic_guardrail_api"
        )
    reference, translate = mapped
    return reference, translate(entry)

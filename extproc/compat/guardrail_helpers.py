"""`should_proceed_based_on_metadata`: the per-request switch of LiteLLM's first guardrail format.

A request may say which guardrails run with `metadata.guardrails` as a mapping of names to booleans
(`{"prompt_injection": true, "pii": false}`). A hook asks whether its own name is switched on: with no
such mapping every guardrail proceeds; with one, only the names set to true do. The list form of the
current format (`guardrails: ["name", ...]`) is read the same way, a listed name being switched on.
"""

from __future__ import annotations

from typing import Any

from extproc.compat.loggers import verbose_proxy_logger
from extproc.types import sidecar_metadata


async def should_proceed_based_on_metadata(data: dict[str, Any], guardrail_name: str) -> bool:
    """Whether the guardrail named `guardrail_name` runs for this request."""
    metadata = sidecar_metadata(data)
    if metadata is None or "guardrails" not in metadata:
        return True
    requested = metadata["guardrails"]
    verbose_proxy_logger.debug("guardrails requested: %s; checking %s", requested, guardrail_name)
    if isinstance(requested, dict):
        return requested.get(guardrail_name) not in (None, False)
    if isinstance(requested, list):
        return any(
            item == guardrail_name or (isinstance(item, dict) and guardrail_name in item)
            for item in requested
        )
    return True

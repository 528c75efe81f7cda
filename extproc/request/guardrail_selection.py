"""Which guardrails a request selects, and keeping that selection from the upstream.

A request names guardrails (the non-`default_on` ones run only when named) as LiteLLM's proxy reads them:
the body's `guardrails` list, or `metadata.guardrails`; names, or `{name: {"extra_body": {...}}}` for
dynamic parameters. Requests for a `model_name` whose deployments list `litellm_params.guardrails` select
those too. Hooks see the whole selection in the sidecar's metadata (`data["metadata"]["guardrails"]`, or
`data["litellm_metadata"]["guardrails"]` on the Responses and Messages APIs); the upstream sees neither
the body's `guardrails` nor the one in `metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.types import JSONDict, sidecar_metadata

KEY = "guardrails"
# The answer header naming the guardrails that ran on the request, as LiteLLM's proxy sends it.
APPLIED_HEADER = "x-litellm-applied-guardrails"


def take_body_selection(data: JSONDict) -> list[Any]:
    """Remove the body's `guardrails` list; what it named (a non-list names nothing)."""
    value = data.pop(KEY, None)
    return value if isinstance(value, list) else []


def take_metadata_selection(data: JSONDict) -> list[Any] | None:
    """Where `metadata` is the client's own field and goes upstream (Responses, Messages): remove its
    `guardrails` (a metadata left empty goes too); what it named, or None when it named nothing."""
    metadata = data.get("metadata")
    if not isinstance(metadata, dict) or KEY not in metadata:
        return None
    value = metadata.pop(KEY)
    if not metadata:
        del data["metadata"]
    return value if isinstance(value, list) else []


def select(
    data: JSONDict,
    from_body: list[Any],
    by_model: Mapping[str, tuple[str, ...]],
    model: Any,
) -> None:
    """Put the request's whole selection in the sidecar's metadata (`guardrails`), for hooks."""
    metadata = sidecar_metadata(data)
    if metadata is None:
        return
    named = metadata.get(KEY)
    selection = [*(named if isinstance(named, list) else ()), *from_body]
    if isinstance(model, str):
        selection += by_model.get(model, ())
    if selection:
        metadata[KEY] = selection
    else:
        metadata.pop(KEY, None)


def upstream_metadata(sent: JSONDict) -> bool:
    """Drop `guardrails` from the client's metadata as it goes upstream (a copy: hooks keep theirs);
    True when it was there. A metadata left empty is not sent at all."""
    metadata = sent.get("metadata")
    if not isinstance(metadata, dict) or KEY not in metadata:
        return False
    kept = {k: v for k, v in metadata.items() if k != KEY}
    if kept:
        sent["metadata"] = kept
    else:
        del sent["metadata"]
    return True


def applied_guardrails(data: JSONDict | None) -> str:
    """The guardrails that ran on the request so far, comma-separated ("" for none)."""
    metadata = sidecar_metadata(data) if data is not None else None
    applied = metadata.get("applied_guardrails") if metadata is not None else None
    return ",".join(str(name) for name in applied) if isinstance(applied, list) else ""

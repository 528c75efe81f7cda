"""What the logging events receive: LiteLLM-shaped `kwargs`, and token usage read from a response."""

from __future__ import annotations

from typing import Any

from extproc.types import JSONDict

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
MAX_TOKENS = 2**53  # beyond it a count is not a count (and Envoy's metadata numbers are doubles)


def log_kwargs(data: JSONDict, call_type: str, exception: BaseException | None = None) -> JSONDict:
    """The `kwargs` LiteLLM hands to `async_log_*` events: model, messages/input, ids and metadata."""
    kwargs: JSONDict = {
        "model": data.get("model"),
        "messages": data.get("messages"),
        "input": data.get("input", data.get("prompt")),
        "call_type": call_type,
        "stream": data.get("stream") is True,
        "litellm_call_id": data.get("litellm_call_id"),
        "user": data.get("user"),
        "litellm_params": {
            "metadata": data.get("metadata") or {},
            "proxy_server_request": data.get("proxy_server_request") or {},
        },
        "optional_params": {
            k: v for k, v in data.items() if k in ("temperature", "max_tokens", "top_p", "n")
        },
    }
    if exception is not None:
        kwargs["exception"] = exception
        kwargs["status_code"] = getattr(exception, "status_code", None)
    return kwargs


def usage_of(response: Any) -> dict[str, int]:
    """`usage` token counts of an OpenAI response or final stream chunk (ints only)."""
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return {}
    return {
        k: v
        for k in USAGE_FIELDS
        if isinstance(v := usage.get(k), int) and not isinstance(v, bool) and 0 <= v <= MAX_TOKENS
    }

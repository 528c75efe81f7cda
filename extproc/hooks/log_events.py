"""The `kwargs` LiteLLM hands to its logging events (`async_log_pre_api_call`, `async_log_success_event`,
`async_log_failure_event`), built from a request's `data`."""

from __future__ import annotations

from extproc.types import JSONDict


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

"""The `kwargs` LiteLLM hands to its logging events (`async_log_pre_api_call`, `async_log_success_event`,
`async_log_failure_event`), built from a request's `data`.

Every event gets the request's model, messages, ids, `optional_params` and `litellm_params` (whose
`metadata` is the request's `data["metadata"]`, with the flattened key fields admission put there). The
success and failure events also get LiteLLM's `standard_logging_object` (a `StandardLoggingPayload`: the
fields hook authors read, with `response_cost` from `extproc.compat.cost`, None when the model has no
price) and `response_cost` beside it.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from typing import Any

from extproc.api.views import unwrap
from extproc.compat import cost
from extproc.types import JSONDict, sidecar_metadata

# The flattened key fields of LiteLLM's `StandardLoggingUserAPIKeyMetadata`, read from `data["metadata"]`.
USER_API_KEY_FIELDS = (
    "user_api_key_hash",
    "user_api_key_alias",
    "user_api_key_spend",
    "user_api_key_max_budget",
    "user_api_key_budget_reset_at",
    "user_api_key_org_id",
    "user_api_key_team_id",
    "user_api_key_user_id",
    "user_api_key_user_email",
    "user_api_key_team_alias",
    "user_api_key_end_user_id",
    "user_api_key_request_route",
    "user_api_key_auth_metadata",
)
OPTIONAL_PARAMS = ("temperature", "max_tokens", "top_p", "n")
# Body keys that are the call itself, not its model parameters (`model_parameters`).
_NOT_PARAMETERS = frozenset(
    {"model", "messages", "prompt", "input", "stream", "user", "metadata", "litellm_call_id"}
    | {"proxy_server_request", "guardrails", "file"}
)


def log_kwargs(
    data: JSONDict,
    call_type: str,
    exception: BaseException | None = None,
    *,
    response: Any = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> JSONDict:
    """The `kwargs` of a logging event. The success and failure events pass their times (and the
    response, if any) and get `standard_logging_object`; the pre-call event passes neither."""
    kwargs: JSONDict = {
        "model": data.get("model"),
        "messages": data.get("messages"),
        "input": data.get("input", data.get("prompt")),
        "call_type": call_type,
        "stream": data.get("stream") is True,
        "litellm_call_id": data.get("litellm_call_id"),
        "user": data.get("user"),
        "litellm_params": {
            "metadata": sidecar_metadata(data) or {},
            "proxy_server_request": data.get("proxy_server_request") or {},
        },
        "optional_params": {k: v for k, v in data.items() if k in OPTIONAL_PARAMS},
    }
    if exception is not None:
        kwargs["exception"] = exception
        kwargs["status_code"] = getattr(exception, "status_code", None)
    if start_time is None or end_time is None:
        return kwargs
    payload = standard_logging_object(data, call_type, exception, response, start_time, end_time)
    kwargs.update(
        standard_logging_object=payload,
        response_cost=payload["response_cost"],
        start_time=start_time,
        end_time=end_time,
        completion_start_time=end_time,
        cache_hit=None,
        log_event_type="successful_api_call" if exception is None else "failed_api_call",
    )
    if exception is not None:
        kwargs["traceback_exception"] = payload["error_information"]["traceback"]
    return kwargs


def response_cost(data: JSONDict, response: Any) -> tuple[float | None, JSONDict | None]:
    """The cost of a successful call and, when it has no price, LiteLLM's debug information instead.
    The request's model (the name hooks saw, which the config prices) is tried before the response's."""
    requested, answered = data.get("model"), _get(response, "model")
    model = requested if cost.is_priced(requested) or not cost.is_priced(answered) else answered
    try:
        return cost.completion_cost(completion_response=response or {}, model=model), None
    except (cost.ModelNotMappedError, ValueError) as exc:
        return None, {"error_str": str(exc), "traceback_str": "", "model": str(model)}


def standard_logging_object(
    data: JSONDict,
    call_type: str,
    exception: BaseException | None,
    response: Any,
    start_time: datetime,
    end_time: datetime,
) -> JSONDict:
    """LiteLLM's `StandardLoggingPayload` of a finished request (the fields a proxy-side hook can know)."""
    metadata: JSONDict = sidecar_metadata(data) or {}
    answer = unwrap(response)
    answer = answer if isinstance(answer, dict) else None
    usage = answer.get("usage") if answer is not None else None
    counts = cost.TokenCounts.of(usage)
    requested = data.get("model")
    deployment = cost.deployment_for(requested)
    params = deployment.litellm_params if deployment is not None else {}
    upstream_model = params.get("model", requested)
    provider = (
        upstream_model.partition("/")[0]
        if isinstance(upstream_model, str) and "/" in upstream_model
        else None
    )
    model_id = deployment.model_info.get("id") if deployment is not None else None
    api_base = params.get("api_base") or ""
    if exception is None:
        price, cost_debug = response_cost(data, answer)
    else:
        price, cost_debug = 0.0, None
    status = "success" if exception is None else "failure"
    start, end = start_time.timestamp(), end_time.timestamp()
    tags = metadata.get("tags")
    return {
        "id": data.get("litellm_call_id"),
        "trace_id": data.get("litellm_trace_id") or data.get("litellm_call_id"),
        "call_id": data.get("litellm_call_id"),
        "call_type": call_type,
        "stream": data.get("stream") is True,
        "response_cost": price,
        "cost_breakdown": None,
        "response_cost_failure_debug_info": cost_debug,
        "status": status,
        "status_fields": {"llm_api_status": status},
        "custom_llm_provider": provider,
        "total_tokens": counts.prompt + counts.completion,
        "prompt_tokens": counts.prompt,
        "completion_tokens": counts.completion,
        "startTime": start,
        "endTime": end,
        "completionStartTime": end,
        "response_time": end - start,
        "model_map_information": {"model_map_key": upstream_model, "model_map_value": None},
        "model": upstream_model,
        "model_id": model_id,
        "model_group": requested,
        "api_base": api_base,
        "metadata": standard_logging_metadata(metadata, usage),
        "cache_hit": None,
        "cache_key": None,
        "saved_cache_cost": 0.0,
        "request_tags": list(tags) if isinstance(tags, list) else [],
        "end_user": metadata.get("user_api_key_end_user_id") or _str_or_none(data.get("user")),
        "requester_ip_address": metadata.get("requester_ip_address"),
        "user_agent": metadata.get("user_agent"),
        "messages": data.get("messages", data.get("input", data.get("prompt"))),
        "response": answer,
        "error_str": str(exception) if exception is not None else None,
        "error_information": _error_information(exception, provider),
        "model_parameters": {k: v for k, v in data.items() if k not in _NOT_PARAMETERS},
        "hidden_params": {
            "model_id": model_id,
            "cache_key": None,
            "api_base": api_base or None,
            "response_cost": price,
            "litellm_overhead_time_ms": None,
            "additional_headers": None,
            "batch_models": None,
            "litellm_model_name": upstream_model,
            "usage_object": usage if isinstance(usage, dict) else None,
        },
        "guardrail_information": _list_or_none(metadata.get("standard_logging_guardrail_information")),
        "standard_built_in_tools_params": None,
    }


def standard_logging_metadata(metadata: JSONDict, usage: Any) -> JSONDict:
    """LiteLLM's `StandardLoggingMetadata`: the key fields and the request facts loggers group by."""
    fields: JSONDict = {key: metadata.get(key) for key in USER_API_KEY_FIELDS}
    headers = metadata.get("headers")
    spend_logs = metadata.get("spend_logs_metadata")
    fields.update(
        spend_logs_metadata=spend_logs if isinstance(spend_logs, dict) else None,
        requester_ip_address=metadata.get("requester_ip_address"),
        user_agent=metadata.get("user_agent"),
        requester_metadata=metadata.get("requester_metadata"),
        requester_custom_headers=(
            {k: v for k, v in headers.items() if k.startswith("x-")} if isinstance(headers, dict) else None
        ),
        prompt_management_metadata=None,
        mcp_tool_call_metadata=None,
        vector_store_request_metadata=None,
        applied_guardrails=_list_or_none(metadata.get("applied_guardrails")) or [],
        usage_object=usage if isinstance(usage, dict) else None,
        cold_storage_object_key=None,
        team_alias=metadata.get("user_api_key_team_alias"),
        team_id=metadata.get("user_api_key_team_id"),
    )
    return fields


def _error_information(exception: BaseException | None, provider: str | None) -> JSONDict | None:
    if exception is None:
        return None
    status = getattr(exception, "status_code", None)
    return {
        "error_code": str(status) if status is not None else "",
        "error_class": type(exception).__name__,
        "llm_provider": provider or "",
        "traceback": "".join(traceback.format_exception(exception)),
        "error_message": str(exception),
    }


def _get(value: Any, name: str) -> Any:
    value = unwrap(value)
    return value.get(name) if isinstance(value, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _list_or_none(value: Any) -> list[Any] | None:
    return list(value) if isinstance(value, list) else None

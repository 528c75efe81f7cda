"""`CustomGuardrail`: LiteLLM's guardrail base class, with its constructor, attributes and selection rule.

A guardrail is a `CustomLogger` with a name, the events it runs on (`event_hook`: one of
`GuardrailEventHooks` or a list of them) and `default_on`. `should_run_guardrail(data, event)` decides,
per request and event, whether its hooks run: a `default_on` guardrail runs on each of its events; any
other runs only when the request names it in `data["metadata"]["guardrails"]` (the sidecar moves a
body's `guardrails` list there, as LiteLLM's proxy does), by name or as `{name: {...dynamic params}}`.

`apply_guardrail(inputs, request_data, input_type, logging_obj)` is LiteLLM's unified form: a class that
overrides it is handed the texts (and tools, tool calls, structured messages) of a request or an answer
of any endpoint, and what it returns is written back (extproc/hooks/unified.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Any, Literal, TypedDict

from extproc.api.guardrail_inputs import GenericGuardrailAPIInputs
from extproc.hooks.custom_logger import CustomLogger
from extproc.types import SIDECAR_METADATA_KEYS, sidecar_metadata


class GuardrailEventHooks(StrEnum):
    """When a guardrail runs (LiteLLM's `mode`). A `str` enum: `event_hook == "pre_call"` holds."""

    pre_call = "pre_call"
    post_call = "post_call"
    during_call = "during_call"
    logging_only = "logging_only"
    pre_mcp_call = "pre_mcp_call"
    during_mcp_call = "during_mcp_call"


# The events the sidecar runs a guardrail on; MCP events have no place in an LLM request.
REQUEST_EVENTS = ("pre_call", "during_call", "post_call", "logging_only")


class DynamicGuardrailParams(TypedDict, total=False):
    """A request's per-guardrail parameters: `guardrails: [{name: {"extra_body": {...}}}]`."""

    extra_body: dict[str, Any]


def _event_value(event: Any) -> str:
    return event.value if isinstance(event, Enum) else str(event)


class CustomGuardrail(CustomLogger):
    """LiteLLM's `CustomGuardrail`: hooks that run only on their events and, unless `default_on`, only
    for requests that name them."""

    def __init__(
        self,
        guardrail_name: str | None = None,
        supported_event_hooks: list[GuardrailEventHooks] | None = None,
        event_hook: GuardrailEventHooks | str | list[GuardrailEventHooks | str] | None = None,
        default_on: bool = False,
        mask_request_content: bool = False,
        mask_response_content: bool = False,
        **kwargs: Any,
    ) -> None:
        self.guardrail_name = guardrail_name
        self.supported_event_hooks = supported_event_hooks
        self.event_hook: Any = event_hook
        self.default_on: bool = bool(default_on)
        self.mask_request_content = mask_request_content
        self.mask_response_content = mask_response_content
        if supported_event_hooks:
            self._validate_event_hook(event_hook, supported_event_hooks)
        super().__init__(**kwargs)

    def _validate_event_hook(self, event_hook: Any, supported_event_hooks: list[GuardrailEventHooks]) -> None:
        if event_hook is None:
            return
        supported = {_event_value(hook) for hook in supported_event_hooks}
        for hook in event_hook if isinstance(event_hook, list) else [event_hook]:
            if _event_value(hook) not in supported:
                raise ValueError(
                    f"Event hook {hook} is not in the supported event hooks {supported_event_hooks}"
                )

    def get_guardrail_from_metadata(self, data: dict[str, Any]) -> list[Any]:
        """The guardrails the request names (`metadata.guardrails`), names or `{name: params}` dicts."""
        for key in SIDECAR_METADATA_KEYS:
            metadata = data.get(key)
            requested = metadata.get("guardrails") if isinstance(metadata, dict) else None
            if isinstance(requested, list):
                return requested
        return []

    def _guardrail_is_in_requested_guardrails(self, requested_guardrails: list[Any]) -> bool:
        for requested in requested_guardrails:
            if isinstance(requested, dict) and self.guardrail_name in requested:
                return True
            if isinstance(requested, str) and requested == self.guardrail_name:
                return True
        return False

    def _event_hook_is_event_type(self, event_type: GuardrailEventHooks | str) -> bool:
        if self.event_hook is None:
            return True
        wanted = _event_value(event_type)
        if isinstance(self.event_hook, list):
            return wanted in {_event_value(hook) for hook in self.event_hook}
        return _event_value(self.event_hook) == wanted

    def should_run_guardrail(self, data: dict[str, Any], event_type: GuardrailEventHooks | str) -> bool:
        """Whether this guardrail runs for this request on this event (LiteLLM's rule)."""
        if self.default_on:
            return self._event_hook_is_event_type(event_type)
        if (
            self.event_hook
            and _event_value(event_type) != "logging_only"
            and not self._guardrail_is_in_requested_guardrails(self.get_guardrail_from_metadata(data))
        ):
            return False
        return self._event_hook_is_event_type(event_type)

    def get_guardrail_dynamic_request_body_params(self, request_data: dict[str, Any]) -> dict[str, Any]:
        """The request's `extra_body` for this guardrail (`guardrails: [{name: {"extra_body": {...}}}]`)."""
        for requested in self.get_guardrail_from_metadata(request_data):
            if isinstance(requested, dict) and isinstance(requested.get(self.guardrail_name), dict):
                extra = requested[self.guardrail_name].get("extra_body")
                return extra if isinstance(extra, dict) else {}
        return {}

    def add_standard_logging_guardrail_information_to_request_data(
        self,
        guardrail_json_response: Any,
        request_data: dict[str, Any],
        guardrail_status: str,
        **_: Any,
    ) -> None:
        """Record this guardrail's outcome in the request's metadata, for logging events."""
        if isinstance(guardrail_json_response, BaseException):
            guardrail_json_response = str(guardrail_json_response)
        metadata = sidecar_metadata(request_data)
        if metadata is None:
            return
        metadata["standard_logging_guardrail_information"] = {
            "guardrail_name": self.guardrail_name,
            "guardrail_mode": self.event_hook,
            "guardrail_response": guardrail_json_response,
            "guardrail_status": guardrail_status,
        }

    async def apply_guardrail(
        self,
        inputs: GenericGuardrailAPIInputs,
        request_data: dict[str, Any],
        input_type: Literal["request", "response"],
        logging_obj: Any = None,
    ) -> GenericGuardrailAPIInputs:
        """The unified form: return `inputs` (changed or not), or raise to refuse; counts if overridden."""
        return inputs


def implements_apply_guardrail(instance: object) -> bool:
    """Whether the guardrail's class overrides the unified `apply_guardrail`."""
    method = getattr(type(instance), "apply_guardrail", None)
    return method is not None and method is not CustomGuardrail.apply_guardrail


def log_guardrail_information(func: Callable[..., Any]) -> Callable[..., Any]:
    """LiteLLM's decorator: records the guardrail's outcome in the request's metadata, then returns or
    raises as the decorated method did."""

    def record(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any], outcome: Any, status: str) -> None:
        data = kwargs.get("data") or kwargs.get("request_data")
        if data is None:
            data = next((a for a in args if isinstance(a, dict) and "metadata" in a), None)
        if isinstance(data, dict) and isinstance(self, CustomGuardrail):
            self.add_standard_logging_guardrail_information_to_request_data(outcome, data, status)

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await func(self, *args, **kwargs)
            except Exception as exc:
                record(self, args, kwargs, exc, "failure")
                raise
            record(self, args, kwargs, result if isinstance(result, dict | str) else None, "success")
            return result

        return async_wrapper

    @functools.wraps(func)
    def sync_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = func(self, *args, **kwargs)
        except Exception as exc:
            record(self, args, kwargs, exc, "failure")
            raise
        record(self, args, kwargs, result if isinstance(result, dict | str) else None, "success")
        return result

    return sync_wrapper

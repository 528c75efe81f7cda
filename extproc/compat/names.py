"""What each LiteLLM module path provides to handler files: the table `litellm_shim` builds modules from.

A value is the object itself, or a `Lazy` reference imported when the name is first read (the cost
functions live in a module of their own). A module path listed here with no names is a package that only
holds the paths below it. Anything not listed fails at load (see `litellm_shim`).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeAlias

from extproc.api.guardrail_inputs import GenericGuardrailAPIInputs
from extproc.api.prompt import get_formatted_prompt
from extproc.api.views import (
    Choices,
    Delta,
    Message,
    ModelResponse,
    ModelResponseStream,
    StreamingChoices,
    Usage,
)
from extproc.compat.call_types import CallTypes, CallTypesLiteral
from extproc.compat.guardrail_helpers import should_proceed_based_on_metadata
from extproc.compat.loggers import verbose_logger, verbose_proxy_logger, verbose_router_logger
from extproc.compat.proxy_types import LitellmUserRoles, ProxyException
from extproc.errors import HTTPException
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.guardrail import (
    CustomGuardrail,
    GuardrailEventHooks,
    log_guardrail_information,
)
from extproc.settings.auth import UserAPIKeyAuth
from extproc.state.cache import DualCache, InMemoryCache


@dataclass(frozen=True, slots=True)
class Lazy:
    """A name resolved on first read: `attribute` of the module `module`."""

    module: str
    attribute: str


COST_MODULE = "extproc.compat.cost"
COMPLETION_COST = Lazy(COST_MODULE, "completion_cost")
COST_PER_TOKEN = Lazy(COST_MODULE, "cost_per_token")

# Annotation-only names of LiteLLM's typing modules: any value passes.
AllMessageValues: TypeAlias = dict[str, Any]
Span: TypeAlias = Any

RESPONSE_TYPES: dict[str, object] = {
    "ModelResponse": ModelResponse,
    "ModelResponseStream": ModelResponseStream,
    "Choices": Choices,
    "StreamingChoices": StreamingChoices,
    "Message": Message,
    "Delta": Delta,
    "Usage": Usage,
}
CACHES: dict[str, object] = {"DualCache": DualCache, "InMemoryCache": InMemoryCache}
LOGGERS: dict[str, object] = {
    "verbose_proxy_logger": verbose_proxy_logger,
    "verbose_logger": verbose_logger,
    "verbose_router_logger": verbose_router_logger,
}
COSTS: dict[str, object] = {"completion_cost": COMPLETION_COST, "cost_per_token": COST_PER_TOKEN}

LITELLM_MODULES: dict[str, dict[str, object]] = {
    "litellm": {
        **RESPONSE_TYPES,
        **COSTS,
        "verbose_logger": verbose_logger,
        "CustomLogger": CustomLogger,
        "DualCache": DualCache,
        "get_formatted_prompt": get_formatted_prompt,
        # Module-level settings hook files set or read; the sidecar's own config decides behaviour.
        "set_verbose": False,
        "turn_off_message_logging": False,
        "drop_params": False,
        "callbacks": [],
        "success_callback": [],
        "failure_callback": [],
    },
    "litellm._logging": LOGGERS,
    "litellm.integrations": {},
    "litellm.integrations.custom_logger": {"CustomLogger": CustomLogger, "Span": Span},
    "litellm.integrations.custom_guardrail": {
        "CustomGuardrail": CustomGuardrail,
        "CustomLogger": CustomLogger,
        "GuardrailEventHooks": GuardrailEventHooks,
        "log_guardrail_information": log_guardrail_information,
    },
    "litellm.proxy": {},
    "litellm.proxy._types": {
        "UserAPIKeyAuth": UserAPIKeyAuth,
        "ProxyException": ProxyException,
        "LitellmUserRoles": LitellmUserRoles,
        "CallTypes": CallTypes,
    },
    "litellm.proxy.proxy_server": {
        "UserAPIKeyAuth": UserAPIKeyAuth,
        "DualCache": DualCache,
        "ProxyException": ProxyException,
    },
    "litellm.proxy.guardrails": {},
    "litellm.proxy.guardrails.guardrail_helpers": {
        "should_proceed_based_on_metadata": should_proceed_based_on_metadata
    },
    "litellm.caching": CACHES,
    "litellm.caching.caching": CACHES,
    "litellm.caching.dual_cache": {"DualCache": DualCache},
    "litellm.caching.in_memory_cache": {"InMemoryCache": InMemoryCache},
    "litellm.types": {},
    "litellm.types.guardrails": {"GuardrailEventHooks": GuardrailEventHooks},
    "litellm.types.utils": {
        **RESPONSE_TYPES,
        "CallTypes": CallTypes,
        "CallTypesLiteral": CallTypesLiteral,
        "GenericGuardrailAPIInputs": GenericGuardrailAPIInputs,
    },
    "litellm.types.llms": {},
    "litellm.types.llms.openai": {"AllMessageValues": AllMessageValues},
    "litellm.utils": {**RESPONSE_TYPES, **COSTS, "get_formatted_prompt": get_formatted_prompt},
    "litellm.cost_calculator": COSTS,
}


def _status_names() -> dict[str, object]:
    """Starlette's `HTTP_<code>_<NAME>` constants, from the standard library's status list."""
    return {f"HTTP_{status.value}_{status.name}": status.value for status in HTTPStatus}


# Used only when fastapi itself is not installed: hook files raise fastapi's HTTPException.
FASTAPI_MODULES: dict[str, dict[str, object]] = {
    "fastapi": {"HTTPException": HTTPException},
    "fastapi.exceptions": {"HTTPException": HTTPException},
    "fastapi.status": _status_names(),
}

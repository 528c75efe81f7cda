"""llm-extproc: LiteLLM-compatible LLM call hooks for Envoy, as an ext_proc sidecar.

Handler authors import everything they need from here (or, unchanged, from LiteLLM's own module paths:
see `extproc.compat.litellm_shim`).
"""

from extproc.api.guardrail_inputs import GenericGuardrailAPIInputs
from extproc.api.multipart import UploadedFile
from extproc.api.prompt import get_formatted_prompt
from extproc.api.texts import TextPlace, TextScan, normalize_text, request_texts
from extproc.api.views import (
    Choices,
    Delta,
    Message,
    ModelResponse,
    ModelResponseStream,
    StreamingChoices,
    Usage,
)
from extproc.compat.call_types import CallTypes
from extproc.compat.guardrail_helpers import should_proceed_based_on_metadata
from extproc.compat.loggers import verbose_logger, verbose_proxy_logger
from extproc.errors import HTTPException
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.guardrail import CustomGuardrail, GuardrailEventHooks, log_guardrail_information
from extproc.settings.auth import UserAPIKeyAuth
from extproc.state.cache import DualCache, InMemoryCache
from extproc.types import CallType, sidecar_metadata

__all__ = [
    "CallType",
    "CallTypes",
    "Choices",
    "CustomGuardrail",
    "CustomLogger",
    "Delta",
    "DualCache",
    "GenericGuardrailAPIInputs",
    "GuardrailEventHooks",
    "HTTPException",
    "InMemoryCache",
    "Message",
    "ModelResponse",
    "ModelResponseStream",
    "StreamingChoices",
    "TextPlace",
    "TextScan",
    "UploadedFile",
    "Usage",
    "UserAPIKeyAuth",
    "get_formatted_prompt",
    "log_guardrail_information",
    "normalize_text",
    "request_texts",
    "should_proceed_based_on_metadata",
    "sidecar_metadata",
    "verbose_logger",
    "verbose_proxy_logger",
]

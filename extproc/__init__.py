"""llm-extproc: LiteLLM-compatible LLM call hooks for Envoy, as an ext_proc sidecar.

Handler authors import everything they need from here.
"""

from extproc.api.multipart import UploadedFile
from extproc.api.prompt import get_formatted_prompt
from extproc.api.texts import TextPlace, TextScan, normalize_text, request_texts
from extproc.errors import HTTPException
from extproc.hooks.custom_logger import CustomLogger
from extproc.settings.auth import UserAPIKeyAuth
from extproc.state.cache import DualCache, InMemoryCache
from extproc.types import CallType

__all__ = [
    "CallType",
    "CustomLogger",
    "DualCache",
    "HTTPException",
    "InMemoryCache",
    "TextPlace",
    "TextScan",
    "UploadedFile",
    "UserAPIKeyAuth",
    "get_formatted_prompt",
    "normalize_text",
    "request_texts",
]

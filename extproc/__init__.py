"""llm-extproc: LiteLLM-compatible LLM call hooks for Envoy, as an ext_proc sidecar.

Handler authors import everything they need from here.
"""

from extproc.auth import UserAPIKeyAuth
from extproc.cache import DualCache, InMemoryCache
from extproc.custom_logger import CustomLogger
from extproc.errors import HTTPException
from extproc.multipart import UploadedFile
from extproc.prompt import get_formatted_prompt
from extproc.types import CallType

__all__ = [
    "CallType",
    "CustomLogger",
    "DualCache",
    "HTTPException",
    "InMemoryCache",
    "UploadedFile",
    "UserAPIKeyAuth",
    "get_formatted_prompt",
]

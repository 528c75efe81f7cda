"""Anthropic's wire shapes: the error body `{"type": "error", "error": {"type", "message"}}` with the error
type Anthropic gives each status, and the `event: error` frame that ends a stream.

Envoy's own local replies on Anthropic routes write the same body from the generated config
(`extproc.envoy.local_replies`); a test pins the two shapes together.
"""

from __future__ import annotations

from extproc.errors import ErrorInfo, dumps_any

# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's `error.type` for a status; other 4xx are invalid requests, other 5xx API errors."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error body, encoded."""
    return dumps_any({"type": "error", "error": {"type": error_type(status), "message": message}})


def error_frame(error: ErrorInfo) -> bytes:
    """The `event: error` frame that ends a started stream; Anthropic's SDKs raise it as an API error."""
    return b"event: error\ndata: " + error_body(error.status, error.message) + b"\n\n"

"""Every exception the sidecar raises or maps, and `describe`: what the client's error says for any of them.

How an error is *written* (the OpenAI envelope, an SSE error event) belongs to the API family that
answers; this module only says which status, message, type and headers an exception stands for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.decisions import hook_headers


class HTTPException(Exception):
    """An error with an HTTP status, shaped like fastapi's `HTTPException`."""

    def __init__(
        self,
        status_code: int,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


def error_type(status: int) -> str:
    """The envelope's `type` for a status, as LiteLLM's proxy names it."""
    if status == 401:
        return "auth_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "throttling_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "internal_server_error"


class ProxyException(Exception):
    """An error the sidecar itself raises (bad body, enforce_user_param, ...), as LiteLLM's proxy does."""

    def __init__(
        self, message: str, status_code: int, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = str(status_code)
        self.param = param
        self.type = kind or error_type(status_code)
        self.detail = message
        self.headers: dict[str, str] | None = None


class UpstreamError(Exception):
    """The upstream answered with a status >= 400; `body` is its decoded error body (or raw text)."""

    def __init__(self, status_code: int, body: Any) -> None:
        message = detail_message(body.get("error", body)) if isinstance(body, dict) else str(body or "")
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body
        self.response_body = body


class RejectedRequestError(Exception):
    """A pre-call hook refused with a string: failure hooks see this; the client gets the refusal.

    `hook` names the refusing hook (the chain raises this; LiteLLM's class has no such field)."""

    def __init__(self, message: str, request_data: dict[str, Any], hook: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.request_data = request_data
        self.status_code = 400
        self.hook = hook


class ClientDisconnected(Exception):
    """The request ended before its response was complete: the client left, or Envoy gave up on it."""

    status_code = 499

    def __init__(self) -> None:
        self.message = (
            "the request ended before the response was complete (client disconnected or Envoy timed out)"
        )
        super().__init__(self.message)


class HookFailed(Exception):
    """A hook raised (or timed out); `cause` is what the client's error is made from."""

    def __init__(self, label: str, cause: BaseException) -> None:
        super().__init__(f"{label}: {type(cause).__name__}: {cause}")
        self.label = label
        self.cause = cause


class HookTimeout(Exception):
    """A hook did not finish within its timeout."""

    status_code = 504

    def __init__(self, label: str, timeout_s: float) -> None:
        self.detail = f"{label} did not finish within {round(timeout_s * 1000)} ms"
        super().__init__(self.detail)


class GuardrailUnreachable(ConnectionError):
    """A guardrail could not reach its service (connection refused or reset, DNS, timeout). With
    `unreachable_fallback: fail_open` such a failure lets the request through; any other does not."""


def is_unreachable(exc: BaseException) -> bool:
    """Whether a failure means the guardrail's service was not reached (not a verdict, not a crash)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    return module.startswith(("httpx", "httpcore", "aiohttp")) and any(
        base.__name__ in ("TransportError", "ClientConnectionError", "ServerTimeoutError")
        for base in type(exc).__mro__
    )


class HandlerError(Exception):
    """A handler that cannot be used (not found, not importable, wrong signature), named with the reason."""


class BodyError(Exception):
    """A body the sidecar cannot decode; `status` and `message` go into the error envelope."""

    def __init__(self, status: int, message: str, param: str | None = "request_body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class SSEError(ValueError):
    """A stream the sidecar cannot pass on: an event larger than the hold limit, or bytes that are not SSE."""


class MultipartError(ValueError):
    """A multipart/form-data body that cannot be parsed."""


def dumps_any(value: Any) -> bytes:
    """JSON for whatever a hook put in an error (int keys, huge ints, sets, bytes, lone surrogates)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        text = json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "replace")  # a lone surrogate becomes "?": strict decoders refuse it


def is_http_exception(exc: BaseException) -> bool:
    """Duck-typed: ours, fastapi's and starlette's all carry `status_code` and `detail`."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and hasattr(exc, "detail")


def detail_message(detail: Any) -> str:
    """The message of an exception's `detail`: a string, or the `error.message` of a dict."""
    if isinstance(detail, dict):
        inner = detail.get("error", detail)
        if isinstance(inner, dict):
            inner = inner.get("message", inner)
        return inner if isinstance(inner, str) else dumps_any(inner).decode()
    if detail is None:
        return ""
    return detail if isinstance(detail, str) else str(detail)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What the client's error says: the family that answers decides how it is written."""

    status: int
    message: str
    type: str
    param: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    provider_specific_fields: Any = None


def describe(exc: BaseException) -> ErrorInfo:
    """The client's error for any exception: the sidecar's own, a hook's HTTP exception, or anything else."""
    if isinstance(exc, ProxyException):
        return ErrorInfo(exc.status_code, exc.message, exc.type, exc.param)
    if is_http_exception(exc):
        status = int(exc.status_code)  # type: ignore[attr-defined]
        if not 400 <= status <= 599:  # a refusal is an error: 1xx, 2xx and 3xx would pass for success
            status = 500
        detail = exc.detail  # type: ignore[attr-defined]
        raw_headers = getattr(exc, "headers", None) or {}
        headers = hook_headers(dict(raw_headers).items(), type(exc).__name__)
        provider = detail if isinstance(detail, dict) else None
        return ErrorInfo(status, detail_message(detail), error_type(status), None, headers, provider)
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: name what it was
        return ErrorInfo(500, f"{type(exc).__name__}: {exc}", error_type(500))
    return ErrorInfo(500, str(exc) or type(exc).__name__, error_type(500))

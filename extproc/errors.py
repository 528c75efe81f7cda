"""HTTP exceptions and the OpenAI error envelope every refusal and failure is answered with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.types import JSONDict


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


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error the client gets: status, extra headers and the encoded envelope."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    message: str = ""


def dumps_any(value: Any) -> bytes:
    """JSON for whatever a hook put in an error (int keys, huge ints, sets, bytes, lone surrogates)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        text = json.dumps(value, default=repr, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8", "replace")  # a lone surrogate becomes "?": strict decoders refuse it


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


def envelope(
    status: int,
    message: str,
    *,
    param: str | None = None,
    kind: str | None = None,
    provider_specific_fields: Any = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> ErrorReply:
    """Encode the OpenAI error envelope once."""
    error: JSONDict = {
        "message": message,
        "type": kind or error_type(status),
        "param": param,
        "code": str(status),
    }
    if provider_specific_fields is not None:
        error["provider_specific_fields"] = provider_specific_fields
    return ErrorReply(status, dumps_any({"error": error}), headers, message)


def is_http_exception(exc: BaseException) -> bool:
    """Duck-typed: ours, fastapi's and starlette's all carry `status_code` and `detail`."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and hasattr(exc, "detail")


def _detail_message(detail: Any) -> str:
    if isinstance(detail, dict):
        inner = detail.get("error", detail)
        if isinstance(inner, dict):
            inner = inner.get("message", inner)
        return inner if isinstance(inner, str) else dumps_any(inner).decode()
    if detail is None:
        return ""
    return detail if isinstance(detail, str) else str(detail)


def from_exception(exc: BaseException) -> ErrorReply:
    """Map any exception a hook raised to the reply the client gets."""
    if is_http_exception(exc):
        status = int(exc.status_code)  # type: ignore[attr-defined]
        if not 100 <= status <= 599:
            status = 500
        detail = exc.detail  # type: ignore[attr-defined]
        raw_headers = getattr(exc, "headers", None) or {}
        headers = tuple((str(k).lower(), str(v)) for k, v in dict(raw_headers).items())
        return envelope(
            status,
            _detail_message(detail),
            provider_specific_fields=detail if isinstance(detail, dict) else None,
            headers=headers,
        )
    return envelope(500, str(exc) or type(exc).__name__)


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

    def reply(self) -> ErrorReply:
        return envelope(self.status_code, self.message, param=self.param, kind=self.type)


class UpstreamError(Exception):
    """The upstream answered with a status >= 400; `body` is its decoded error body (or raw text)."""

    def __init__(self, status_code: int, body: Any) -> None:
        message = _detail_message(body.get("error", body)) if isinstance(body, dict) else str(body or "")
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body
        self.response_body = body


class RejectedRequestError(Exception):
    """A pre-call hook refused with a string: failure hooks see this; the client gets the refusal."""

    def __init__(self, message: str, request_data: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.request_data = request_data
        self.status_code = 400


class ClientDisconnected(Exception):
    """The request ended before its response was complete: the client left, or Envoy gave up on it."""

    status_code = 499

    def __init__(self) -> None:
        self.message = (
            "the request ended before the response was complete (client disconnected or Envoy timed out)"
        )
        super().__init__(self.message)


def reply_for(exc: BaseException) -> ErrorReply:
    """The client's error for any exception, ours included."""
    if isinstance(exc, ProxyException):
        return exc.reply()
    return from_exception(exc)

"""Logging: one JSON object per line (or plain text for humans), request ids, and no secrets.

`bind_request_id()` puts a request's id in a context variable; every record logged from that
context (and from tasks it starts: they copy the context) carries it. Whatever is written passes
through `scrub()` first: bearer tokens, `sk-...` keys, JWTs and `api-key: value` pairs never reach
the log, even when a hook or an exception puts one in a message (defence in depth: the sidecar itself
never logs a key).
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("llm_extproc_request_id", default=None)
REDACTED = "[REDACTED]"
_SECRET_NAMES = r"(?:proxy-)?authorization|(?:x-)?api[-_]?key|(?:openai_)?api_key|access_token|cookie"
_SCRUBS: tuple[tuple[re.Pattern[str], str], ...] = (
    # `Authorization: Bearer <token>` and the like, wherever the scheme appears.
    (re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE), rf"\1\2{REDACTED}"),
    # OpenAI-style keys: sk-..., sk-proj-..., sk-ant-...
    (re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{8,}"), f"sk-{REDACTED}"),
    # JWTs (three base64url parts, the first a JSON header).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), REDACTED),
    # `api-key: value`, `'x-api-key': 'value'`, `api_key=value`: the value goes.
    (
        re.compile(
            rf"\b({_SECRET_NAMES})(['\"]?\s*[:=]\s*['\"]?)(?!{re.escape(REDACTED)}|(?:Bearer|Basic)\b)"
            r"[^\s'\",;}\]]+",
            re.IGNORECASE,
        ),
        rf"\1\2{REDACTED}",
    ),
)
# Attributes every LogRecord has: anything else was passed with `extra=` and is written as a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "request_part"}
_HANDLER_MARK = "_llm_extproc_handler"


def bind_request_id(request_id: str | None) -> Token[str | None]:
    """Records logged from now on in this context (and tasks started from it) carry this request id."""
    return REQUEST_ID.set(request_id or None)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def scrub(text: str) -> str:
    """The text with anything that looks like a credential replaced by `[REDACTED]`."""
    for pattern, replacement in _SCRUBS:
        text = pattern.sub(replacement, text)
    return text


def _request_id(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "request_id", None)
    return explicit if isinstance(explicit, str) and explicit else REQUEST_ID.get()


class JSONFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "exc"?, ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        request_id = _request_id(record)
        if request_id:
            document["request_id"] = request_id
        if record.exc_info:
            document["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            document["exc"] = scrub(record.exc_text)
        if record.stack_info:
            document["stack"] = scrub(self.formatStack(record.stack_info))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                document.setdefault(key, value)
        line = orjson.dumps(document, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        return scrub(line)  # again, for secrets inside `extra` fields


class TextFormatter(logging.Formatter):
    """`time level logger [request id] message`, then the traceback; scrubbed like the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_part)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = _request_id(record)
        record.request_part = f" [{request_id}]" if request_id else ""
        return scrub(super().format(record))


def setup_logging(level: str, json: bool, stream: TextIO | None = None) -> logging.Handler:
    """Log to stderr (or `stream`) at `level`, as JSON lines or text; calling it again replaces it."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if json else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler

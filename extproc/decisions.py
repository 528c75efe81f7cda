"""What a session is told and answers for one phase, free of protobuf: the transport turns these into
messages and back.

`Message` is one ext_proc message as the session sees it; `Continue`, `Reply` and `Deferred` are the
answers; `Mode` is the complete processing mode an answer may switch Envoy to. The rules that pick a
mode live in `extproc.request.modes`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, Final, Protocol

from extproc.types import Headers

# The dynamic metadata namespace the sidecar writes (Envoy drops it unless it is listed in the filter's
# receiving_namespaces), and the keys it writes there. The generated Envoy config reads VERDICT: every
# answer of the sidecar's own carries it, so a local reply without it is Envoy's.
METADATA_NAMESPACE: Final = "llm_extproc"
VERDICT: Final = "verdict"
REFUSED_BY: Final = "refused_by"
FAILED_IN: Final = "failed_in"
UPSTREAM_STATUS: Final = "upstream_status"
STATUS: Final = "status"
CALL_TYPE: Final = "call_type"
APPLIED_GUARDRAILS: Final = "applied_guardrails"  # the guardrails that ran, comma-separated


log = logging.getLogger("extproc.decisions")
# Response headers a hook may not set: framing and connection headers (a content-length that disagrees
# with the body desynchronises an HTTP/1.1 connection) and pseudo-headers (":status").
_NOT_FROM_HOOKS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
    | {"proxy-connection", "host"}
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 field names (lower-cased)
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def hook_headers(pairs: Iterable[tuple[object, object]], source: str) -> tuple[tuple[str, str], ...]:
    """The headers a hook gave for the client's response, lower-cased, without the ones that could
    break the response's framing or that are not valid HTTP (each dropped one is logged)."""
    kept = []
    for raw_name, raw_value in pairs:
        name, value = str(raw_name).lower(), str(raw_value)
        if name in _NOT_FROM_HOOKS or _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(value):
            log.warning("%s: response header %r dropped (framing, pseudo or not valid HTTP)", source, name)
            continue
        kept.append((name, value))
    return tuple(kept)


class BodyMode(IntEnum):
    """Envoy's `ProcessingMode.BodySendMode`, same numbers."""

    NONE = 0
    STREAMED = 1
    BUFFERED = 2
    BUFFERED_PARTIAL = 3
    FULL_DUPLEX_STREAMED = 4


@dataclass(frozen=True, slots=True)
class Mode:
    """A complete processing mode: Envoy's `mode_override` replaces every field, so all are set."""

    request_body: BodyMode = BodyMode.NONE
    response_headers: bool = False
    response_body: BodyMode = BodyMode.NONE

    @property
    def response_trailers(self) -> bool:
        """Envoy insists on trailers being sent with a full-duplex body."""
        return self.response_body is BodyMode.FULL_DUPLEX_STREAMED

    def with_response_body(self, body: BodyMode) -> Mode:
        return replace(self, response_body=body)


PASS_THROUGH_MODE = Mode()


def _no_metadata() -> dict[str, Any]:
    return {}


@dataclass(frozen=True, slots=True)
class Message:
    """One ext_proc message: headers (headers phases), body bytes (body phases), whether it is the last
    of its direction, and a reader of the request's metadata namespaces (decoded only when asked)."""

    headers: Headers
    body: bytes
    end_of_stream: bool
    read_metadata: Callable[[], dict[str, Any]] = _no_metadata


@dataclass(frozen=True, slots=True)
class Continue:
    """Let the message go on, changed as given."""

    set_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    body: bytes | None = None
    clear_route_cache: bool = False
    mode: Mode | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the client now, instead of (or in place of) the upstream."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    details: str = "llm-extproc"
    content_type: str = "application/json"
    metadata: dict[str, Any] | None = None


class Deferred:
    """No answer now: the session answers later on its own (full-duplex streaming)."""


CONTINUE = Continue()
DEFERRED = Deferred()
Decision = Continue | Reply | Deferred


class Outbox(Protocol):
    """What a session may send Envoy outside the question-and-answer rhythm of the phases."""

    async def push(self, reply: Reply) -> bool:
        """Answer the client now (e.g. a moderation refusal while the upstream works); False if too late."""
        ...

    async def extend_timeout(self, seconds: float) -> None:
        """Ask Envoy to wait longer for the answer to the message it is waiting on."""
        ...

    async def stream(self, body: bytes, end_of_stream: bool, metadata: dict[str, Any] | None = None) -> bool:
        """Send response body bytes in full-duplex mode, whenever the session has them."""
        ...

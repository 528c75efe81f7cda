"""Every rule about which ext_proc phases Envoy sends, over plain values.

- `needed_mode`: the static mode a config needs (what the generated Envoy config asks for, what
  `check` prints, what requests start with). A phase no hook needs is never asked for.
- `response_body_mode`: per request, at the response headers, what Envoy must send of the body.
- `ModeTracker`: the mode Envoy follows for one stream (its config, then the overrides it honoured)
  and whether another message will come, so the transport can end the stream itself.
- `envoy_processing_mode` and `phases_asked`: the same static mode as Envoy's config and `check` say it.
"""

from __future__ import annotations

from extproc.decisions import BodyMode, Continue, Decision, Deferred, Mode, Reply
from extproc.types import HookKind, Phase

# Hook kinds that need Envoy to send the response headers (and, per request, maybe the body).
RESPONSE_SIDE_KINDS = frozenset(
    {
        HookKind.MODERATION,
        HookKind.POST_CALL_SUCCESS,
        HookKind.POST_CALL_FAILURE,
        HookKind.POST_CALL_STREAMING,
        HookKind.POST_CALL_STREAMING_ITERATOR,
        HookKind.POST_CALL_RESPONSE_HEADERS,
        HookKind.LOG_SUCCESS,
        HookKind.LOG_FAILURE,
    }
)
_READ_SUCCESS = frozenset({HookKind.POST_CALL_SUCCESS, HookKind.LOG_SUCCESS})
_READ_FAILURE = frozenset({HookKind.POST_CALL_FAILURE, HookKind.LOG_FAILURE})
_READ_STREAM = frozenset({HookKind.POST_CALL_STREAMING, HookKind.LOG_SUCCESS})
_HEADERS_PHASES = (Phase.REQUEST_HEADERS, Phase.RESPONSE_HEADERS)


def needed_mode(kinds: frozenset[HookKind], *, enforce_user: bool, routing: bool, renames: bool) -> Mode:
    """The phases the configured hooks (`kinds`: the kinds some handler implements) and settings use."""
    return Mode(
        request_body=BodyMode.BUFFERED if enforce_user or kinds or routing else BodyMode.NONE,
        response_headers=renames or bool(kinds & RESPONSE_SIDE_KINDS),
        response_body=BodyMode.NONE,
    )


def reads_success_answers(kinds: frozenset[HookKind]) -> bool:
    """Whether a hook reads whole successful answers (the sidecar then reports their usage itself)."""
    return bool(kinds & _READ_SUCCESS)


def reads_streams(kinds: frozenset[HookKind]) -> bool:
    """Whether a hook reads streamed answers (the sidecar then reports their usage itself)."""
    return bool(kinds & _READ_STREAM) or HookKind.POST_CALL_STREAMING_ITERATOR in kinds


def needs_sidecar(mode: Mode) -> bool:
    """False when no hook and no setting needs anything from LLM requests: Envoy never asks."""
    return mode.request_body is not BodyMode.NONE or mode.response_headers


def response_body_mode(kinds: frozenset[HookKind], status: int, is_sse: bool, renamed: bool) -> BodyMode:
    """What Envoy must send of one answer's body: an error for failure hooks, a stream chunk by chunk
    (STREAMED) or to iterator hooks (FULL_DUPLEX_STREAMED), a whole answer for success hooks or a
    model name to put back; NONE when nothing reads it."""
    if status >= 400:
        return BodyMode.BUFFERED if kinds & _READ_FAILURE else BodyMode.NONE
    if is_sse:
        if HookKind.POST_CALL_STREAMING_ITERATOR in kinds:
            return BodyMode.FULL_DUPLEX_STREAMED
        return BodyMode.STREAMED if kinds & _READ_STREAM or renamed else BodyMode.NONE
    return BodyMode.BUFFERED if kinds & _READ_SUCCESS or renamed else BodyMode.NONE


def envoy_processing_mode(mode: Mode, one_message: bool) -> dict[str, str]:
    """The ext_proc filter's `processing_mode`; one-message mode skips the request-headers message."""
    return {
        "request_header_mode": "SKIP" if one_message else "SEND",
        "request_body_mode": mode.request_body.name,
        "response_header_mode": "SEND" if mode.response_headers else "SKIP",
        "response_body_mode": BodyMode.NONE.name,
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }


def phases_asked(mode: Mode, one_message: bool = False) -> list[Phase]:
    """The phases Envoy is asked for on LLM routes, as `check` prints them."""
    if not needs_sidecar(mode):
        return []
    phases = [] if one_message else [Phase.REQUEST_HEADERS]
    if mode.request_body is not BodyMode.NONE:
        phases.append(Phase.REQUEST_BODY)
    if mode.response_headers:
        phases.append(Phase.RESPONSE_HEADERS)
    return phases


class ModeTracker:
    """The processing mode Envoy follows on one stream, and whether it sends another message."""

    __slots__ = ("mode",)

    def __init__(self, mode: Mode) -> None:
        self.mode = mode

    def after(self, phase: Phase, decision: Decision, end_of_stream: bool) -> bool:
        """Note that `decision` answers `phase` and say whether Envoy sends another message.

        Envoy honours a mode override only in answers to headers messages. False lets the transport end
        the stream itself instead of waiting for Envoy to close or reset it (a reset cancels the pending
        read, and grpc.aio leaks native memory for a cancelled read).
        """
        if isinstance(decision, Reply):
            return False
        if isinstance(decision, Continue) and decision.mode is not None and phase in _HEADERS_PHASES:
            self.mode = decision.mode
        mode = self.mode
        if mode.response_body is BodyMode.FULL_DUPLEX_STREAMED:  # its last chunk or its trailers end it
            last = (phase is Phase.RESPONSE_BODY and end_of_stream) or phase is Phase.RESPONSE_TRAILERS
            return not last
        if isinstance(decision, Deferred):
            return True
        response_side = mode.response_headers or mode.response_body is not BodyMode.NONE
        if phase is Phase.REQUEST_HEADERS:
            return (not end_of_stream and mode.request_body is not BodyMode.NONE) or response_side
        if phase is Phase.REQUEST_BODY:
            return not end_of_stream or response_side
        if phase is Phase.RESPONSE_HEADERS:
            return not end_of_stream and mode.response_body is not BodyMode.NONE
        if phase is Phase.RESPONSE_BODY:
            return not end_of_stream or mode.response_trailers
        return False  # trailers come last

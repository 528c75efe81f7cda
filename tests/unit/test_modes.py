"""Every "which ext_proc phases" rule of `extproc.request.modes`, as tables over plain values."""

import pytest

from extproc.decisions import (
    CONTINUE,
    DEFERRED,
    PASS_THROUGH_MODE,
    BodyMode,
    Continue,
    Mode,
    Reply,
)
from extproc.request.modes import (
    RESPONSE_SIDE_KINDS,
    ModeTracker,
    envoy_processing_mode,
    needed_mode,
    needs_sidecar,
    phases_asked,
    response_body_mode,
)
from extproc.types import HookKind, Phase

K = HookKind
NONE, STREAMED, BUFFERED, FULL_DUPLEX = (
    BodyMode.NONE,
    BodyMode.STREAMED,
    BodyMode.BUFFERED,
    BodyMode.FULL_DUPLEX_STREAMED,
)
REQUEST_ONLY = Mode(request_body=BUFFERED)  # e.g. pre-call hooks only
BOTH_SIDES = Mode(request_body=BUFFERED, response_headers=True)  # e.g. a failure hook
ANSWER_BUFFERED = BOTH_SIDES.with_response_body(BUFFERED)  # a success hook reads this answer
ANSWER_STREAMED = BOTH_SIDES.with_response_body(STREAMED)
ANSWER_FULL_DUPLEX = BOTH_SIDES.with_response_body(FULL_DUPLEX)
REPLY = Reply(400, b"{}")


# ---- needed_mode: the static mode a config needs ----


@pytest.mark.parametrize(
    ("kinds", "enforce_user", "routing", "renames", "expected"),
    [
        (set(), False, False, False, PASS_THROUGH_MODE),
        (set(), True, False, False, REQUEST_ONLY),
        (set(), False, True, False, REQUEST_ONLY),
        (set(), False, True, True, BOTH_SIDES),
        (set(), False, False, True, Mode(response_headers=True)),
        ({K.PRE_CALL}, False, False, False, REQUEST_ONLY),
        ({K.LOG_PRE_API_CALL}, False, False, False, REQUEST_ONLY),
        ({K.PRE_CALL, K.LOG_PRE_API_CALL}, True, True, False, REQUEST_ONLY),
        ({K.PRE_CALL, K.POST_CALL_SUCCESS}, False, False, False, BOTH_SIDES),
    ],
)
def test_needed_mode(kinds, enforce_user, routing, renames, expected):
    mode = needed_mode(frozenset(kinds), enforce_user=enforce_user, routing=routing, renames=renames)
    assert mode == expected


@pytest.mark.parametrize("kind", sorted(RESPONSE_SIDE_KINDS))
def test_every_response_side_kind_asks_for_the_response_headers(kind):
    assert needed_mode(frozenset({kind}), enforce_user=False, routing=False, renames=False) == BOTH_SIDES


def test_the_response_side_kinds_are_every_kind_but_the_request_sides():
    assert set(HookKind) - RESPONSE_SIDE_KINDS == {K.PRE_CALL, K.LOG_PRE_API_CALL}


# ---- needs_sidecar ----


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (PASS_THROUGH_MODE, False),
        (REQUEST_ONLY, True),
        (Mode(request_body=STREAMED), True),
        (Mode(response_headers=True), True),
        (BOTH_SIDES, True),
        (Mode(response_body=BUFFERED), False),  # a response body mode is chosen per request, never static
    ],
)
def test_needs_sidecar(mode, expected):
    assert needs_sidecar(mode) is expected


# ---- response_body_mode: per request, at the response headers ----


@pytest.mark.parametrize(
    ("kinds", "status", "is_sse", "renamed", "expected"),
    [
        # errors: read only for failure hooks and the failure event
        ({K.POST_CALL_FAILURE}, 500, False, False, BUFFERED),
        ({K.LOG_FAILURE}, 429, False, False, BUFFERED),
        ({K.POST_CALL_FAILURE}, 400, False, False, BUFFERED),
        ({K.POST_CALL_FAILURE}, 400, True, False, BUFFERED),  # an error is never a stream
        ({K.POST_CALL_SUCCESS, K.LOG_SUCCESS}, 500, False, True, NONE),
        ({K.POST_CALL_STREAMING_ITERATOR}, 503, True, False, NONE),
        # streams
        ({K.POST_CALL_STREAMING_ITERATOR}, 200, True, False, FULL_DUPLEX),
        ({K.POST_CALL_STREAMING_ITERATOR, K.POST_CALL_STREAMING}, 200, True, True, FULL_DUPLEX),
        ({K.POST_CALL_STREAMING}, 200, True, False, STREAMED),
        ({K.LOG_SUCCESS}, 200, True, False, STREAMED),
        (set(), 200, True, True, STREAMED),
        ({K.POST_CALL_SUCCESS}, 200, True, False, NONE),
        ({K.POST_CALL_FAILURE, K.MODERATION, K.POST_CALL_RESPONSE_HEADERS}, 200, True, False, NONE),
        # whole answers
        ({K.POST_CALL_SUCCESS}, 200, False, False, BUFFERED),
        ({K.LOG_SUCCESS}, 201, False, False, BUFFERED),
        (set(), 200, False, True, BUFFERED),
        ({K.POST_CALL_SUCCESS}, 399, False, False, BUFFERED),
        ({K.POST_CALL_STREAMING}, 200, False, False, NONE),
        ({K.POST_CALL_STREAMING_ITERATOR}, 200, False, False, NONE),
        ({K.POST_CALL_FAILURE, K.LOG_FAILURE}, 200, False, False, NONE),
        ({K.MODERATION, K.POST_CALL_RESPONSE_HEADERS}, 200, False, False, NONE),
    ],
)
def test_response_body_mode(kinds, status, is_sse, renamed, expected):
    assert response_body_mode(frozenset(kinds), status, is_sse, renamed) is expected


# ---- envoy_processing_mode and phases_asked: the static mode as Envoy's config and `check` say it ----


@pytest.mark.parametrize(
    ("mode", "one_message", "expected"),
    [
        (PASS_THROUGH_MODE, False, ("SEND", "NONE", "SKIP")),
        (REQUEST_ONLY, False, ("SEND", "BUFFERED", "SKIP")),
        (BOTH_SIDES, False, ("SEND", "BUFFERED", "SEND")),
        (BOTH_SIDES, True, ("SKIP", "BUFFERED", "SEND")),
        (Mode(response_headers=True), True, ("SKIP", "NONE", "SEND")),
        (ANSWER_BUFFERED, False, ("SEND", "BUFFERED", "SEND")),  # the body mode is per request
    ],
)
def test_envoy_processing_mode(mode, one_message, expected):
    request_headers, request_body, response_headers = expected
    assert envoy_processing_mode(mode, one_message) == {
        "request_header_mode": request_headers,
        "request_body_mode": request_body,
        "response_header_mode": response_headers,
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }


RH, RB, SH = Phase.REQUEST_HEADERS, Phase.REQUEST_BODY, Phase.RESPONSE_HEADERS


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (PASS_THROUGH_MODE, []),
        (REQUEST_ONLY, [RH, RB]),
        (Mode(request_body=STREAMED), [RH, RB]),
        (Mode(response_headers=True), [RH, SH]),
        (BOTH_SIDES, [RH, RB, SH]),
        (Mode(response_body=BUFFERED), []),
    ],
)
def test_phases_asked(mode, expected):
    assert phases_asked(mode) == expected


# ---- ModeTracker.after: every phase x decision kind x end_of_stream ----

# Overrides as the session gives them: pass-through at the request headers, a body mode at the response
# headers. Envoy honours them only in answers to headers messages, so in a body or trailers answer the
# same override must change nothing.
OVERRIDE = {
    Phase.REQUEST_HEADERS: PASS_THROUGH_MODE,
    Phase.REQUEST_BODY: PASS_THROUGH_MODE,
    Phase.REQUEST_TRAILERS: PASS_THROUGH_MODE,
    Phase.RESPONSE_HEADERS: ANSWER_BUFFERED,
    Phase.RESPONSE_BODY: ANSWER_BUFFERED,
    Phase.RESPONSE_TRAILERS: ANSWER_BUFFERED,
}


def decision_of(kind, phase):
    return {
        "continue": CONTINUE,
        "override": Continue(mode=OVERRIDE[phase]),
        "reply": REPLY,
        "deferred": DEFERRED,
    }[kind]


# (phase, decision, end_of_stream) -> (another message?, the mode followed afterwards), from BOTH_SIDES.
GRID = [
    (Phase.REQUEST_HEADERS, "continue", False, True, BOTH_SIDES),
    (Phase.REQUEST_HEADERS, "continue", True, True, BOTH_SIDES),  # no body, but the response comes
    (Phase.REQUEST_HEADERS, "override", False, False, PASS_THROUGH_MODE),
    (Phase.REQUEST_HEADERS, "override", True, False, PASS_THROUGH_MODE),
    (Phase.REQUEST_HEADERS, "reply", False, False, BOTH_SIDES),
    (Phase.REQUEST_HEADERS, "reply", True, False, BOTH_SIDES),
    (Phase.REQUEST_HEADERS, "deferred", False, True, BOTH_SIDES),
    (Phase.REQUEST_HEADERS, "deferred", True, True, BOTH_SIDES),
    (Phase.REQUEST_BODY, "continue", False, True, BOTH_SIDES),
    (Phase.REQUEST_BODY, "continue", True, True, BOTH_SIDES),
    (Phase.REQUEST_BODY, "override", False, True, BOTH_SIDES),  # ignored
    (Phase.REQUEST_BODY, "override", True, True, BOTH_SIDES),  # ignored
    (Phase.REQUEST_BODY, "reply", False, False, BOTH_SIDES),
    (Phase.REQUEST_BODY, "reply", True, False, BOTH_SIDES),
    (Phase.REQUEST_BODY, "deferred", False, True, BOTH_SIDES),
    (Phase.REQUEST_BODY, "deferred", True, True, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "continue", False, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "continue", True, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "override", False, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "override", True, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "reply", False, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "reply", True, False, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "deferred", False, True, BOTH_SIDES),
    (Phase.REQUEST_TRAILERS, "deferred", True, True, BOTH_SIDES),
    (Phase.RESPONSE_HEADERS, "continue", False, False, BOTH_SIDES),  # nothing reads the body
    (Phase.RESPONSE_HEADERS, "continue", True, False, BOTH_SIDES),
    (Phase.RESPONSE_HEADERS, "override", False, True, ANSWER_BUFFERED),  # the body comes next
    (Phase.RESPONSE_HEADERS, "override", True, False, ANSWER_BUFFERED),  # there is no body
    (Phase.RESPONSE_HEADERS, "reply", False, False, BOTH_SIDES),
    (Phase.RESPONSE_HEADERS, "reply", True, False, BOTH_SIDES),
    (Phase.RESPONSE_HEADERS, "deferred", False, True, BOTH_SIDES),
    (Phase.RESPONSE_HEADERS, "deferred", True, True, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "continue", False, True, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "continue", True, False, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "override", False, True, BOTH_SIDES),  # ignored
    (Phase.RESPONSE_BODY, "override", True, False, BOTH_SIDES),  # ignored
    (Phase.RESPONSE_BODY, "reply", False, False, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "reply", True, False, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "deferred", False, True, BOTH_SIDES),
    (Phase.RESPONSE_BODY, "deferred", True, True, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "continue", False, False, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "continue", True, False, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "override", False, False, BOTH_SIDES),  # ignored
    (Phase.RESPONSE_TRAILERS, "override", True, False, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "reply", False, False, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "reply", True, False, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "deferred", False, True, BOTH_SIDES),
    (Phase.RESPONSE_TRAILERS, "deferred", True, True, BOTH_SIDES),
]


def test_the_grid_covers_every_phase_decision_and_end_of_stream():
    cells = {(phase, kind, eos) for phase, kind, eos, *_ in GRID}
    assert len(cells) == len(GRID) == len(Phase) * 4 * 2


@pytest.mark.parametrize(("phase", "kind", "end_of_stream", "more", "mode_after"), GRID)
def test_mode_tracker_after(phase, kind, end_of_stream, more, mode_after):
    tracker = ModeTracker(BOTH_SIDES)
    assert tracker.after(phase, decision_of(kind, phase), end_of_stream) is more
    assert tracker.mode == mode_after


# Request-side only (pre-call hooks): nothing comes after the request body.
@pytest.mark.parametrize(
    ("phase", "decision", "end_of_stream", "more"),
    [
        (Phase.REQUEST_HEADERS, CONTINUE, False, True),
        (Phase.REQUEST_HEADERS, CONTINUE, True, False),  # no body follows, no response asked for
        (Phase.REQUEST_HEADERS, Continue(mode=BOTH_SIDES), True, True),  # an override that asks for it
        (Phase.REQUEST_BODY, CONTINUE, False, True),  # more body chunks
        (Phase.REQUEST_BODY, CONTINUE, True, False),
        (Phase.RESPONSE_HEADERS, CONTINUE, False, False),
    ],
)
def test_mode_tracker_request_side_only(phase, decision, end_of_stream, more):
    assert ModeTracker(REQUEST_ONLY).after(phase, decision, end_of_stream) is more


@pytest.mark.parametrize(
    ("phase", "decision", "end_of_stream", "more"),
    [
        (Phase.RESPONSE_HEADERS, Continue(mode=ANSWER_STREAMED), False, True),
        (Phase.RESPONSE_BODY, CONTINUE, False, True),
        (Phase.RESPONSE_BODY, CONTINUE, True, False),
    ],
)
def test_mode_tracker_streamed_answer(phase, decision, end_of_stream, more):
    tracker = ModeTracker(ANSWER_STREAMED if phase is Phase.RESPONSE_BODY else BOTH_SIDES)
    assert tracker.after(phase, decision, end_of_stream) is more


# Full duplex: only the upstream's last chunk, its trailers (or a reply) end the stream, whatever the answer.
@pytest.mark.parametrize(
    ("phase", "decision", "end_of_stream", "more"),
    [
        (Phase.RESPONSE_BODY, DEFERRED, False, True),
        (Phase.RESPONSE_BODY, DEFERRED, True, False),
        (Phase.RESPONSE_BODY, CONTINUE, False, True),
        (Phase.RESPONSE_BODY, CONTINUE, True, False),
        (Phase.RESPONSE_BODY, REPLY, False, False),
        (Phase.RESPONSE_HEADERS, CONTINUE, False, True),
        (Phase.RESPONSE_TRAILERS, CONTINUE, True, False),
        (Phase.RESPONSE_TRAILERS, DEFERRED, True, False),
    ],
)
def test_mode_tracker_full_duplex(phase, decision, end_of_stream, more):
    tracker = ModeTracker(ANSWER_FULL_DUPLEX)
    assert tracker.after(phase, decision, end_of_stream) is more
    assert tracker.mode == ANSWER_FULL_DUPLEX


def test_a_whole_full_duplex_stream():
    tracker = ModeTracker(BOTH_SIDES)
    steps = [
        (Phase.REQUEST_HEADERS, Continue(mode=BOTH_SIDES), False, True),
        (Phase.REQUEST_BODY, CONTINUE, True, True),
        (Phase.RESPONSE_HEADERS, Continue(mode=ANSWER_FULL_DUPLEX), False, True),
        (Phase.RESPONSE_BODY, DEFERRED, False, True),
        (Phase.RESPONSE_BODY, DEFERRED, False, True),
        (Phase.RESPONSE_BODY, DEFERRED, True, False),
    ]
    assert [tracker.after(phase, d, eos) for phase, d, eos, _ in steps] == [more for *_, more in steps]
    assert tracker.mode.response_trailers


def test_a_whole_buffered_answer():
    tracker = ModeTracker(BOTH_SIDES)
    steps = [
        (Phase.REQUEST_HEADERS, Continue(mode=BOTH_SIDES), False, True),
        (Phase.REQUEST_BODY, CONTINUE, True, True),
        (Phase.RESPONSE_HEADERS, Continue(mode=ANSWER_BUFFERED), False, True),
        (Phase.RESPONSE_BODY, CONTINUE, True, False),
    ]
    assert [tracker.after(phase, d, eos) for phase, d, eos, _ in steps] == [more for *_, more in steps]


def test_a_pass_through_at_the_headers_ends_the_stream_there():
    tracker = ModeTracker(BOTH_SIDES)
    assert tracker.after(Phase.REQUEST_HEADERS, Continue(mode=PASS_THROUGH_MODE), False) is False
    assert tracker.mode == PASS_THROUGH_MODE
    # were Envoy to send the body anyway, nothing would follow it
    assert tracker.after(Phase.REQUEST_BODY, CONTINUE, True) is False


@pytest.mark.parametrize("phase", [Phase.REQUEST_BODY, Phase.RESPONSE_BODY])
def test_an_override_in_a_body_answer_is_ignored(phase):
    tracker = ModeTracker(BOTH_SIDES)
    assert tracker.after(phase, Continue(mode=ANSWER_FULL_DUPLEX), False) is True
    assert tracker.mode == BOTH_SIDES
    # honoured, a full-duplex mode would keep the stream open after response headers nobody reads
    assert tracker.after(Phase.RESPONSE_HEADERS, CONTINUE, False) is False

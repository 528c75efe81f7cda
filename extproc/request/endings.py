"""`Ending`: every request that reached the hooks ends exactly once, and every error answer is made here.

The ways a request ends: a success (the success logging event), a refusal by a pre-call hook, a failure
of the sidecar's own checks or of a hook, an upstream error, or a client that left. Each is counted once
(`llm_extproc_requests_total` by outcome), told to the failure hooks where it is a failure (they may
replace the client's error), and answered in the request's API family's shape. The response-header hooks
run once per request, on whatever answer decides the client's response headers.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from extproc.api.endpoints import DEFAULT_FAMILY
from extproc.api.guardrail_inputs import GuardrailInputs
from extproc.api.views import unwrap
from extproc.decisions import (
    CALL_TYPE,
    FAILED_IN,
    REFUSED_BY,
    STATUS,
    UPSTREAM_STATUS,
    VERDICT,
    Continue,
    Deferred,
    Reply,
)
from extproc.errors import (
    ClientDisconnected,
    ErrorInfo,
    HookTimeout,
    ProxyException,
    RejectedRequestError,
    UpstreamError,
    describe,
    is_http_exception,
)
from extproc.request import guardrail_selection as selection
from extproc.request.admission import public_headers
from extproc.request.state import RequestState
from extproc.telemetry import metrics, tracing
from extproc.types import HookKind, JSONDict

log = logging.getLogger("extproc.session")
AnyDecision = TypeVar("AnyDecision", bound=Continue | Reply | Deferred)

_PROXY_REASONS = {
    401: "enforce_user_param",
    403: "model_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    400: "invalid_request",
}


def outcome_of(exc: BaseException) -> str:
    """How a failure is counted."""
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    if isinstance(exc, ClientDisconnected):
        return "disconnected"
    if isinstance(exc, RejectedRequestError):
        return "refused"
    return "error"


def reason_of(exc: BaseException, moderation: bool) -> str:
    """A bounded label for why the sidecar answered with an error."""
    if isinstance(exc, ProxyException):
        return _PROXY_REASONS.get(exc.status_code, "internal")
    if isinstance(exc, HookTimeout):
        return "hook_timeout"
    if not is_http_exception(exc):
        return "hook_error"  # a crash, in a moderation hook too: not a verdict
    return "moderation" if moderation else "hook_refusal"


def _trace_end(
    request: RequestState, call_type: str, outcome: str, model: Any, answer: JSONDict | None
) -> None:
    """The request's span gets its GenAI attributes; prompt and answer texts are read only if recorded."""
    family, data = request.family, request.data or {}
    usage = answer.get("usage") if answer is not None else None

    def answer_texts() -> list[str]:
        inputs = GuardrailInputs.of_response(answer, call_type) if answer is not None else None
        return [] if inputs is None else list(inputs.inputs.get("texts") or [])

    tracing.request_ended(
        request.span,
        call_type,
        outcome,
        model,
        request.status,
        usage if isinstance(usage, dict) else {},
        answer,
        prompt=(lambda: family.prompt_text(data)) if family is not None and data else None,
        answer_texts=answer_texts,
    )


class Ending:
    """The exactly-once ledger of one request, and the answers its failures get."""

    __slots__ = ("_headers_added", "ended", "request")

    def __init__(self, request: RequestState) -> None:
        self.request = request
        self.ended = False
        self._headers_added = False

    def end(self, outcome: str, response: Any = None) -> bool:
        """Mark the request ended (once) and count how, with its GenAI duration and token metrics;
        False when it had ended already."""
        if self.ended:
            return False
        self.ended = True
        request = self.request
        call_type = request.call_type_label
        if call_type is not None:
            metrics.REQUESTS.labels(call_type, outcome).inc()
            answer = unwrap(response) if response is not None else None
            usage = answer.get("usage") if isinstance(answer, dict) else None
            model = request.public_model or (request.data or {}).get("model")
            duration_s = (datetime.now() - request.start_time).total_seconds()
            metrics.record_request(call_type, model, outcome, usage, duration_s, request.first_chunk_s)
            if request.span is not None:
                _trace_end(request, call_type, outcome, model, answer if isinstance(answer, dict) else None)
        return True

    def succeeded(self, response: Any) -> None:
        """The answer went to the client whole: the success logging event."""
        request = self.request
        if self.end("success", response) and request.data is not None and request.call_type is not None:
            request.pipeline.chain.log_success(request.data, request.call_type, response, request.start_time)

    async def tell_failure(self, exc: BaseException) -> BaseException | None:
        """End as a failure and tell the failure hooks; the replacement error, if a hook gave one."""
        self.end(outcome_of(exc))
        request = self.request
        data = request.data if request.data is not None else {}
        chain = request.pipeline.chain
        return await chain.failed(data, exc, request.user, request.call_type, request.start_time)

    def tell_failure_later(self, exc: BaseException) -> None:
        """The same, for a request whose stream is gone: ended now, the hooks told in the background."""
        if self.end(outcome_of(exc)):
            self.request.pipeline.chain.run_in_background(self.tell_failure(exc))

    async def fail(self, exc: BaseException, hook: str | None = None, moderation: bool = False) -> Reply:
        """The one way the sidecar's own errors reach the client: failure hooks, then the family's error."""
        final = await self.tell_failure(exc) or exc
        error = describe(final)
        metrics.REFUSALS.labels(reason_of(exc, moderation)).inc()
        level = logging.INFO if error.status < 500 else logging.WARNING
        where = f" (in {hook})" if hook else ""
        # A hook that crashed (not a deliberate HTTP error, not a timeout): its traceback, file and line.
        crashed = hook is not None and not is_http_exception(exc) and not isinstance(exc, HookTimeout)
        log.log(
            level,
            "request %s failed: %d %s%s",
            self.request.request_id,
            error.status,
            error.message,
            where,
            exc_info=exc if crashed else None,
        )
        metadata: dict[str, Any] = {VERDICT: "error", STATUS: error.status}
        if hook:
            metadata[FAILED_IN] = hook
        return self._error_reply(error, metadata)

    async def refuse(self, refusal: RejectedRequestError) -> Reply:
        """A pre-call string refusal: failure hooks are told, the client gets the family's refusal answer."""
        request = self.request
        request.data = refusal.request_data
        log.info("request %s refused by %s", request.request_id, refusal.hook)
        metrics.REFUSALS.labels("pre_call_string").inc()
        await self.tell_failure(refusal)
        assert request.family is not None
        reply = request.family.refusal(refusal.message, refusal.request_data.get("stream") is True)
        metadata = {VERDICT: "refused", REFUSED_BY: refusal.hook, CALL_TYPE: request.call_type_label}
        return replace(reply, metadata=metadata)

    async def upstream_failed(self, response: Any, body: bytes) -> Continue | Reply:
        """An upstream error passes as it came, unless a failure hook replaces it."""
        request = self.request
        detail = response if response is not None else body.decode("utf-8", "replace")
        replacement = await self.tell_failure(UpstreamError(request.status, detail))
        metadata = {VERDICT: "upstream_error", UPSTREAM_STATUS: request.status}
        if replacement is None:
            return Continue(metadata=metadata)
        reply = self._error_reply(describe(replacement), metadata)
        log.info("request %s: upstream %d replaced by %d", request.request_id, request.status, reply.status)
        return reply

    def _error_reply(self, error: ErrorInfo, metadata: dict[str, Any]) -> Reply:
        family = self.request.family or DEFAULT_FAMILY
        return family.error_reply(error, "llm-extproc_error", metadata)

    def stream_ended(self, response: Any, error: BaseException | None = None) -> None:
        """A stream's ending: a success, or a failure the client already saw as an error event."""
        if error is None:
            self.succeeded(response)
        else:
            self.tell_failure_later(error)

    def closed(self, waited_for_response: bool) -> None:
        """The gRPC stream ended. A request that reached the hooks and expected its response but never got
        to an ending (the client left, Envoy timed out) ends as a failure, so per-request accounting
        comes back down; otherwise it went upstream and no hook needed to see the answer."""
        if waited_for_response and self.request.data is not None:
            self.tell_failure_later(ClientDisconnected())
        else:
            self.end("forwarded")

    async def with_headers(self, decision: AnyDecision, response: Any = None) -> AnyDecision:
        """Merge what `async_post_call_response_headers_hook`s return into the client's response, once."""
        request = self.request
        chain = request.pipeline.chain
        if self._headers_added or isinstance(decision, Deferred) or request.data is None:
            return decision
        applied = selection.applied_guardrails(request.data) if chain.guardrails else ""
        if not chain.has(HookKind.POST_CALL_RESPONSE_HEADERS) and not applied:
            return decision
        self._headers_added = True
        extra: tuple[tuple[str, str], ...] = ()
        if chain.has(HookKind.POST_CALL_RESPONSE_HEADERS):
            extra = await chain.response_headers(
                request.data,
                request.user,
                response,
                public_headers(request.headers, request.pipeline.config.sidecar.auth.credential_headers),
            )
        if applied:  # the guardrails that ran, post-call ones included
            extra = (*extra, (selection.APPLIED_HEADER, applied))
        if not extra:
            return decision
        if isinstance(decision, Reply):
            return replace(decision, headers=decision.headers + extra)
        return replace(decision, set_headers=decision.set_headers + extra)

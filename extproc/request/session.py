"""`Session`: one HTTP request through the sidecar, phase by phase, free of protobuf.

`handle(phase, message)` is the only way in: the transport, `llm-extproc try`, the fuzzer and the process
harness all drive a request through it. A phase body is straight-line code that raises; failures leave
through the one boundary in `handle` to `Ending`, which ends the request exactly once and answers in the
request's API family's shape. The response-header hooks are merged there once, and the `ModeTracker`
says there whether Envoy sends another message. A session takes the `Pipeline` current at its start, so
a reload never changes a request in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from extproc.api.endpoints import UNHOOKED_MESSAGE, unhooked_llm_call
from extproc.api.openai import INTERNAL_ERROR
from extproc.decisions import (
    APPLIED_GUARDRAILS,
    CONTINUE,
    PASS_THROUGH_MODE,
    VERDICT,
    BodyMode,
    Continue,
    Decision,
    Deferred,
    Message,
    Outbox,
    Reply,
)
from extproc.errors import ClientDisconnected, HookFailed, ProxyException, RejectedRequestError
from extproc.request import admission
from extproc.request import guardrail_selection as selection
from extproc.request.answers import buffered_answer
from extproc.request.endings import Ending
from extproc.request.moderation import ModerationGate
from extproc.request.modes import ModeTracker, response_body_mode
from extproc.request.patience import SAFETY_S, Patience
from extproc.request.pipeline import MAX_MESSAGE_TIMEOUT_S, Pipeline
from extproc.request.routing import DEPLOYMENT_HEADER
from extproc.request.routing import route as route_to
from extproc.request.state import RequestState
from extproc.request.streaming import StreamPump, StreamRewriter, StreamState
from extproc.settings.auth import hashed_credentials
from extproc.telemetry import metrics, tracing
from extproc.telemetry.logs import bind_request_id
from extproc.types import (
    ENDPOINT_METADATA_KEY,
    FORWARDED_HEADERS_NAMESPACE,
    HookKind,
    JSONDict,
    Phase,
    hook_call_type,
)

log = logging.getLogger("extproc.session")

PASS_THROUGH = Continue(mode=PASS_THROUGH_MODE)
# An Envoy config the sidecar cannot enforce with: refused, never passed on unhooked.
NOT_BUFFERED = (
    "llm-extproc: the request body arrived in parts; configure Envoy's request_body_mode as BUFFERED"
)
NO_ENDPOINT = (
    f"llm-extproc: a body came without its headers and the route names no endpoint ({ENDPOINT_METADATA_KEY} "
    "in the ext_proc filter's grpc_initial_metadata, or a forwarded :path): regenerate Envoy's config"
)
Route = tuple[tuple[str, str], ...]


def _with_forwarded(decision: Decision, scrub: dict[str, Any]) -> Decision:
    """`decision` also overwriting the forwarded credentials in Envoy's metadata with their hashes."""
    if isinstance(decision, Deferred):
        return decision
    metadata = {**(decision.metadata or {}), FORWARDED_HEADERS_NAMESPACE: scrub}
    return replace(decision, metadata=metadata)


class Session:
    """The control flow of one request, from its headers to its last response byte."""

    __slots__ = (
        "_answer",
        "_scrub",
        "_started",
        "_stream_metadata",
        "ending",
        "metadata_namespaces",
        "moderation",
        "modes",
        "outbox",
        "passthrough",
        "pipeline",
        "request",
        "stream",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        outbox: Outbox,
        stream_metadata: Callable[[], Iterable[tuple[str, str]] | None] = tuple,
    ) -> None:
        self.pipeline = pipeline
        self.outbox = outbox
        self.request = RequestState(pipeline)
        self.ending = Ending(self.request)
        self.modes = ModeTracker(pipeline.request_mode)
        self.metadata_namespaces = pipeline.metadata_namespaces  # what `Message.read_metadata` must hold
        self.passthrough = False
        self.moderation: ModerationGate | None = None
        self.stream: StreamRewriter | StreamPump | None = None
        self._answer: Any = None  # the success view the response-header hooks see
        self._started = False  # the request's headers came (or were synthesised in one-message mode)
        self._stream_metadata = stream_metadata  # the gRPC stream's initial metadata (one-message mode)
        self._scrub: dict[str, Any] | None = None  # forwarded credentials, hashed (one-message mode)

    async def handle(self, phase: Phase, message: Message) -> tuple[Decision, bool]:
        """The answer to one ext_proc message, and whether Envoy sends another one on this stream."""
        pipeline = self.pipeline
        need_s = pipeline.phase_budgets[phase]
        if need_s + SAFETY_S <= pipeline.envoy_waits_s:
            decision = await self._decide(phase, message)
        else:  # the hooks may outlast Envoy's wait: ask for more if they do
            async with Patience(self.outbox, pipeline.envoy_waits_s, need_s, MAX_MESSAGE_TIMEOUT_S):
                decision = await self._decide(phase, message)
        return decision, self.modes.after(phase, decision, message.end_of_stream)

    async def _decide(self, phase: Phase, message: Message) -> Decision:
        """The phase's answer; every failure leaves its body through here, to `Ending`, once."""
        try:
            decision = await self._phase(phase, message)
        except HookFailed as failure:
            decision = await self.ending.fail(failure.cause, failure.label)
        except RejectedRequestError as refusal:
            decision = await self.ending.refuse(refusal)
        except ProxyException as exc:
            decision = await self.ending.fail(exc)
        except Exception:
            log.exception("request %s: unexpected error in phase %s", self.request.request_id, phase)
            decision = INTERNAL_ERROR
        if decision is not INTERNAL_ERROR and self._decides_headers(phase, decision, message.end_of_stream):
            decision = await self.ending.with_headers(decision, self._answer)
        if self._scrub:  # the first answer in one-message mode, whatever it is
            decision = _with_forwarded(decision, self._scrub)
            self._scrub = None
        return decision

    async def _phase(self, phase: Phase, message: Message) -> Decision:
        if phase is Phase.REQUEST_HEADERS:
            return await self._request_headers(message)
        if phase is Phase.REQUEST_BODY:
            return await self._request_body(message)
        if phase is Phase.RESPONSE_HEADERS:
            return await self._response_headers(message)
        if phase is Phase.RESPONSE_BODY:
            return await self._response_body(message)
        if phase is Phase.RESPONSE_TRAILERS and isinstance(self.stream, StreamPump):
            await self.stream.feed(b"", True)  # trailers follow the last chunk: the stream has ended
        return CONTINUE  # trailers: nothing to change

    def _decides_headers(self, phase: Phase, decision: Decision, end_of_stream: bool) -> bool:
        """Whether `decision` settles the client's response headers (an error, or the answer's headers)."""
        if isinstance(decision, Reply):
            return True
        if isinstance(decision, Deferred):
            return False
        if phase is Phase.RESPONSE_HEADERS:  # unless the buffered body comes next and decides them
            return decision.mode is None or decision.mode.response_body is not BodyMode.BUFFERED
        buffered = self.modes.mode.response_body is BodyMode.BUFFERED
        return phase is Phase.RESPONSE_BODY and end_of_stream and buffered

    async def before_next_message(self) -> None:
        """Called before the transport reads again: lets a running moderation reach its verdict first, for
        up to the hook timeout (Envoy waits 500 ms longer for any answer), so a refusal is pushed while
        no read is pending."""
        if self.moderation is not None:
            await self.moderation.settled(self.pipeline.config.sidecar.hook_timeout_ms / 1000)

    async def finished(self) -> None:
        """Wait for what the session still sends on its own (a full-duplex stream's last events)."""
        if isinstance(self.stream, StreamPump):
            await self.stream.finished()

    # ---- request side ----
    async def _request_headers(self, message: Message) -> Decision:
        self._started = True
        pipeline, request = self.pipeline, self.request
        headers = message.headers
        path, method = headers.get(":path", ""), headers.get(":method", "")
        family = pipeline.routes.match(path)
        if family is None or method != "POST" or not pipeline.needs_sidecar:
            # Where Envoy's routes are ours it refused these already; elsewhere (Istio) they come here.
            if pipeline.needs_sidecar and unhooked_llm_call(path, method, family is not None):
                raise ProxyException(UNHOOKED_MESSAGE, 404)
            self.passthrough = True
            return PASS_THROUGH
        request.family = family
        request.headers = headers
        request.metadata = message.read_metadata()
        request.request_id = headers.get("x-request-id", "")
        bind_request_id(request.request_id)
        if tracing.on():  # the request's span, Envoy's (from the stream's traceparent) its parent
            request.span = tracing.start_request(
                self._stream_metadata, family.call_type.value, request.start_time, request.request_id
            )
        admission.check_headers(family, headers, pipeline.config.sidecar.max_request_bytes)
        if message.end_of_stream:
            return await self._request(b"")
        return Continue(mode=pipeline.request_mode)

    async def _request_body(self, message: Message) -> Decision:
        if not self._started:  # Envoy skipped the headers message
            return await self._one_message(message)
        if self.passthrough or self.request.family is None:
            return CONTINUE
        if not message.end_of_stream:  # the hooks never saw it whole: it must not go upstream either
            raise ProxyException(NOT_BUFFERED, 500)
        return await self._request(message.body)

    async def _one_message(self, message: Message) -> Decision:
        """One-message mode: no request-headers message came. An earlier filter forwarded the headers hooks
        may read; the route named the endpoint in the stream's metadata, or (where the routes are not ours:
        Istio) that filter forwarded `:path` too. Then the body, as usual."""
        metadata = message.read_metadata()
        forwarded = (metadata.pop(FORWARDED_HEADERS_NAMESPACE, None) or {}).get("headers")
        if not isinstance(forwarded, dict):
            forwarded = {}
        headers = {k: v for k, v in forwarded.items() if isinstance(v, str)}
        path = headers.pop(":path", None)
        endpoint = next((v for k, v in self._stream_metadata() or () if k == ENDPOINT_METADATA_KEY), path)
        if endpoint is None:  # a route that sends the body alone must name its endpoint, or nothing is hooked
            raise ProxyException(NO_ENDPOINT, 500)
        # Envoy keeps what it forwarded in its dynamic metadata, where access logs and later filters read
        # it: the answer replaces the copied headers with the credentials' hashes alone (see `_decide`).
        credentials = self.pipeline.config.sidecar.auth.credential_headers
        self._scrub = {"headers": hashed_credentials(headers, credentials)}
        synthesised = Message({":path": endpoint, ":method": "POST", **headers}, b"", False, lambda: metadata)
        await self._request_headers(synthesised)
        if self.passthrough:
            return CONTINUE
        return await self._request_body(message)

    async def _request(self, body: bytes) -> Decision:
        """Decode and check, run the pre-call chain, route, start moderation, re-encode only if changed."""
        pipeline, request = self.pipeline, self.request
        family, chain = request.family, pipeline.chain
        assert family is not None
        limit = pipeline.config.sidecar.max_request_bytes
        if len(body) > limit:
            raise admission.too_large(limit)
        content_type = request.headers.get("content-type", "")
        data: JSONDict = {}
        try:
            data = admission.decode(family, body, content_type)
            admission.check_body(family, data, pipeline.config.enforce_user_param)
            if chain.empty and pipeline.router is None:
                return CONTINUE
            end_user = family.user(data)
            request.user.end_user_id = end_user if isinstance(end_user, str) else None
            admission.check_model(family.model(data), request.user.models)
        except ProxyException:
            if chain.tells_failures:  # refused before its hooks: failure hooks still see its id and metadata
                request.data = admission.add_sidecar_keys(data, request)
            raise
        requested_model = family.model(data)
        # A request's choice of guardrails is for the hooks, never for the upstream.
        stripped = selection.KEY in data
        from_body = selection.take_body_selection(data) if stripped else []
        if family.metadata_key != "metadata":  # the client's own metadata: its selection taken out now
            from_metadata = selection.take_metadata_selection(data)
            if from_metadata is not None:
                from_body, stripped = [*from_metadata, *from_body], True
        sent = admission.client_values(family, data)
        stripped = selection.upstream_metadata(sent) or stripped
        pre_call = chain.has(HookKind.PRE_CALL)
        pristine = family.codec.decode(body, content_type) if pre_call else None  # to compare with
        data = request.data = admission.add_sidecar_keys(data, request)
        if chain.guardrails:
            selection.select(data, from_body, pipeline.config.deployment_guardrails, requested_model)
        call_type = hook_call_type(family.call_type, pipeline.config.sidecar.call_types)
        if pre_call:
            data = request.data = await chain.pre_call(request.user, pipeline.cache, data, call_type)
        # Routing changes only what goes upstream: hooks keep seeing the model_name the client asked for.
        route: Route = ()
        upstream_model = data.get("model")
        if pipeline.router is not None:
            target = route_to(pipeline.router, upstream_model, family.path)
            request.public_model = target.model_name if target.upstream_model != target.model_name else None
            route = ((DEPLOYMENT_HEADER, target.id),)
            upstream_model = target.upstream_model
        metadata = admission.request_metadata(request, requested_model, upstream_model)
        chain.log_pre_api_call(data, call_type)
        if chain.has(HookKind.MODERATION):
            moderation = chain.moderation(data, request.user, call_type)
            self.moderation = ModerationGate(
                moderation, self._moderation_refused, self.outbox, pipeline.moderation_wait_s
            )
        applied = selection.applied_guardrails(data) if chain.guardrails else ""
        if applied:  # Envoy's config turns it into the answer's x-litellm-applied-guardrails
            metadata[APPLIED_GUARDRAILS] = applied
        upstream = admission.upstream_data(family, data, sent)
        if route:
            upstream["model"] = upstream_model
        unchanged = not stripped and (
            upstream == pristine if pristine is not None else upstream.get("model") == requested_model
        )
        if unchanged:
            return Continue(set_headers=route, clear_route_cache=bool(route), metadata=metadata)
        new_body = admission.encode(family, upstream, content_type)
        metadata[VERDICT] = "modified"
        headers = (("content-length", str(len(new_body))), *route)
        return Continue(set_headers=headers, body=new_body, clear_route_cache=bool(route), metadata=metadata)

    async def _moderation_refused(self, exc: BaseException, hook: str) -> Reply:
        return await self.ending.with_headers(await self.ending.fail(exc, hook, moderation=True))

    # ---- response side ----
    async def _response_headers(self, message: Message) -> Decision:
        request = self.request
        if self.passthrough or request.data is None:
            return CONTINUE
        status = message.headers.get(":status", "")
        request.status = int(status) if status.isdigit() else 0
        metrics.UPSTREAM.labels(metrics.status_class(request.status)).inc()
        if self.moderation is not None:
            refusal = await self.moderation.verdict()
            if refusal is not None:
                return refusal
        chain = self.pipeline.chain
        is_sse = request.status < 400 and message.headers.get("content-type", "").startswith(
            "text/event-stream"
        )
        body_mode = response_body_mode(chain.kinds, request.status, is_sse, request.public_model is not None)
        if body_mode is BodyMode.NONE:  # nothing reads this answer
            self.ending.end("upstream_error" if request.status >= 400 else "success")
            return CONTINUE
        mode = self.pipeline.request_mode.with_response_body(body_mode)
        if is_sse:
            self.stream = self._stream(body_mode)
            return Continue(remove_headers=("content-length",), mode=mode)
        if message.end_of_stream:
            decision, self._answer = await buffered_answer(request, self.ending, b"")
            return decision
        return Continue(mode=mode)

    def _stream(self, body_mode: BodyMode) -> StreamRewriter | StreamPump:
        request = self.request
        assert request.family is not None and request.data is not None
        state = StreamState(
            self.pipeline.chain, request.family, request.user, request.public_model, request.data
        )
        hold = self.pipeline.config.sidecar.max_stream_hold_bytes
        if body_mode is BodyMode.FULL_DUPLEX_STREAMED:
            return StreamPump(state, request.data, self.outbox, hold, self.ending)
        return StreamRewriter(state, hold, self.ending, request.status)

    async def _response_body(self, message: Message) -> Decision:
        if self.stream is not None:
            if self.request.first_chunk_s is None:  # time to first token, for a stream the sidecar reads
                self.request.first_chunk_s = (datetime.now() - self.request.start_time).total_seconds()
            return await self.stream.answer(message.body, message.end_of_stream)
        if self.passthrough or self.request.data is None or not message.end_of_stream:
            return CONTINUE
        decision, self._answer = await buffered_answer(self.request, self.ending, message.body)
        return decision

    def close(self) -> None:
        """Release per-request state; called once when the gRPC stream ends, however it ends.

        A request that reached the hooks and expected its response but never got to an ending (the
        client left, Envoy timed out) ends here as a failure, so per-request accounting comes back down;
        that ending keeps the request's data until the failure hooks have seen it.
        """
        if self.moderation is not None:
            self.moderation.cancel()
        if isinstance(self.stream, StreamPump):
            self.stream.cancel()
        self.stream = None
        waiting = self.pipeline.request_mode.response_headers and not self.ending.ended
        told_later = waiting and self.request.data is not None
        if told_later:
            self.ending.tell_failure_later(ClientDisconnected())
        else:
            self.ending.end("forwarded")  # went upstream; no hook needed to see the answer
        if self.request.span is not None:
            tracing.end_request(self.request.span)
        if not told_later:
            self.request.forget()

"""`Session`: one HTTP request's state and decisions, phase by phase, free of protobuf.

A session is created per gRPC stream (one stream = one HTTP request) and dies with it. It
takes the `Pipeline` current at its start, so a reload never changes a request in flight.
Every error the client gets passes through `_fail`, where the failure hooks may replace it.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from extproc.api.codecs import BodyError, dumps_exact, loads_exact
from extproc.api.endpoints import Endpoint, field_problem
from extproc.api.events import log_kwargs, usage_of
from extproc.api.multipart import MultipartError
from extproc.api.refusals import refusal_reply
from extproc.api.sse import SSEError
from extproc.api.views import unwrap, wrap
from extproc.errors import (
    ClientDisconnected,
    ProxyException,
    RejectedRequestError,
    UpstreamError,
    is_http_exception,
    reply_for,
)
from extproc.hooks.chain import HookFailed, HookTimeout
from extproc.request.decisions import (
    CONTINUE,
    DEFERRED,
    PASS_THROUGH_MODE,
    BodyMode,
    Continue,
    Decision,
    Deferred,
    Outbox,
    Reply,
)
from extproc.request.moderation import ModerationGate
from extproc.request.pipeline import Pipeline
from extproc.request.routing import DEPLOYMENT_HEADER, allowed
from extproc.request.streaming import StreamPump, StreamRewriter, StreamState, error_event
from extproc.settings.auth import UserAPIKeyAuth
from extproc.telemetry import metrics
from extproc.telemetry.logs import bind_request_id
from extproc.types import Headers, HookKind, JSONDict

log = logging.getLogger("extproc.session")
AnyDecision = TypeVar("AnyDecision", Continue, Reply, Deferred)

PASS_THROUGH = Continue(mode=PASS_THROUGH_MODE)
ENFORCE_USER_MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"
# Keys the sidecar adds to `data` for hooks (as LiteLLM does); never sent upstream.
SIDECAR_KEYS = ("metadata", "litellm_call_id", "proxy_server_request")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})


def public_headers(headers: Headers) -> Headers:
    """Request headers for hooks and logs: no pseudo-headers, no credentials."""
    return {k: v for k, v in headers.items() if k[0] != ":" and k not in SECRET_HEADERS}


def upstream_data(data: JSONDict, client_values: JSONDict) -> JSONDict:
    """`data` as the upstream must see it: the sidecar's additions gone, the client's own values back."""
    upstream = {k: v for k, v in data.items() if k not in SIDECAR_KEYS}
    upstream.update(client_values)
    return upstream


class Session:
    """The state of one request, from its headers to its last response byte."""

    __slots__ = (
        "_user",
        "data",
        "ended",
        "endpoint",
        "headers",
        "metadata",
        "mode",
        "moderation",
        "outbox",
        "passthrough",
        "pipeline",
        "public_model",
        "request_id",
        "start_time",
        "status",
        "stream",
        "stream_cut",
    )

    def __init__(self, pipeline: Pipeline, outbox: Outbox) -> None:
        self.pipeline = pipeline
        self.outbox = outbox
        self.endpoint: Endpoint | None = None
        self.headers: Headers = {}
        self.metadata: dict[str, Any] = {}
        self.passthrough = False
        self.request_id = ""
        self.start_time = datetime.now()
        self.data: JSONDict | None = None  # what hooks see after the pre-call chain, sidecar keys included
        self.status = 0
        self.public_model: str | None = None  # the client's model name when routing renamed it upstream
        self.ended = False  # exactly one ending (success or failure) per request that reached the hooks
        self.moderation: ModerationGate | None = None
        self.mode = pipeline.request_mode  # the processing mode Envoy follows (its config, then overrides)
        self.stream: StreamRewriter | StreamPump | None = None
        self.stream_cut = False
        self._user: UserAPIKeyAuth | None = None

    @property
    def user(self) -> UserAPIKeyAuth:
        if self._user is None:
            route = self.endpoint.path if self.endpoint else ""
            self._user = self.pipeline.config.sidecar.auth.build(self.headers, self.metadata, None, route)
        return self._user

    def answered(self, phase: str, decision: Decision, end_of_stream: bool) -> bool:
        """Note that `decision` answers `phase` (a mode override in a headers answer changes the mode Envoy
        follows) and say whether Envoy sends another message on this stream.

        False lets the transport end the stream itself, instead of waiting for Envoy to close or reset
        it (a reset cancels the pending read, and grpc.aio leaks native memory for a cancelled read).
        Envoy honours a mode override only in answers to headers messages.
        """
        if isinstance(decision, Reply):
            return False
        if isinstance(self.stream, StreamPump):  # full duplex: the upstream's last chunk is the last message
            return not (phase == "response_body" and end_of_stream)
        if isinstance(decision, Deferred):
            return True
        if decision.mode is not None and phase in ("request_headers", "response_headers"):
            self.mode = decision.mode
        mode = self.mode
        response_side = mode.response_headers or mode.response_body is not BodyMode.NONE
        if phase == "request_headers":
            return (not end_of_stream and mode.request_body is not BodyMode.NONE) or response_side
        if phase == "request_body":
            return not end_of_stream or response_side
        if phase == "response_headers":
            return not end_of_stream and mode.response_body is not BodyMode.NONE
        if phase == "response_body":
            return not end_of_stream or mode.response_trailers
        return False  # trailers come last

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
    async def request_headers(
        self, headers: Headers, end_of_stream: bool, metadata: dict[str, Any]
    ) -> Decision:
        pipeline = self.pipeline
        endpoint = pipeline.routes.match(headers.get(":path", ""))
        if endpoint is None or headers.get(":method") != "POST" or not pipeline.needs_sidecar:
            self.passthrough = True
            return PASS_THROUGH
        self.endpoint = endpoint
        self.headers = headers
        self.metadata = metadata
        self.request_id = headers.get("x-request-id", "")
        bind_request_id(self.request_id)
        content_type = headers.get("content-type", "")
        if not endpoint.codec.accepts(content_type):
            expected = (
                "multipart/form-data" if endpoint.codec.accepts("multipart/form-data") else "application/json"
            )
            message = f"Unsupported content-type {content_type!r} for {endpoint.path}: send {expected}"
            return await self._fail(ProxyException(message, 415, "content-type"))
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            message = f"Unsupported content-encoding {encoding!r}: send the body uncompressed"
            return await self._fail(ProxyException(message, 415, "content-encoding"))
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > pipeline.config.sidecar.max_request_bytes:
            return await self._fail(self._too_large())
        if end_of_stream:
            return await self._request(b"")
        return Continue(mode=pipeline.request_mode)

    async def request_without_headers(
        self, endpoint: str, headers: Headers, metadata: dict[str, Any], body: bytes, end_of_stream: bool
    ) -> Decision:
        """One-message mode: the request-headers message was skipped; the route named the endpoint and the
        headers hooks may read came as forwarded metadata. Then the body, as usual."""
        first = await self.request_headers({":path": endpoint, ":method": "POST", **headers}, False, metadata)
        if isinstance(first, Reply):
            return first
        if self.passthrough:
            return CONTINUE
        return await self.request_body(body, end_of_stream)

    async def request_body(self, body: bytes, end_of_stream: bool) -> Decision:
        if self.passthrough or self.endpoint is None:
            return CONTINUE
        if not end_of_stream:
            log.error("request body arrived in parts: configure Envoy's request_body_mode as BUFFERED")
            self.passthrough = True
            return CONTINUE
        return await self._request(body)

    async def _request(self, body: bytes) -> Decision:
        """Decode, enforce, run the pre-call chain, start moderation, re-encode only if changed."""
        pipeline, endpoint = self.pipeline, self.endpoint
        assert endpoint is not None
        if len(body) > pipeline.config.sidecar.max_request_bytes:
            return await self._fail(self._too_large())
        content_type = self.headers.get("content-type", "")
        try:
            data = endpoint.codec.decode(body, content_type)
        except BodyError as exc:
            return await self._fail_with({}, ProxyException(exc.message, exc.status, exc.param))
        if pipeline.config.enforce_user_param and "user" not in data:
            return await self._fail_with(data, ProxyException(ENFORCE_USER_MESSAGE, 401, None, "auth_error"))
        problem = field_problem(endpoint, data)
        if problem is not None:
            return await self._fail_with(data, ProxyException(problem[0], 400, problem[1]))
        chain, router = pipeline.chain, pipeline.router
        if chain.empty and router is None:
            return CONTINUE
        end_user = data.get("user")
        self.user.end_user_id = end_user if isinstance(end_user, str) else None
        requested_model = data.get("model")
        if not allowed(requested_model, self.user.models):
            message = (
                f"key not allowed to access model. This key can only access models={self.user.models}. "
                f"Tried to access {requested_model}"
            )
            return await self._fail_with(data, ProxyException(message, 403, "model"))
        # What the client itself sent under the keys the sidecar uses, and a pristine copy to compare with.
        client_values = {key: data[key] for key in SIDECAR_KEYS if key in data}
        pristine = endpoint.codec.decode(body, content_type) if chain.pre_call_hooks else None
        self._add_sidecar_keys(data)
        self.data = data
        call_type = endpoint.call_type.value
        if chain.pre_call_hooks:
            try:
                result = await chain.pre_call(self.user, pipeline.cache, data, call_type)
            except HookFailed as failure:
                return await self._fail(failure.cause, failure.hook.label)
            data = self.data = result.data
            if result.refusal is not None:
                return await self._refuse(result.refusal, result.refused_by or "")
        route: tuple[tuple[str, str], ...] = ()
        if router is not None:
            target = router.pick(data.get("model"))
            if target is None:
                message = (
                    f"{endpoint.path}: Invalid model name passed in model={data.get('model')}. "
                    "Call `/v1/models` to view available models for your key."
                )
                return await self._fail(ProxyException(message, 400, "model"))
            if target.upstream_model != target.model_name:
                self.public_model = target.model_name
            data["model"] = target.upstream_model
            route = ((DEPLOYMENT_HEADER, target.id),)
        metadata = self._request_metadata(requested_model, data)
        if chain.has(HookKind.LOG_PRE_API_CALL):
            chain.log_event(
                HookKind.LOG_PRE_API_CALL,
                model=data.get("model"),
                messages=data.get("messages"),
                kwargs=log_kwargs(data, call_type),
            )
        if chain.has(HookKind.MODERATION):
            moderation = chain.moderation(data, self.user, call_type)
            self.moderation = ModerationGate(
                moderation, self._moderation_refused, self.outbox, pipeline.moderation_wait_s
            )
        upstream = upstream_data(data, client_values)
        unchanged = upstream == pristine if pristine is not None else upstream.get("model") == requested_model
        if unchanged:
            return Continue(set_headers=route, clear_route_cache=bool(route), metadata=metadata)
        try:
            new_body = endpoint.codec.encode(upstream, content_type)
        except (TypeError, MultipartError) as exc:
            # orjson raises TypeError for values that are not JSON (a hook put one in `data`).
            message = f"llm-extproc: the request changed by hooks cannot be encoded: {exc}"
            return await self._fail(ProxyException(message, 500))
        metadata["verdict"] = "modified"
        headers = (("content-length", str(len(new_body))), *route)
        return Continue(set_headers=headers, body=new_body, clear_route_cache=bool(route), metadata=metadata)

    def _add_sidecar_keys(self, data: JSONDict) -> None:
        client_metadata = data.get("metadata")
        headers = public_headers(self.headers)
        metadata: JSONDict = dict(client_metadata) if isinstance(client_metadata, dict) else {}
        path = self.headers.get(":path", "")
        key_hash = self.user.api_key
        metadata.update(
            headers=headers,
            user_api_key=key_hash,
            user_api_key_hash=key_hash,
            endpoint=path,
            request_id=self.request_id,
        )
        data["metadata"] = metadata
        data["litellm_call_id"] = self.request_id
        data["proxy_server_request"] = {"url": path, "method": "POST", "headers": headers}

    def _request_metadata(self, requested_model: Any, data: JSONDict) -> dict[str, Any]:
        assert self.endpoint is not None
        return {
            "call_type": self.endpoint.call_type.value,
            "model": requested_model if isinstance(requested_model, str) else None,
            "upstream_model": data.get("model") if isinstance(data.get("model"), str) else None,
            "api_key_hash": self.user.api_key,
            "user": self.user.end_user_id,
            "verdict": "pass",
        }

    # ---- response side ----
    async def response_headers(self, headers: Headers, end_of_stream: bool) -> Decision:
        if self.passthrough or self.data is None:
            return CONTINUE
        status = headers.get(":status", "")
        self.status = int(status) if status.isdigit() else 0
        metrics.UPSTREAM.labels(metrics.status_class(self.status)).inc()
        if self.moderation is not None:
            refusal = await self.moderation.verdict()
            if refusal is not None:
                return refusal
        chain = self.pipeline.chain
        if self.status >= 400:
            wants_body = chain.has(HookKind.POST_CALL_FAILURE) or chain.has(HookKind.LOG_FAILURE)
        elif headers.get("content-type", "").startswith("text/event-stream"):
            return await self._add_headers(self._start_stream())
        else:
            wants_body = (
                chain.has(HookKind.POST_CALL_SUCCESS)
                or chain.has(HookKind.LOG_SUCCESS)
                or bool(self.public_model)
            )
        if not wants_body:
            self._end("upstream_error" if self.status >= 400 else "success")  # nothing reads this answer
            return await self._add_headers(CONTINUE)
        if end_of_stream:
            return await self._response(b"")
        return Continue(mode=self.pipeline.request_mode.with_response_body(BodyMode.BUFFERED))

    def _start_stream(self) -> Continue:
        """Pick the body mode a stream needs: none, STREAMED (per-chunk) or FULL_DUPLEX (iterators)."""
        chain, settings = self.pipeline.chain, self.pipeline.config.sidecar
        per_chunk = chain.has(HookKind.POST_CALL_STREAMING)
        if chain.has(HookKind.POST_CALL_STREAMING_ITERATOR):
            assert self.data is not None
            state = StreamState(chain, self.user, self.public_model)
            self.stream = StreamPump(
                state, self.data, self.outbox, settings.max_stream_hold_bytes, self._stream_done
            )
            mode = BodyMode.FULL_DUPLEX_STREAMED
        elif per_chunk or chain.has(HookKind.LOG_SUCCESS) or self.public_model:
            self.stream = StreamRewriter(
                StreamState(chain, self.user, self.public_model), settings.max_stream_hold_bytes, per_chunk
            )
            mode = BodyMode.STREAMED
        else:
            self._end("success")
            return CONTINUE
        return Continue(
            remove_headers=("content-length",), mode=self.pipeline.request_mode.with_response_body(mode)
        )

    def _stream_done(self, state: StreamState, error: BaseException | None = None) -> None:
        """The stream's ending: a success, or a failure the client already saw as an error event."""
        if error is None:
            self._log_success(wrap(state.assembled()))
        elif self._end("error"):  # now, before the task runs, so close() cannot end the request again
            self.pipeline.chain.run_in_background(self._failure_hooks(error))

    async def _stream_body(self, body: bytes, end_of_stream: bool) -> Decision:
        stream = self.stream
        if isinstance(stream, StreamPump):
            await stream.feed(body, end_of_stream)
            return DEFERRED
        assert stream is not None
        try:
            out = await stream.feed(body, end_of_stream)
        except (HookFailed, SSEError) as exc:
            cause = exc.cause if isinstance(exc, HookFailed) else exc
            log.warning("request %s: stream ended early: %r", self.request_id, cause)
            self._stream_done(stream.state, cause)
            self.stream = None
            self.stream_cut = True
            return Continue(body=error_event(cause))
        metadata = None
        if end_of_stream:
            metadata = {"upstream_status": self.status, **stream.state.usage}
            self._stream_done(stream.state)
        if out is None:
            return Continue(metadata=metadata) if metadata else CONTINUE
        return Continue(body=out, metadata=metadata)

    async def response_body(self, body: bytes, end_of_stream: bool) -> Decision:
        if self.stream is not None:
            return await self._stream_body(body, end_of_stream)
        if self.stream_cut:
            return Continue(body=b"")  # after the error event, the rest of the upstream stream is dropped
        if self.passthrough or self.data is None or not end_of_stream:
            return CONTINUE
        return await self._response(body)

    async def _response(self, body: bytes) -> Decision:
        """The whole upstream answer: failure hooks for an error status, success hooks otherwise."""
        try:
            response = loads_exact(body) if body else None
        except ValueError:
            response = None
        if self.status >= 400:
            return await self._upstream_failed(response, body)
        if not isinstance(response, dict):
            self._log_success(None)
            return await self._add_headers(CONTINUE)
        metadata: dict[str, Any] = {"upstream_status": self.status, **usage_of(response)}
        pristine = loads_exact(body) if self.pipeline.chain.has(HookKind.POST_CALL_SUCCESS) else None
        renamed = self.public_model is not None and response.get("model") != self.public_model
        if renamed:
            response["model"] = self.public_model  # the client sees the name it asked for
        view = wrap(response)
        if pristine is not None:
            assert self.data is not None
            try:
                view = await self.pipeline.chain.post_call_success(self.data, self.user, view)
            except HookFailed as failure:
                return await self._fail(failure.cause, failure.hook.label)
        final = unwrap(view)
        decision = Continue(metadata=metadata)
        if (pristine is not None and final != pristine) or (pristine is None and renamed):
            try:
                new_body = dumps_exact(final)
            except TypeError as exc:
                message = f"llm-extproc: the response changed by hooks cannot be encoded: {exc}"
                return await self._fail(ProxyException(message, 500))
            metadata["verdict"] = "modified"
            decision = Continue(
                set_headers=(("content-length", str(len(new_body))),), body=new_body, metadata=metadata
            )
        self._log_success(view)
        return await self._add_headers(decision, view)

    async def _add_headers(self, decision: AnyDecision, response: Any = None) -> AnyDecision:
        """Merge what `async_post_call_response_headers_hook`s return into the client's response."""
        chain = self.pipeline.chain
        if not chain.has(HookKind.POST_CALL_RESPONSE_HEADERS) or self.data is None:
            return decision
        if isinstance(decision, Deferred):
            return decision
        extra = await chain.response_headers(self.data, self.user, response, public_headers(self.headers))
        if not extra:
            return decision
        if isinstance(decision, Reply):
            return replace(decision, headers=decision.headers + extra)
        return replace(decision, set_headers=decision.set_headers + extra)

    # ---- endings ----
    def _end(self, outcome: str) -> bool:
        """Mark the request ended (once) and count how; False when it had ended already."""
        if self.ended:
            return False
        self.ended = True
        if self.endpoint is not None:
            metrics.REQUESTS.labels(self.endpoint.call_type.value, outcome).inc()
        return True

    def _log_success(self, response: Any) -> None:
        if not self._end("success"):
            return
        chain = self.pipeline.chain
        if chain.has(HookKind.LOG_SUCCESS) and self.data is not None and self.endpoint is not None:
            chain.log_event(
                HookKind.LOG_SUCCESS,
                kwargs=log_kwargs(self.data, self.endpoint.call_type.value),
                response_obj=response,
                start_time=self.start_time,
                end_time=datetime.now(),
            )

    async def _refuse(self, text: str, hook: str) -> Reply:
        """A pre-call string refusal: failure hooks are told, the client gets a well-formed answer."""
        assert self.endpoint is not None and self.data is not None
        log.info("request %s refused by %s", self.request_id, hook)
        metrics.REFUSALS.labels("pre_call_string").inc()
        # Failure hooks and the failure log are told; the refusal itself is the client's answer.
        await self._failure_hooks(RejectedRequestError(text, self.data))
        reply = refusal_reply(self.endpoint.call_type, self.data.get("stream") is True, text)
        refusal = Reply(
            reply.status,
            reply.body,
            reply.headers,
            reply.details,
            reply.content_type,
            {"verdict": "refused", "refused_by": hook, "call_type": self.endpoint.call_type.value},
        )
        return await self._add_headers(refusal)

    async def _failure_hooks(self, exc: BaseException) -> BaseException | None:
        """Tell the failure hooks and the failure log; the replacement error, if a hook gave one."""
        self._end(_outcome_of(exc))
        chain = self.pipeline.chain
        request_data = self.data if self.data is not None else {}
        replacement = None
        if chain.has(HookKind.POST_CALL_FAILURE):
            trace = "".join(traceback.format_exception(exc))
            replacement = await chain.post_call_failure(request_data, exc, self.user, trace)
        if chain.has(HookKind.LOG_FAILURE) and self.endpoint is not None:
            chain.log_event(
                HookKind.LOG_FAILURE,
                kwargs=log_kwargs(request_data, self.endpoint.call_type.value, exc),
                response_obj=None,
                start_time=self.start_time,
                end_time=datetime.now(),
            )
        return replacement

    async def _moderation_refused(self, exc: BaseException, hook: str) -> Reply:
        return await self._fail(exc, hook, moderation=True)

    async def _fail_with(self, data: JSONDict, exc: ProxyException) -> Reply:
        """A request refused before its hooks: failure hooks still see its id and metadata."""
        if self.pipeline.chain.has(HookKind.POST_CALL_FAILURE) or self.pipeline.chain.has(
            HookKind.LOG_FAILURE
        ):
            self._add_sidecar_keys(data)
            self.data = data
        return await self._fail(exc)

    async def _fail(self, exc: BaseException, hook: str | None = None, moderation: bool = False) -> Reply:
        """The one way the sidecar's own errors reach the client: failure hooks, then the OpenAI envelope."""
        final = await self._failure_hooks(exc) or exc
        error = reply_for(final)
        metrics.REFUSALS.labels(_reason_of(exc, moderation)).inc()
        level = logging.INFO if error.status < 500 else logging.WARNING
        log.log(
            level,
            "request %s failed: %d %s%s",
            self.request_id,
            error.status,
            error.message,
            f" (in {hook})" if hook else "",
        )
        metadata: dict[str, Any] = {"verdict": "error", "status": error.status}
        if hook:
            metadata["failed_in"] = hook
        reply = Reply(error.status, error.body, error.headers, "llm-extproc_error", metadata=metadata)
        return await self._add_headers(reply)

    async def _upstream_failed(self, response: Any, body: bytes) -> Decision:
        """An upstream error passes as it came, unless a failure hook replaces it."""
        detail = response if response is not None else body.decode("utf-8", "replace")
        replacement = await self._failure_hooks(UpstreamError(self.status, detail))
        metadata = {"verdict": "upstream_error", "upstream_status": self.status}
        if replacement is None:
            return await self._add_headers(Continue(metadata=metadata))
        error = reply_for(replacement)
        log.info("request %s: upstream %d replaced by %d", self.request_id, self.status, error.status)
        reply = Reply(error.status, error.body, error.headers, "llm-extproc_error", metadata=metadata)
        return await self._add_headers(reply)

    def _too_large(self) -> ProxyException:
        limit = self.pipeline.config.sidecar.max_request_bytes
        return ProxyException(f"Request body too large: the limit is {limit} bytes", 413, "request_body")

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
        if not self.ended and self.data is not None and self.pipeline.request_mode.response_headers:
            self._end("disconnected")
            self.pipeline.chain.run_in_background(self._failure_hooks(ClientDisconnected()))
            return
        self._end("forwarded")  # went upstream; no hook needed to see the answer
        self.headers = {}
        self.metadata = {}
        self.data = None


_PROXY_REASONS = {
    401: "enforce_user_param",
    403: "model_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    400: "invalid_request",
}


def _outcome_of(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError):
        return "upstream_error"
    if isinstance(exc, ClientDisconnected):
        return "disconnected"
    if isinstance(exc, RejectedRequestError):
        return "refused"
    return "error"


def _reason_of(exc: BaseException, moderation: bool) -> str:
    """A bounded label for why the sidecar answered with an error."""
    if isinstance(exc, ProxyException):
        return _PROXY_REASONS.get(exc.status_code, "internal")
    if isinstance(exc, HookTimeout):
        return "hook_timeout"
    if moderation:
        return "moderation"
    return "hook_refusal" if is_http_exception(exc) else "hook_error"

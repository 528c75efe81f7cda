"""The ext_proc gRPC service: the only code that touches Envoy's protobuf messages.

`Process()` walks one gRPC stream (one HTTP request): it reads each message, turns it into a protobuf-free
`Message`, hands it to `Session.handle`, and encodes the `Continue` / `Reply` answer as a
`ProcessingResponse` (header and body mutations, `mode_override`, immediate responses, dynamic metadata).
When the session says Envoy sends nothing more, it ends the stream itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import cache
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2, struct_pb2
from grpc._cython import cygrpc

from extproc.api.openai import INTERNAL_ERROR
from extproc.decisions import METADATA_NAMESPACE, Continue, Decision, Deferred, Message, Mode, Reply
from extproc.request.pipeline import Pipeline
from extproc.request.session import Session
from extproc.telemetry import metrics
from extproc.types import FORWARDED_HEADERS_NAMESPACE, Headers, Phase

log = logging.getLogger("extproc.transport")

_PM = processing_mode_pb2.ProcessingMode
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_PHASES = {phase.value: phase for phase in Phase}
# What a write to a stream Envoy has reset or cancelled raises: grpc.aio's errors, and its core's
# ExecuteBatchError (a BaseError) when the batch fails because the peer is gone.
_STREAM_GONE = (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError, cygrpc.BaseError)
_HEADERS_PHASES = (Phase.REQUEST_HEADERS, Phase.RESPONSE_HEADERS)
_NO_HEADERS: Headers = {}


def headers_of(header_map: Any) -> Headers:
    """Envoy sends values in `raw_value` (bytes); `value` only from older peers."""
    return {
        h.key: h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value for h in header_map.headers
    }


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE
    )


@cache
def mode_proto(mode: Mode) -> Any:
    """A complete ProcessingMode: Envoy treats every unset field of an override as off."""
    return _PM(
        request_header_mode=_PM.SEND,
        request_body_mode=int(mode.request_body),
        response_header_mode=_PM.SEND if mode.response_headers else _PM.SKIP,
        response_body_mode=int(mode.response_body),
        request_trailer_mode=_PM.SKIP,
        response_trailer_mode=_PM.SEND if mode.response_trailers else _PM.SKIP,
    )


def _common(decision: Continue) -> Any:
    common = pb.CommonResponse()
    if decision.set_headers or decision.remove_headers:
        mutation = common.header_mutation
        mutation.set_headers.extend(_header(k, v) for k, v in decision.set_headers)
        mutation.remove_headers.extend(decision.remove_headers)
    if decision.body is not None:
        common.body_mutation.body = decision.body
    if decision.clear_route_cache:
        common.clear_route_cache = True
    return common


def _set_metadata(response: Any, metadata: dict[str, Any] | None) -> Any:
    """The decision's metadata in the sidecar's namespace; what it says of the forwarded headers
    (`FORWARDED_HEADERS_NAMESPACE`, one-message mode) in theirs, where Envoy merges it over them."""
    if metadata:
        struct = struct_pb2.Struct()
        own = {k: v for k, v in metadata.items() if v is not None and k != FORWARDED_HEADERS_NAMESPACE}
        namespaces: dict[str, Any] = {METADATA_NAMESPACE: own}
        forwarded = metadata.get(FORWARDED_HEADERS_NAMESPACE)
        if forwarded:
            namespaces[FORWARDED_HEADERS_NAMESPACE] = forwarded
        struct.update(namespaces)
        response.dynamic_metadata.CopyFrom(struct)
    return response


def immediate(reply: Reply) -> Any:
    headers = pb.HeaderMutation(
        set_headers=[_header("content-type", reply.content_type)] + [_header(k, v) for k, v in reply.headers]
    )
    response = pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=reply.status),
            headers=headers,
            body=reply.body,
            details=reply.details,
        )
    )
    return _set_metadata(response, reply.metadata)


_PHASE_FIELD = {
    "request_headers": ("request_headers", pb.HeadersResponse),
    "response_headers": ("response_headers", pb.HeadersResponse),
    "request_body": ("request_body", pb.BodyResponse),
    "response_body": ("response_body", pb.BodyResponse),
}


@cache
def _plain_continue(phase: str, mode: Mode | None) -> Any:
    """Answers with no mutation are the same every time: build each once."""
    return _encode_continue(phase, Continue(mode=mode))


def _encode_continue(phase: str, decision: Continue) -> Any:
    if phase in ("request_trailers", "response_trailers"):
        return pb.ProcessingResponse(**{phase: pb.TrailersResponse()})
    field, message = _PHASE_FIELD[phase]
    response = pb.ProcessingResponse(**{field: message(response=_common(decision))})
    if decision.mode is not None:
        response.mode_override.CopyFrom(mode_proto(decision.mode))
    return _set_metadata(response, decision.metadata)


def encode(phase: str, decision: Decision) -> Any:
    """The answer to a phase; None when the session answers later by itself."""
    if isinstance(decision, Deferred):
        return None
    if isinstance(decision, Reply):
        return immediate(decision)
    if not (
        decision.set_headers
        or decision.remove_headers
        or decision.body is not None
        or decision.clear_route_cache
        or decision.metadata
    ):
        return _plain_continue(phase, decision.mode)
    return _encode_continue(phase, decision)


def _struct(struct: Any) -> dict[str, Any]:
    """A metadata Struct as a dict, read field by field (json_format's MessageToDict gives the same
    values several times slower: the forwarded headers map is one nested Struct per request)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return _struct(value.struct_value)
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None  # null_value, or unset


def _metadata(request: Any, namespaces: tuple[str, ...]) -> dict[str, Any]:
    filter_metadata = request.metadata_context.filter_metadata
    return {ns: _struct(filter_metadata[ns]) for ns in namespaces if ns in filter_metadata}


def message_of(request: Any, phase: Phase, namespaces: tuple[str, ...]) -> Message:
    """The session's view of one ext_proc message; request metadata is decoded only if the session asks."""
    if phase is Phase.REQUEST_TRAILERS or phase is Phase.RESPONSE_TRAILERS:
        return Message(_NO_HEADERS, b"", True)
    message = getattr(request, phase.value)
    if phase in _HEADERS_PHASES:
        headers, body = headers_of(message.headers), b""
    else:
        headers, body = _NO_HEADERS, message.body
    if namespaces and phase is not Phase.RESPONSE_HEADERS and phase is not Phase.RESPONSE_BODY:
        return Message(headers, body, message.end_of_stream, lambda: _metadata(request, namespaces))
    return Message(headers, body, message.end_of_stream)


class StreamOutbox:
    """Writes to one gRPC stream: serialised, and nothing after an immediate response."""

    __slots__ = ("_context", "_lock", "closed")

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = asyncio.Lock()
        self.closed = False

    async def write(self, response: Any) -> bool:
        """Send one message; False when the stream is closed or gone (Envoy reset or cancelled it):
        nobody is left to answer, and that is no error of the request's."""
        async with self._lock:
            if self.closed:
                return False
            try:
                await self._context.write(response)
            except _STREAM_GONE as exc:
                log.debug("ext_proc stream gone before a write: %r", exc)
                self.closed = True
                return False
            if response.HasField("immediate_response"):
                self.closed = True
            return True

    async def push(self, reply: Reply) -> bool:
        return await self.write(immediate(reply))

    async def extend_timeout(self, seconds: float) -> None:
        timeout = duration_pb2.Duration()
        timeout.FromMilliseconds(int(seconds * 1000))
        await self.write(pb.ProcessingResponse(override_message_timeout=timeout))

    async def stream(self, body: bytes, end_of_stream: bool, metadata: dict[str, Any] | None = None) -> bool:
        streamed = pb.StreamedBodyResponse(body=body, end_of_stream=end_of_stream)
        common = pb.CommonResponse(body_mutation=pb.BodyMutation(streamed_response=streamed))
        response = _set_metadata(
            pb.ProcessingResponse(response_body=pb.BodyResponse(response=common)), metadata
        )
        return await self.write(response)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    """Envoy's `ExternalProcessor` service; `current` returns the pipeline for new requests."""

    def __init__(self, current: Callable[[], Pipeline]) -> None:
        self._current = current

    async def Process(self, request_iterator: Any, context: Any) -> None:
        outbox = StreamOutbox(context)
        session = Session(self._current(), outbox, context.invocation_metadata)
        namespaces = session.metadata_namespaces
        metrics.IN_FLIGHT.inc()
        try:
            while not outbox.closed:
                await session.before_next_message()
                if outbox.closed:
                    return  # a refusal was pushed meanwhile: Envoy sends nothing more
                request = await context.read()
                if request is grpc.aio.EOF:
                    return
                name = request.WhichOneof("request")
                metrics.phase(name)
                phase = _PHASES.get(name)
                if phase is None:
                    log.error("unknown ext_proc message %r", name)
                    await outbox.write(immediate(INTERNAL_ERROR))
                    return
                decision, more = await session.handle(phase, message_of(request, phase, namespaces))
                response = encode(phase, decision)
                if more:
                    if response is not None:
                        await outbox.write(response)
                    continue
                # Envoy sends nothing more: end the stream now, with OK. Envoy may reset it as soon as it has
                # this answer; a write cancelled in flight would leak grpc.aio's batch, so it is shielded.
                if response is not None:
                    await asyncio.shield(outbox.write(response))
                await session.finished()
                return
        finally:  # (Envoy resets about half of all finished streams instead of closing them: not an error)
            metrics.IN_FLIGHT.dec()
            session.close()

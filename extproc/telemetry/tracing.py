"""OpenTelemetry traces: one span per request, a child span per hook call, exported over OTLP gRPC.

Off unless `extproc.tracing` (or `litellm_settings.callbacks: [otel]`) switches it on; OpenTelemetry is
imported only then (`start`). Off, the request core pays one attribute test per request and one context
variable read per hook call: no span objects, no attribute dicts.

A request's span (`SERVER`, named `<gen_ai.operation.name> <model>` as the GenAI semantic conventions
name spans) is a child of Envoy's span for the ext_proc stream when the stream's initial metadata
carries a `traceparent` (the generated Envoy config traces, see `envoy_config.add_tracing`); the
sampler follows that parent's decision, and samples new traces at the configured ratio. It starts with
the request's headers, gets its GenAI attributes (`gen_ai.operation.name`, `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.input_tokens`/`output_tokens`) and its outcome when the request
ends (`request/endings.py`), and ends with the gRPC stream. The span sits in a context variable while
the request runs, so each hook call (`hooks/chain.py`) becomes its child, with the handler, the hook
kind and how the call ended. Prompts and answers (`gen_ai.input.messages`, `gen_ai.output.messages`)
are recorded only with `record_content: true`; exception messages never are (they may quote a prompt):
a failed hook carries its `error.type` only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from extproc.settings.checks import ConfigError
from extproc.settings.tracing import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

# What traces import, by the distribution that provides it: pyproject.toml's `otel` extra (which the
# container image installs; tests/deploy/test_deploy_dockerfile.py holds them to each other).
PACKAGES = {
    "opentelemetry-api": (
        "opentelemetry.context",
        "opentelemetry.trace",
        "opentelemetry.trace.propagation.tracecontext",
    ),
    "opentelemetry-sdk": (
        "opentelemetry.sdk.resources",
        "opentelemetry.sdk.trace",
        "opentelemetry.sdk.trace.export",
        "opentelemetry.sdk.trace.sampling",
    ),
    "opentelemetry-exporter-otlp-proto-grpc": ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",),
}
MISSING = (
    "traces need OpenTelemetry's SDK and OTLP gRPC exporter, which are not installed here: install "
    "llm-extproc's `otel` extra (pip install 'llm-extproc[otel]'; the container image and the `dev` "
    "extra have it), or switch traces off"
)

# The running request's span (None: tracing off, or the request not sampled); hook spans are its children.
REQUEST_SPAN: ContextVar[Span | None] = ContextVar("llm_extproc_request_span", default=None)
TRACE_HEADERS = ("traceparent", "tracestate")
# Hook span attributes.
HANDLER = "llm_extproc.hook.handler"
KIND = "llm_extproc.hook.kind"
OUTCOME = "llm_extproc.hook.outcome"
# `gen_ai.operation.name` of each documented call type (the conventions' names where they have one).
OPERATIONS = {
    "completion": "chat",
    "text_completion": "text_completion",
    "embeddings": "embeddings",
    "image_generation": "generate_content",
    "moderation": "moderation",
    "audio_transcription": "transcription",
    "responses": "chat",
    "anthropic_messages": "chat",
}
_INPUT_KEYS = ("prompt_tokens", "input_tokens")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens")
_ERROR_OUTCOMES = frozenset(("error", "upstream_error"))

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_record_content = False
# OpenTelemetry's names the per-request functions use, bound once by `start` (no import on the hot path).
_otel: Any = None


class _Names:
    """What the per-request functions need from OpenTelemetry, imported once."""

    def __init__(self) -> None:
        from opentelemetry.trace import SpanKind, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.server = SpanKind.SERVER
        self.error = StatusCode.ERROR
        self.in_context: Callable[[Span], Context] = set_span_in_context
        self.propagator = TraceContextTextMapPropagator()


def require() -> None:
    """Import every module traces use (`PACKAGES`): a ConfigError naming the `otel` extra when one is
    missing or does not import (`serve` and `check` with traces on; the image's build)."""
    for modules in PACKAGES.values():
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"extproc.tracing: {MISSING} ({exc})") from None


def start(settings: TracingSettings) -> str:
    """Install OpenTelemetry's SDK with an OTLP gRPC exporter (a batch processor off the event loop);
    says where spans go. Called once per process, before requests arrive."""
    global _tracer, _provider, _record_content, _otel
    require()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    endpoint = settings.collector()
    ratio = settings.ratio()
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.service()}),
        sampler=ParentBased(TraceIdRatioBased(ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _record_content, _otel = provider, settings.record_content, _Names()
    _tracer = provider.get_tracer("llm-extproc")
    return f"traces to {endpoint} (new traces sampled at {ratio:g}, Envoy's decision followed)"


def stop() -> None:
    """Export what is left and stop (at shutdown)."""
    global _tracer, _provider, _otel
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = _otel = None


def on() -> bool:
    return _tracer is not None


def records_content() -> bool:
    return _record_content


def start_request(
    stream_metadata: Callable[[], Iterable[tuple[str, Any]] | None],
    call_type: str,
    started: datetime,
    request_id: str,
) -> Span | None:
    """The request's span, Envoy's stream span its parent when a `traceparent` came; None when tracing
    is off or the request is not sampled. It becomes the running request's span (`REQUEST_SPAN`)."""
    if _tracer is None:
        return None
    carrier = {k: v for k, v in stream_metadata() or () if k in TRACE_HEADERS and isinstance(v, str)}
    parent = _otel.propagator.extract(carrier) if carrier else None
    operation = OPERATIONS.get(call_type, call_type)
    span = _tracer.start_span(
        operation,
        context=parent,
        kind=_otel.server,
        start_time=int(started.timestamp() * 1e9),
        attributes={
            "gen_ai.operation.name": operation,
            "llm_extproc.call_type": call_type,
            "llm_extproc.request_id": request_id,
        },
    )
    if not span.is_recording():
        return None
    REQUEST_SPAN.set(span)
    return span


def _tokens(usage: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    return next((usage[k] for k in keys if isinstance(usage.get(k), int)), None)


def request_ended(
    span: Span,
    call_type: str,
    outcome: str,
    model: Any,
    upstream_status: int,
    usage: Mapping[str, Any],
    answer: Mapping[str, Any] | None,
    prompt: Callable[[], str] | None = None,
    answer_texts: Callable[[], Sequence[str]] | None = None,
) -> None:
    """The request's GenAI attributes and outcome, set when it ends (`Ending.end`). `prompt` and
    `answer_texts` are read only with `record_content`."""
    attributes: dict[str, Any] = {"llm_extproc.outcome": outcome}
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
        span.update_name(f"{OPERATIONS.get(call_type, call_type)} {model}")
    response_model = answer.get("model") if answer is not None else None
    if isinstance(response_model, str):
        attributes["gen_ai.response.model"] = response_model
    if upstream_status:
        attributes["llm_extproc.upstream_status"] = upstream_status
    for name, keys in (
        ("gen_ai.usage.input_tokens", _INPUT_KEYS),
        ("gen_ai.usage.output_tokens", _OUTPUT_KEYS),
    ):
        count = _tokens(usage, keys)
        if count is not None:
            attributes[name] = count
    if _record_content:
        if prompt is not None:
            attributes["gen_ai.input.messages"] = prompt()
        if answer_texts is not None:
            attributes["gen_ai.output.messages"] = orjson.dumps(list(answer_texts())).decode()
    span.set_attributes(attributes)
    if outcome in _ERROR_OUTCOMES:
        span.set_status(_otel.error)


def end_request(span: Span) -> None:
    """The gRPC stream ended: the request's span ends (hooks run after it, in the background, stay its
    children)."""
    span.end()


def start_hook(parent: Span, label: str, kind: str) -> Span:
    """A hook call's span, a child of its request's."""
    assert _tracer is not None
    handler = label[: -len(kind) - 1] if label.endswith("." + kind) else label
    return _tracer.start_span(
        f"{kind} {handler}", context=_otel.in_context(parent), attributes={HANDLER: handler, KIND: kind}
    )


def end_hook(span: Span, outcome: str, error: BaseException | None = None) -> None:
    """How the call ended: `ok`, `refused` (a string or an HTTP exception), `error`, `timeout`,
    `failed_open` (skipped by its policy) or `cancelled`; a failure's exception type, never its text."""
    span.set_attribute(OUTCOME, outcome)
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        if outcome in ("error", "timeout"):
            span.set_status(_otel.error)
    span.end()

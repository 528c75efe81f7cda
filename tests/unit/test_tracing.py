"""The sidecar's tracer with the real SDK and exporter, to an in-test OTLP collector: sampling follows
Envoy's decision, every hook outcome on its span, and nothing at all while tracing is off."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import pytest
from otlp_collector import OtlpCollector

from extproc import CustomLogger, HTTPException
from extproc.errors import HookFailed, RejectedRequestError
from extproc.hooks.chain import HookChain
from extproc.hooks.loader import LoadedHandler
from extproc.settings.config import HandlerPolicy
from extproc.settings.tracing import TracingSettings
from extproc.telemetry import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture()
def collector():
    collector = OtlpCollector().start()
    yield collector
    tracing.stop()
    collector.stop()


def metadata(flags):
    return lambda: [("x-llm-endpoint", "/chat/completions"), ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-{flags}")]


def test_nothing_is_made_while_tracing_is_off():
    assert not tracing.on()
    assert tracing.start_request(metadata("01"), "completion", datetime.now(), "id") is None
    assert tracing.REQUEST_SPAN.get() is None


def test_sampling_follows_envoys_decision_and_the_ratio_for_new_traces(collector):
    tracing.start(TracingSettings(endpoint=collector.endpoint, sample_ratio=0.0, service_name="t"))

    async def request(stream_metadata):  # each request runs in its own task, as grpc.aio runs streams
        span = tracing.start_request(stream_metadata, "embeddings", datetime.now(), "rid")
        if span is not None:
            tracing.request_ended(span, "embeddings", "success", "m", 200, {"prompt_tokens": 3}, None)
            tracing.end_request(span)
        current = tracing.REQUEST_SPAN.get()
        return span is not None, current is not None and current is span

    async def main():
        return [await asyncio.create_task(request(m)) for m in (metadata("01"), metadata("00"), tuple)]

    sampled, not_sampled, new_trace = asyncio.run(main())
    assert sampled == (True, True)
    assert not_sampled == (False, False) and new_trace == (False, False)  # ratio 0: no new trace sampled
    assert tracing.REQUEST_SPAN.get() is None  # the span lived in the request's own context
    tracing.stop()
    (span,) = collector.spans()
    assert (span["trace_id"], span["parent_span_id"], span["service"]) == (TRACE_ID, PARENT_ID, "t")
    assert span["name"] == "embeddings m"
    assert span["attributes"]["gen_ai.operation.name"] == "embeddings"
    assert span["attributes"]["gen_ai.usage.input_tokens"] == 3
    assert "gen_ai.usage.output_tokens" not in span["attributes"]


class Hooks(CustomLogger):
    def __init__(self, behaviour):
        super().__init__()
        self.behaviour = behaviour

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if self.behaviour == "refuse":
            return "not today"
        if self.behaviour == "http":
            raise HTTPException(status_code=403, detail="no")
        if self.behaviour in ("crash", "crash-open"):
            raise ValueError("the prompt was: secret")
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        return data


@pytest.mark.parametrize(
    ("behaviour", "outcome", "error_type"),
    [
        ("pass", "ok", None),
        ("refuse", "refused", None),
        ("http", "refused", "HTTPException"),
        ("crash", "error", "ValueError"),
        ("hang", "timeout", "HookTimeout"),
        ("crash-open", "failed_open", "ValueError"),
    ],
)
def test_each_hook_call_is_a_child_span_with_its_outcome(collector, behaviour, outcome, error_type):
    tracing.start(TracingSettings(endpoint=collector.endpoint))
    policies = {"mod.h": HandlerPolicy(fail_open=behaviour == "crash-open")}
    chain = HookChain([LoadedHandler("mod.h", Hooks(behaviour))], 0.05, policies)

    async def request():
        span = tracing.start_request(metadata("01"), "completion", datetime.now(), "rid")
        with contextlib.suppress(HookFailed, RejectedRequestError):
            await chain.pre_call(None, None, {"messages": []}, "acompletion")
        tracing.end_request(span)
        return span

    request_span = asyncio.run(request())
    tracing.stop()
    (hook,) = [s for s in collector.spans() if s["parent_span_id"] != PARENT_ID]
    assert hook["parent_span_id"] == format(request_span.get_span_context().span_id, "016x")
    assert hook["name"] == "async_pre_call_hook mod.h"
    assert hook["attributes"]["llm_extproc.hook.handler"] == "mod.h"
    assert hook["attributes"]["llm_extproc.hook.kind"] == "async_pre_call_hook"
    assert hook["attributes"]["llm_extproc.hook.outcome"] == outcome
    assert hook["attributes"].get("error.type") == error_type
    assert b"secret" not in collector.raw()  # an exception's text is never exported

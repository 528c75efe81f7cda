"""OpenTelemetry traces through a real Envoy: the spans Envoy and the sidecar export, received and decoded
by an in-test OTLP gRPC collector."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from otlp_collector import OtlpCollector

pytestmark = pytest.mark.e2e

HANDLER = """
from extproc import CustomLogger, HTTPException

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if "forbidden" in data["messages"][0]["content"]:
            raise HTTPException(status_code=403, detail="no")
        return data

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return None

h = H()
"""
CONFIG = """
litellm_settings: {{callbacks: [h.h, otel]}}
extproc:
  tracing: {{endpoint: "{endpoint}", service_name: traced-hooks{more}}}
  messages: {messages}
"""


def config(collector, more="", messages="one"):
    return CONFIG.format(endpoint=collector.endpoint, more=more, messages=messages)
PROMPT = "tell me about the zebra-umbrella-4711"


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpCollector]:
    # The sidecar's batch processor exports every 100 ms instead of every 5 s (it reads the environment).
    saved = os.environ.get("OTEL_BSP_SCHEDULE_DELAY")
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    collector = OtlpCollector().start()
    try:
        yield collector
    finally:
        collector.stop()
        if saved is None:
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY", None)
        else:
            os.environ["OTEL_BSP_SCHEDULE_DELAY"] = saved


def chat(stack, content, request_id):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    return stack.http.post("/v1/chat/completions", json=body, headers={"x-request-id": request_id})


def sidecar_span(spans, envoy_id):
    return next(
        (s for s in spans if s["attributes"].get("llm_extproc.request_id") == envoy_id and s["kind"] == 2),
        None,
    )


def test_request_and_hook_spans_are_children_of_envoys_with_genai_attributes(e2e_stack, collector):
    stack = e2e_stack(config(collector), {"h.py": HANDLER})
    ok = chat(stack, PROMPT, "trace-ok")
    refused = chat(stack, "forbidden words", "trace-refused")
    assert ok.status_code == 200 and refused.status_code == 403
    ok_id, refused_id = stack.request_id_of("trace-ok"), stack.request_id_of("trace-refused")

    def arrived(spans):
        request_spans = [sidecar_span(spans, i) for i in (ok_id, refused_id)]
        if any(s is None for s in request_spans):
            return False
        envoy_spans = {s["span_id"] for s in spans if s["service"] == "traced-hooks-envoy"}
        return all(s["parent_span_id"] in envoy_spans for s in request_spans)

    spans = collector.wait_for(arrived)
    by_id = {s["span_id"]: s for s in spans}

    # The request span: the sidecar's service, a child of Envoy's span for the ext_proc stream, in the trace
    # Envoy started for the HTTP request.
    request = sidecar_span(spans, ok_id)
    assert request["service"] == "traced-hooks"
    assert request["name"] == "chat gpt-4o-mini"
    stream = by_id[request["parent_span_id"]]
    assert stream["service"] == "traced-hooks-envoy" and stream["trace_id"] == request["trace_id"]
    assert "ExternalProcessor" in stream["name"]
    http = [
        s for s in spans if s["service"] == "traced-hooks-envoy" and s["attributes"].get("guid:x-request-id") == ok_id
    ]
    assert http and http[0]["trace_id"] == request["trace_id"]
    attributes = request["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["llm_extproc.outcome"] == "success"
    assert attributes["llm_extproc.upstream_status"] == 200

    # One child span per hook call, naming the handler, the hook kind and how it ended.
    hooks = sorted(
        (s["attributes"]["llm_extproc.hook.kind"], s["attributes"]["llm_extproc.hook.outcome"])
        for s in spans
        if s["parent_span_id"] == request["span_id"]
    )
    assert hooks == [("async_post_call_success_hook", "ok"), ("async_pre_call_hook", "ok")]
    assert {
        s["attributes"]["llm_extproc.hook.handler"] for s in spans if s["parent_span_id"] == request["span_id"]
    } == {"h.h"}

    refusal = sidecar_span(spans, refused_id)
    assert refusal["attributes"]["llm_extproc.outcome"] == "error"
    assert refusal["status"] == 2  # STATUS_CODE_ERROR
    (pre_call,) = [s for s in spans if s["parent_span_id"] == refusal["span_id"]]
    assert pre_call["attributes"]["llm_extproc.hook.kind"] == "async_pre_call_hook"
    assert pre_call["attributes"]["llm_extproc.hook.outcome"] == "refused"
    assert pre_call["attributes"]["error.type"] == "HTTPException"

    # Prompts and answers are not recorded unless asked for: the prompt's text (which the mock's answer
    # repeats) never left the sidecar.
    assert b"zebra-umbrella" not in collector.raw()
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes


def test_record_content_puts_the_prompt_and_the_answer_on_the_span(e2e_stack, collector):
    stack = e2e_stack(config(collector, ", record_content: true"), {"h.py": HANDLER})
    assert chat(stack, PROMPT, "trace-content").status_code == 200
    envoy_id = stack.request_id_of("trace-content")
    spans = collector.wait_for(lambda spans: sidecar_span(spans, envoy_id) is not None)
    attributes = sidecar_span(spans, envoy_id)["attributes"]
    assert attributes["gen_ai.input.messages"] == PROMPT
    # The mock answers with the prompt it got: the answer's text, as a JSON list of the choices' texts.
    assert json.loads(attributes["gen_ai.output.messages"]) == [f"[mock:gpt-4o-mini] {PROMPT}"]


def test_two_message_mode_gets_envoys_traceparent_too(e2e_stack, collector):
    stack = e2e_stack(config(collector, messages="two"), {"h.py": HANDLER})
    assert chat(stack, "hello", "trace-two").status_code == 200
    envoy_id = stack.request_id_of("trace-two")

    def parented(spans):
        request = sidecar_span(spans, envoy_id)
        return request is not None and any(s["span_id"] == request["parent_span_id"] for s in spans)

    spans = collector.wait_for(parented)
    request = sidecar_span(spans, envoy_id)
    (stream,) = [s for s in spans if s["span_id"] == request["parent_span_id"]]
    assert stream["service"] == "traced-hooks-envoy" and stream["trace_id"] == request["trace_id"]

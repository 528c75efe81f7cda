"""Prometheus metrics scraped from a real sidecar after traffic through a real Envoy."""

import re
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

CONFIG = """
litellm_settings: {callbacks: [h.h]}
general_settings: {enforce_user_param: true}
extproc:
  metrics_listen: "127.0.0.1:0"
"""
HANDLER = """
from extproc import CustomLogger, HTTPException

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "no":
            raise HTTPException(status_code=403, detail="no")

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return None

h = H()
"""


def scrape(stack):
    deadline = time.monotonic() + 10
    while (found := re.search(r"metrics on (http://\S+)", stack.sidecar_log())) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with httpx.Client(trust_env=False) as client:
        return client.get(found.group(1)).text


def sample(text, name, **labels):
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}{{{wanted}}} (\S+)$" if labels else rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_the_traffic_by_name_and_value(e2e_stack):
    stack = e2e_stack(CONFIG, {"h.py": HANDLER})
    before = scrape(stack)
    headers = {"authorization": "Bearer sk-never-in-metrics"}
    for content, user in (("hi", "u"), ("hi", "u"), ("no", "u"), ("hi", None)):
        body = {"model": "m", "messages": [{"role": "user", "content": content}]}
        if user:
            body["user"] = user
        stack.http.post("/v1/chat/completions", json=body, headers=headers)
    after = scrape(stack)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("llm_extproc_requests_total", call_type="completion", outcome="success") == 2
    assert delta("llm_extproc_requests_total", call_type="completion", outcome="error") == 2
    assert delta("llm_extproc_refusals_total", reason="hook_refusal") == 1
    assert delta("llm_extproc_refusals_total", reason="enforce_user_param") == 1
    assert delta("llm_extproc_upstream_responses_total", status_class="2xx") == 2
    assert delta("llm_extproc_phases_total", phase="response_body") == 2
    assert delta("llm_extproc_hook_duration_seconds_count", handler="h.h", hook="async_pre_call_hook") == 3
    assert sample(after, "llm_extproc_in_flight_requests") == 0
    assert "sk-never-in-metrics" not in after


def test_genai_metrics_count_each_ending_with_its_tokens(e2e_stack):
    """Every request that reached the hooks lands once in the GenAI duration histogram when it ends; a
    success also adds its usage, by token type; a model not in model_list is labelled "other"."""
    stack = e2e_stack(CONFIG, {"h.py": HANDLER})
    before = scrape(stack)
    for content in ("hi", "no"):
        body = {"model": "m", "user": "u", "messages": [{"role": "user", "content": content}]}
        stack.http.post("/v1/chat/completions", json=body)
    after = scrape(stack)

    def delta(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    common = {"call_type": "completion", "gen_ai_request_model": "other"}
    assert delta("gen_ai_client_operation_duration_seconds_count", **common, outcome="success") == 1
    assert delta("gen_ai_client_operation_duration_seconds_count", **common, outcome="error") == 1
    for kind in ("input", "output"):
        labels = {**common, "gen_ai_token_type": kind, "outcome": "success"}
        assert delta("gen_ai_client_token_usage_count", **labels) == 1
        assert delta("gen_ai_client_token_usage_sum", **labels) > 0


STREAM_HANDLER = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        return response

h = H()
"""


def test_time_to_first_token_is_recorded_for_streams_the_sidecar_reads(e2e_stack):
    """A stream whose chunks the sidecar reads adds one time to first token, no later than its duration; a
    buffered answer adds none."""
    stack = e2e_stack(CONFIG.replace("[h.h]", "[s.h]"), {"s.py": STREAM_HANDLER})
    labels = {"call_type": "completion", "gen_ai_request_model": "other", "outcome": "success"}
    before = scrape(stack)
    body = {"model": "m", "user": "u", "messages": [{"role": "user", "content": "hi"}]}
    assert stack.http.post("/v1/chat/completions", json=body).status_code == 200
    middle = scrape(stack)
    streamed = stack.http.post("/v1/chat/completions", json={**body, "stream": True}, headers={"x-mock-chunks": "5"})
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    after = scrape(stack)
    first = "gen_ai_server_time_to_first_token_seconds"
    assert sample(middle, f"{first}_count", **labels) == sample(before, f"{first}_count", **labels)
    assert sample(after, f"{first}_count", **labels) - sample(middle, f"{first}_count", **labels) == 1
    waited = sample(after, f"{first}_sum", **labels) - sample(middle, f"{first}_sum", **labels)
    took = sample(after, "gen_ai_client_operation_duration_seconds_sum", **labels) - sample(
        middle, "gen_ai_client_operation_duration_seconds_sum", **labels
    )
    assert 0 < waited <= took

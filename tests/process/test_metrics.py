"""Metrics by name and value after traffic, read from the registry a scrape would read."""

import orjson
from prometheus_client import REGISTRY, generate_latest

from .harness import (
    Harness,
    body_request,
    headers_request,
    response_body_request,
    response_headers_request,
)

HANDLER = """
import asyncio
from extproc import CustomLogger, HTTPException

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        content = data["messages"][0]["content"]
        if content == "refuse":
            return "no"
        if content == "forbid":
            raise HTTPException(status_code=403, detail="forbidden")
        if content == "crash":
            raise ValueError("boom")

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return None

h = H()
"""


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def chat(content):
    return body_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}))


async def test_requests_refusals_hooks_phases_and_upstream_are_counted(load_pipeline):
    built = load_pipeline(
        "litellm_settings: {callbacks: [m.h]}\ngeneral_settings: {enforce_user_param: true}",
        {"m.py": HANDLER},
    )
    before = {
        "success": value("llm_extproc_requests_total", call_type="completion", outcome="success"),
        "refused": value("llm_extproc_requests_total", call_type="completion", outcome="refused"),
        "error": value("llm_extproc_requests_total", call_type="completion", outcome="error"),
        "string": value("llm_extproc_refusals_total", reason="pre_call_string"),
        "hook_refusal": value("llm_extproc_refusals_total", reason="hook_refusal"),
        "hook_error": value("llm_extproc_refusals_total", reason="hook_error"),
        "enforce": value("llm_extproc_refusals_total", reason="enforce_user_param"),
        "bodies": value("llm_extproc_phases_total", phase="request_body"),
        "2xx": value("llm_extproc_upstream_responses_total", status_class="2xx"),
        "calls": value("llm_extproc_hook_duration_seconds_count", handler="m.h", hook="async_pre_call_hook"),
    }
    ok = orjson.dumps({"choices": []})
    async with Harness(built) as harness:
        user = {"user": "u"}
        await harness.exchange(
            headers_request(),
            body_request(
                orjson.dumps({"model": "m", **user, "messages": [{"role": "user", "content": "fine"}]})
            ),
            response_headers_request(),
            response_body_request(ok),
        )
        for content in ("refuse", "forbid", "crash"):
            await harness.exchange(
                headers_request(),
                body_request(
                    orjson.dumps({"model": "m", **user, "messages": [{"role": "user", "content": content}]})
                ),
            )
        await harness.exchange(headers_request(), chat("no user"))
    assert (
        value("llm_extproc_requests_total", call_type="completion", outcome="success") - before["success"]
        == 1
    )
    assert (
        value("llm_extproc_requests_total", call_type="completion", outcome="refused") - before["refused"]
        == 1
    )
    assert value("llm_extproc_requests_total", call_type="completion", outcome="error") - before["error"] == 3
    assert value("llm_extproc_refusals_total", reason="pre_call_string") - before["string"] == 1
    assert value("llm_extproc_refusals_total", reason="hook_refusal") - before["hook_refusal"] == 1
    assert value("llm_extproc_refusals_total", reason="hook_error") - before["hook_error"] == 1
    assert value("llm_extproc_refusals_total", reason="enforce_user_param") - before["enforce"] == 1
    assert value("llm_extproc_phases_total", phase="request_body") - before["bodies"] == 5
    assert value("llm_extproc_upstream_responses_total", status_class="2xx") - before["2xx"] == 1
    assert (
        value("llm_extproc_hook_duration_seconds_count", handler="m.h", hook="async_pre_call_hook")
        - before["calls"]
        == 4
    )
    assert value("llm_extproc_in_flight_requests") == 0
    exposition = generate_latest(REGISTRY).decode()
    assert "sk-metrics-secret-42" not in exposition and "Bearer" not in exposition
    import hashlib

    assert hashlib.sha256(b"sk-metrics-secret-42").hexdigest() not in exposition

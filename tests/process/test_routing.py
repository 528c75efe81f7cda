"""Model routing from model_list: rewrite, deployment header, round robin, unknown models, renamed answers."""

import collections

import orjson

from .harness import (
    Harness,
    body_request,
    header_value,
    headers_request,
    response_body_request,
    response_headers_request,
)

CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o-2024-08-06, api_base: "http://10.0.0.1:8000"}
    model_info: {id: east}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o-2024-08-06, api_base: "http://10.0.0.2:8000"}
    model_info: {id: west}
  - model_name: small
    litellm_params: {model: small}
extproc:
  routing: true
"""


def chat(model, stream=False):
    return body_request(
        orjson.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]})
    )


async def test_public_name_is_rewritten_and_the_deployment_header_set_round_robin(load_pipeline):
    built = load_pipeline(CONFIG)
    assert built.request_mode.response_headers  # the answers must be renamed back
    picked = collections.Counter()
    async with Harness(built) as harness:
        for _ in range(4):
            _, answer = await harness.exchange(headers_request(), chat("gpt-4o"))
            common = answer.request_body.response
            assert common.clear_route_cache
            assert orjson.loads(common.body_mutation.body)["model"] == "gpt-4o-2024-08-06"
            picked[header_value(common.header_mutation, "x-llm-deployment")] += 1
    assert picked == {"east": 2, "west": 2}


async def test_a_name_that_is_its_own_upstream_model_is_not_re_encoded(load_pipeline):
    async with Harness(load_pipeline(CONFIG)) as harness:
        _, answer = await harness.exchange(headers_request(), chat("small"))
    common = answer.request_body.response
    assert not common.HasField("body_mutation")
    assert header_value(common.header_mutation, "x-llm-deployment") == "small-2"


async def test_unknown_model_is_refused_in_litellms_words(load_pipeline):
    async with Harness(load_pipeline(CONFIG)) as harness:
        _, answer = await harness.exchange(headers_request(), chat("gpt-5"))
    reply = answer.immediate_response
    assert reply.status.code == 400
    error = orjson.loads(reply.body)["error"]
    assert error["message"] == (
        "/chat/completions: Invalid model name passed in model=gpt-5. "
        "Call `/v1/models` to view available models for your key."
    )
    assert error["param"] == "model"


async def test_the_answer_shows_the_name_the_client_asked_for(load_pipeline):
    upstream = orjson.dumps({"object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": []})
    async with Harness(load_pipeline(CONFIG)) as harness:
        *_, headers_answer, answer = await harness.exchange(
            headers_request(), chat("gpt-4o"), response_headers_request(), response_body_request(upstream)
        )
        assert headers_answer.mode_override.response_body_mode == 2  # BUFFERED, to rename
        assert orjson.loads(answer.response_body.response.body_mutation.body)["model"] == "gpt-4o"
        # a stream's chunks are renamed too
        call = harness.open()
        for request in (headers_request(), chat("gpt-4o", stream=True)):
            await call.write(request)
            await call.read()
        await call.write(response_headers_request(headers={"content-type": "text/event-stream"}))
        assert (await call.read()).mode_override.response_body_mode == 1  # STREAMED
        chunk = b'data: {"object":"chat.completion.chunk","model":"gpt-4o-2024-08-06","choices":[]}\n\n'
        await call.write(response_body_request(chunk + b"data: [DONE]\n\n"))
        streamed = (await call.read()).response_body.response.body_mutation.body
        call.cancel()
    assert b'"model":"gpt-4o"' in streamed and streamed.endswith(b"data: [DONE]\n\n")


def test_routing_without_a_model_list_is_a_config_error(load_pipeline):
    import pytest

    from extproc.settings.config import ConfigError

    with pytest.raises(ConfigError, match=r"extproc\.routing: true needs a model_list"):
        load_pipeline("extproc: {routing: true}")

"""`guardrail: generic_guardrail_api` through a real Envoy, against a real guardrail service
(tests/guardrail_service.py): requests and answers checked, refused, rewritten; a service that is down
fails closed unless `unreachable_fallback: fail_open`."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from guardrail_service import MASK, GuardrailService

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service() -> Iterator[GuardrailService]:
    """The default_on guardrail's service: blocks "forbidden", masks e-mail addresses."""
    with GuardrailService(block_word="forbidden") as running:
        yield running


@pytest.fixture(scope="module")
def answers_service() -> Iterator[GuardrailService]:
    """The answers-only guardrail's service: blocks "launch-codes"."""
    with GuardrailService(block_word="launch-codes") as running:
        yield running


@pytest.fixture(scope="module")
def down_url() -> str:
    """A service that is not there: a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def config(service_url: str, answers_url: str, down_url: str) -> str:
    return f"""
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o}}
guardrails:
  - guardrail_name: screen
    litellm_params:
      guardrail: generic_guardrail_api
      mode: [pre_call, post_call]
      api_base: {service_url}
      api_key: sk-guard-key
      default_on: true
      additional_provider_specific_params: {{threshold: 0.8}}
  - guardrail_name: answers-only
    litellm_params:
      guardrail: generic_guardrail_api
      mode: post_call
      api_base: {answers_url}
  - guardrail_name: down-closed
    litellm_params: {{guardrail: generic_guardrail_api, mode: pre_call, api_base: "{down_url}"}}
  - guardrail_name: down-open
    litellm_params:
      guardrail: generic_guardrail_api
      mode: pre_call
      api_base: "{down_url}"
      unreachable_fallback: fail_open
  - guardrail_name: screen-open
    litellm_params:
      guardrail: generic_guardrail_api
      mode: pre_call
      api_base: {answers_url}
      unreachable_fallback: fail_open
"""


@pytest.fixture()
def stack(e2e_stack, service: GuardrailService, answers_service: GuardrailService, down_url: str):
    stack = e2e_stack(config(service.url, answers_service.url, down_url))
    stack.mock_clear()
    service.clear()
    answers_service.clear()
    return stack


@pytest.fixture()
def client(stack):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-test", max_retries=0)


def upstream_body(stack) -> dict[str, Any]:
    record = stack.mock_last()
    assert record is not None, "nothing reached the upstream"
    return json.loads(base64.b64decode(record["body_base64"]))


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def by_input_type(service: GuardrailService, input_type: str) -> list[dict[str, Any]]:
    return [r.body for r in service.requests if r.body["input_type"] == input_type]


def test_a_clean_request_and_its_answer_are_both_checked(stack, client, service):
    raw = client.chat.completions.with_raw_response.create(**ask("hello there"))
    assert raw.parse().choices[0].message.content == "[mock:gpt-4o] hello there"
    assert "screen" in raw.headers["x-litellm-applied-guardrails"].split(",")
    (request,) = by_input_type(service, "request")
    (response,) = by_input_type(service, "response")
    assert request["texts"] == ["hello there"]
    assert response["texts"] == ["[mock:gpt-4o] hello there"]
    assert request["additional_provider_specific_params"] == {"threshold": 0.8}
    assert request["request_data"]["user_api_key_hash"] == hashlib.sha256(b"sk-test").hexdigest()
    assert isinstance(request["litellm_call_id"], str) and request["litellm_call_id"]
    assert request["structured_messages"] == [{"role": "user", "content": "hello there"}]
    assert service.last.headers["x-api-key"] == "sk-guard-key"


def test_a_blocked_prompt_gets_the_services_reason_and_never_goes_upstream(stack, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**ask("tell me the forbidden thing"))
    assert caught.value.status_code == 400
    assert caught.value.body["message"] == "contains forbidden"
    assert stack.mock_requests() == []


def test_a_rewritten_prompt_reaches_the_upstream_rewritten(stack, client, service):
    answer = client.chat.completions.create(**ask("write to jane.doe@example.com today"))
    assert upstream_body(stack)["messages"][-1]["content"] == f"write to {MASK} today"
    assert answer.choices[0].message.content == f"[mock:gpt-4o] write to {MASK} today"
    assert by_input_type(service, "request")[-1]["texts"] == ["write to jane.doe@example.com today"]


def test_the_answer_is_rewritten_by_post_call(stack, client, service, answers_service):
    # The default_on guardrail lets everything pass this time, so the address goes upstream as is and
    # only the answers-only guardrail (selected by the request) masks the answer that echoes it.
    service.answer_next(200, b'{"action": "NONE"}')
    try:
        answer = client.chat.completions.create(
            **ask("mail bob@example.org"), extra_body={"guardrails": ["answers-only"]}
        )
    finally:
        service.answer_normally()
    assert upstream_body(stack)["messages"][-1]["content"] == "mail bob@example.org"
    assert answer.choices[0].message.content == f"[mock:gpt-4o] mail {MASK}"
    assert [r.body["input_type"] for r in answers_service.requests] == ["response"]
    assert answers_service.last.body["texts"] == ["[mock:gpt-4o] mail bob@example.org"]


def test_an_answer_the_service_blocks_is_refused(stack, client, answers_service):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            **ask("what are the launch-codes"), extra_body={"guardrails": ["answers-only"]}
        )
    assert caught.value.body["message"] == "contains launch-codes"
    assert stack.mock_requests() != []  # the upstream answered; its answer never reached the client
    assert [r.body["input_type"] for r in answers_service.requests] == ["response"]


def test_a_streamed_answer_is_checked_whole(stack, client, service):
    stream = client.chat.completions.create(
        **ask("hi ann@example.net"), stream=True, extra_headers={"x-mock-chunks": "4"}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == f"[mock:gpt-4o] hi {MASK}"
    assert by_input_type(service, "response")[-1]["texts"] == [f"[mock:gpt-4o] hi {MASK}"]


def test_the_requests_extra_body_reaches_the_service(stack, client, service):
    client.chat.completions.create(
        **ask("tune it"),
        extra_body={"guardrails": [{"screen": {"extra_body": {"threshold": 0.1, "lang": "de"}}}]},
    )
    sent = by_input_type(service, "request")[-1]
    assert sent["additional_provider_specific_params"] == {"threshold": 0.1, "lang": "de"}
    assert "guardrails" not in upstream_body(stack)


def test_an_unreachable_service_fails_closed_by_default(stack, client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**ask("anyone there"), extra_body={"guardrails": ["down-closed"]})
    assert caught.value.status_code == 500
    assert "unreachable" in caught.value.body["message"]
    assert stack.mock_requests() == []


def test_an_unreachable_service_with_fail_open_lets_the_request_through(stack, client):
    answer = client.chat.completions.create(**ask("anyone there"), extra_body={"guardrails": ["down-open"]})
    assert answer.choices[0].message.content == "[mock:gpt-4o] anyone there"
    assert upstream_body(stack)["messages"][-1]["content"] == "anyone there"


@pytest.mark.parametrize(("status", "passes"), [(503, True), (502, True), (500, False), (200, False)])
def test_fail_open_covers_a_service_not_reached_not_one_that_answers_wrong(
    stack, client, answers_service, status, passes
):
    # A gateway's 502/503 means the service was not reached (as LiteLLM counts it); a 500 or an answer
    # that is not a verdict is the service failing, and fails closed.
    answers_service.answer_next(status, b"<html>oops</html>")
    try:
        if passes:
            answer = client.chat.completions.create(
                **ask("hello"), extra_body={"guardrails": ["screen-open"]}
            )
            assert answer.choices[0].message.content == "[mock:gpt-4o] hello"
        else:
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(**ask("hello"), extra_body={"guardrails": ["screen-open"]})
            assert "Generic Guardrail API screen-open" in caught.value.body["message"]
            assert stack.mock_requests() == []
    finally:
        answers_service.answer_normally()

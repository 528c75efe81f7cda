"""`handlers.generic_guardrail_api` against a real HTTP guardrail service (tests/guardrail_service.py)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from guardrail_service import MASK, GuardrailService

from extproc.errors import GuardrailUnreachable, describe, is_unreachable
from handlers.generic_guardrail_api import (
    ENDPOINT,
    GenericGuardrailAPI,
    GenericGuardrailAPIError,
    GuardrailRaisedException,
)


@pytest.fixture(scope="module")
def service() -> Iterator[GuardrailService]:
    with GuardrailService(block_word="forbidden") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(service: GuardrailService) -> None:
    service.answer_normally()
    service.clear()


@pytest.fixture
async def guard(service: GuardrailService) -> AsyncIterator[GenericGuardrailAPI]:
    guardrail = GenericGuardrailAPI(
        api_base=service.url,
        api_key="sk-guard",
        headers={"x-tenant": "acme"},
        additional_provider_specific_params={"threshold": 0.8, "language": "en"},
        guardrail_name="screen",
        event_hook=["pre_call", "post_call"],
        default_on=True,
    )
    yield guardrail
    await guardrail.aclose()


def request_data(**extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "litellm_call_id": "call-1",
        "metadata": {
            "user_api_key_hash": "h4sh",
            "user_api_key_alias": "alias",
            "user_api_key_team_id": "team-a",
            "user_api_key_end_user_id": "bob",
            "headers": {"user-agent": "sdk/1", "authorization": "Bearer sk-client", "x-source": "web"},
            "not_a_caller_field": "x",
        },
        **extra,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_none_returns_the_inputs_unchanged_and_sends_the_whole_payload(
    guard: GenericGuardrailAPI, service: GuardrailService
) -> None:
    inputs: Any = {"texts": ["hello", "world"], "model": "gpt-4o", "tools": [{"type": "function"}]}
    result = await guard.apply_guardrail(inputs, request_data(), "request")
    assert result == inputs
    sent = service.last.body
    assert sent["texts"] == ["hello", "world"]
    assert sent["input_type"] == "request"
    assert sent["model"] == "gpt-4o"
    assert sent["tools"] == [{"type": "function"}]
    assert sent["litellm_call_id"] == "call-1"
    assert sent["request_data"] == {
        "user_api_key_hash": "h4sh",
        "user_api_key_alias": "alias",
        "user_api_key_team_id": "team-a",
        "user_api_key_end_user_id": "bob",
    }
    assert sent["additional_provider_specific_params"] == {"threshold": 0.8, "language": "en"}
    # client headers: allowed values pass, others are only said to be there
    assert sent["request_headers"] == {
        "user-agent": "sdk/1",
        "authorization": "[present]",
        "x-source": "[present]",
    }


async def test_the_api_key_and_configured_headers_reach_the_service(
    guard: GenericGuardrailAPI, service: GuardrailService
) -> None:
    await guard.apply_guardrail({"texts": ["hello"]}, request_data(), "request")
    headers = service.last.headers
    assert headers["x-api-key"] == "sk-guard"
    assert headers["x-tenant"] == "acme"
    assert headers["content-type"] == "application/json"
    assert guard.api_base == f"{service.url}{ENDPOINT}"


async def test_blocked_raises_400_with_the_services_reason(guard: GenericGuardrailAPI) -> None:
    with pytest.raises(GuardrailRaisedException) as caught:
        await guard.apply_guardrail({"texts": ["fine", "a FORBIDDEN thing"]}, request_data(), "request")
    assert caught.value.status_code == 400
    assert str(caught.value) == "contains forbidden"
    info = describe(caught.value)
    assert (info.status, info.message, info.type) == (400, "contains forbidden", "invalid_request_error")
    assert not is_unreachable(caught.value)


async def test_blocked_without_a_reason_says_content_violates_policy(
    guard: GenericGuardrailAPI, service: GuardrailService
) -> None:
    service.answer_next(200, b'{"action": "BLOCKED"}')
    with pytest.raises(GuardrailRaisedException, match=r"^Content violates policy$"):
        await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")


async def test_intervened_returns_the_services_texts(guard: GenericGuardrailAPI) -> None:
    inputs: Any = {"texts": ["mail me at a.b@example.com", "no address"], "model": "m"}
    result = await guard.apply_guardrail(inputs, request_data(), "response")
    assert result["texts"] == [f"mail me at {MASK}", "no address"]
    assert result["model"] == "m"
    assert inputs["texts"][0] == "mail me at a.b@example.com"  # the caller's inputs are not edited


async def test_an_answer_is_sent_as_input_type_response(
    guard: GenericGuardrailAPI, service: GuardrailService
) -> None:
    data = {**request_data(), "response": {"choices": []}}
    await guard.apply_guardrail({"texts": ["an answer"]}, data, "response")
    assert service.last.body["input_type"] == "response"
    assert service.last.body["request_data"]["user_api_key_hash"] == "h4sh"


async def test_dynamic_extra_body_overlays_the_configured_params(
    guard: GenericGuardrailAPI, service: GuardrailService
) -> None:
    data = request_data()
    data["metadata"]["guardrails"] = [{"screen": {"extra_body": {"threshold": 0.1, "mode": "strict"}}}]
    await guard.apply_guardrail({"texts": ["x"]}, data, "request")
    assert service.last.body["additional_provider_specific_params"] == {
        "threshold": 0.1,
        "language": "en",
        "mode": "strict",
    }


async def test_extra_headers_let_the_service_see_those_client_header_values(
    service: GuardrailService,
) -> None:
    guard = GenericGuardrailAPI(api_base=service.url, extra_headers=["X-Source"], guardrail_name="g")
    try:
        await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")
    finally:
        await guard.aclose()
    assert service.last.body["request_headers"]["x-source"] == "web"
    assert service.last.body["request_headers"]["authorization"] == "[present]"
    assert "x-api-key" not in service.last.headers


async def test_a_refused_connection_is_unreachable() -> None:
    guard = GenericGuardrailAPI(api_base=f"http://127.0.0.1:{closed_port()}", guardrail_name="g")
    try:
        with pytest.raises(GuardrailUnreachable) as caught:
            await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")
    finally:
        await guard.aclose()
    assert is_unreachable(caught.value)
    assert caught.value.__cause__ is not None
    assert type(caught.value.__cause__).__module__.startswith("httpx")


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    guard = GenericGuardrailAPI(api_base="http://guard.invalid:8080", guardrail_name="g")
    try:
        with pytest.raises(GuardrailUnreachable):
            await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")
    finally:
        await guard.aclose()


async def test_a_service_slower_than_the_timeout_is_unreachable() -> None:
    with GuardrailService(delay_s=2.0) as slow:
        guard = GenericGuardrailAPI(api_base=slow.url, timeout=0.2, guardrail_name="g")
        try:
            with pytest.raises(GuardrailUnreachable, match="unreachable"):
                await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")
        finally:
            await guard.aclose()


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_saying_the_service_is_down_is_unreachable(
    guard: GenericGuardrailAPI, service: GuardrailService, status: int
) -> None:
    service.answer_next(status, b"upstream connect error")
    with pytest.raises(GuardrailUnreachable, match=str(status)):
        await guard.apply_guardrail({"texts": ["x"]}, request_data(), "request")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"detail": "crashed"}'),
        (401, b'{"detail": "bad key"}'),
        (200, b"<html>not json</html>"),
        (200, b'{"action": "MAYBE"}'),
        (200, b"[1, 2]"),
        (200, b'{"action": "GUARDRAIL_INTERVENED", "texts": ["one too few"]}'),
    ],
)
async def test_an_answer_that_is_not_a_verdict_is_an_error_not_unreachable(
    guard: GenericGuardrailAPI, service: GuardrailService, status: int, body: bytes
) -> None:
    service.answer_next(status, body)
    with pytest.raises(GenericGuardrailAPIError, match=r"Generic Guardrail API .*failed") as caught:
        await guard.apply_guardrail({"texts": ["a", "b"]}, request_data(), "request")
    assert not is_unreachable(caught.value)
    assert describe(caught.value).status == 500


def test_api_base_is_required_and_the_endpoint_is_appended_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENERIC_GUARDRAIL_API_BASE", raising=False)
    with pytest.raises(ValueError, match="api_base: required"):
        GenericGuardrailAPI()
    full = GenericGuardrailAPI(api_base=f"http://g:1{ENDPOINT}")
    assert full.api_base == f"http://g:1{ENDPOINT}"
    monkeypatch.setenv("GENERIC_GUARDRAIL_API_BASE", "http://env-guard:2/")
    assert GenericGuardrailAPI().api_base == f"http://env-guard:2{ENDPOINT}"


def test_litellm_options_it_does_not_have_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"fire_and_forget.*skip_if_team_id_in"):
        GenericGuardrailAPI(api_base="http://g:1", fire_and_forget=True, skip_if_team_id_in=["t"])


def test_it_takes_customguardrails_keywords() -> None:
    guard = GenericGuardrailAPI(
        api_base="http://g:1", guardrail_name="n", event_hook="post_call", default_on=True
    )
    assert (guard.guardrail_name, guard.event_hook, guard.default_on) == ("n", "post_call", True)
    with pytest.raises(ValueError, match="logging_only"):
        GenericGuardrailAPI(api_base="http://g:1", event_hook="logging_only")

"""Attacks on the built-in policies through a real Envoy: text hidden where the policies did not look
(tool calls and their JSON arguments, message names, tool definitions, tool results), and text disguised
with Unicode (fullwidth letters, zero-width characters) so that patterns miss it.

One stack: `handlers.pii` masking e-mail addresses and refusing card numbers and secrets, and
`handlers.keyword_moderation` blocking "forbidden".
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CONFIG = """
litellm_settings:
  callbacks: [handlers.pii, handlers.keyword_moderation]
extproc:
  handlers:
    handlers.pii: {options: {entities: {email: mask, credit_card: block, secret: block}}}
    handlers.keyword_moderation: {options: {block: [forbidden]}}
"""
CARD = "4111 1111 1111 1111"
CARD_DIGITS = CARD.replace(" ", "")
SECRET = "sk-proj-Q7xT2mV9kLp4ZrW8nB3cY6hJ"
EMAIL = "jane.doe@example.com"
CHAT = "/v1/chat/completions"


def conversation(text: str, where: str) -> dict[str, Any]:
    """A chat request with `text` in one place other than a message's content, the rest harmless."""
    arguments = json.dumps({"to": "someone", "note": "see below"})
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "send", "arguments": arguments}}
    schema = {"type": "object", "properties": {"to": {"type": "string", "description": "who"}}}
    tool = {"type": "function", "function": {"name": "send", "description": "sends", "parameters": schema}}
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "send it", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sent"}]},
        ],
        "tools": [tool],
    }
    messages, function = body["messages"], body["tools"][0]["function"]
    if where == "tool-call-arguments":
        tool_call["function"]["arguments"] = json.dumps({"to": "someone", "note": f"use {text}"})
    elif where == "tool-call-argument-number":
        tool_call["function"]["arguments"] = json.dumps({"to": "someone", "n": int(text.replace(" ", ""))})
    elif where == "message-name":
        messages[0]["name"] = text
    elif where == "tool-result-part":
        messages[2]["content"][0]["text"] = f"result: {text}"
    elif where == "tool-description":
        function["description"] = f"sends to {text}"
    elif where == "tool-name":
        function["name"] = text
    elif where == "tool-parameter-description":
        function["parameters"]["properties"]["to"]["description"] = f"like {text}"
    return body


# a tool result's content parts were scanned already: tests/unit/test_builtin_pii.py keeps them covered
PLACES = [
    "tool-call-arguments",
    "message-name",
    "tool-description",
    "tool-name",
    "tool-parameter-description",
]


@pytest.fixture(scope="module")
def scanned(e2e_stack):
    return e2e_stack(CONFIG)


def upstream_bodies(stack) -> str:
    return "\n".join(request["body"] for request in stack.mock_requests())


@pytest.mark.parametrize("where", [*PLACES, "tool-call-argument-number"])
def test_a_card_number_anywhere_in_a_chat_request_is_refused(scanned, assert_error, where):
    """M5. A card number in tool-call arguments (as text or a number), a name or a tool definition: 400,
    and it never reaches the upstream."""
    scanned.mock_clear()
    body = conversation(CARD if where not in ("message-name", "tool-name") else CARD_DIGITS, where)
    response = scanned.http.post(CHAT, json=body)
    assert_error(response, 400, message="Request blocked: it contains credit_card")
    assert scanned.mock_requests() == []


@pytest.mark.parametrize("where", ["tool-call-arguments", "tool-description"])
def test_a_secret_anywhere_in_a_chat_request_is_refused(scanned, assert_error, where):
    """M5. An API key in tool-call arguments or a tool description: 400, and it never reaches the upstream."""
    scanned.mock_clear()
    response = scanned.http.post(CHAT, json=conversation(SECRET, where))
    assert_error(response, 400, message="Request blocked: it contains secret")
    assert SECRET not in upstream_bodies(scanned)


@pytest.mark.parametrize("where", PLACES)
def test_a_blocked_keyword_anywhere_in_a_chat_request_is_refused(scanned, assert_error, where):
    """M5. "forbidden" in tool-call arguments, a name or a tool definition: refused like "forbidden" in a
    message's content."""
    response = scanned.http.post(CHAT, json=conversation("forbidden", where))
    error = assert_error(response, 400, message="Violated content policy")
    assert error["provider_specific_fields"]["match"] == "forbidden"


@pytest.mark.parametrize("where", ["tool-call-arguments", "tool-description", "tool-parameter-description"])
def test_an_email_anywhere_in_a_chat_request_is_masked_in_place(scanned, where):
    """M5. An e-mail address in tool-call arguments or a tool definition is masked where it stands;
    tool-call arguments stay a valid JSON string."""
    scanned.mock_clear()
    body = conversation(EMAIL, where)
    response = scanned.http.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert EMAIL not in upstream_bodies(scanned)
    sent = scanned.mock_last()["json"]
    expected = json.loads(json.dumps(conversation("<EMAIL>", where)))
    if where == "tool-call-arguments":
        arguments = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
        assert json.loads(arguments) == {"to": "someone", "note": "use <EMAIL>"}
        sent, expected = copy.deepcopy(sent), copy.deepcopy(expected)
        for each in (sent, expected):
            each["messages"][1]["tool_calls"][0]["function"].pop("arguments")
    assert {key: sent[key] for key in expected} == expected


FULLWIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "forbidden")


@pytest.mark.parametrize(
    "text", [FULLWIDTH, "forb\u200bidden", "FORBID\u00adDEN", "for\u2060bidden", "forb\x00id\x7fden"]
)
def test_unicode_disguises_do_not_hide_a_blocked_keyword(scanned, assert_error, text):
    """L7. Fullwidth letters, format characters (zero-width space, soft hyphen, word joiner) or control
    characters (NUL, DEL) inside "forbidden": refused like "forbidden"."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"this is {text} talk"}]}
    response = scanned.http.post(CHAT, json=body)
    error = assert_error(response, 400, message="Violated content policy")
    assert error["provider_specific_fields"]["match"] == "forbidden"


@pytest.mark.parametrize(
    ("path", "field"),
    [(CHAT, "messages"), ("/v1/completions", "prompt"), ("/v1/embeddings", "input")],
)
def test_zero_width_characters_do_not_hide_pii(scanned, assert_error, path, field):
    """L7. A card number or an e-mail address split by zero-width characters is still found: the card is
    refused before the upstream, the address masked."""
    card = CARD.replace(" ", "\u200b")
    email = EMAIL.replace("@", "\u200b@\u200c")

    def body(text: str) -> dict[str, Any]:
        value: Any = [{"role": "user", "content": text}] if field == "messages" else [text]
        return {"model": "gpt-4o", field: value}

    scanned.mock_clear()
    assert_error(scanned.http.post(path, json=body(f"pay with {card}")), 400)
    assert scanned.mock_requests() == []
    response = scanned.http.post(path, json=body(f"write to {email}"))
    assert response.status_code == 200, response.text
    sent = scanned.mock_last()["json"][field][0]
    assert (sent["content"] if field == "messages" else sent) == "write to <EMAIL>"

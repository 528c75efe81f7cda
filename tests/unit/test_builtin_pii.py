"""`handlers.pii`: its hooks called directly, as the chain calls them."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from extproc import HTTPException
from extproc.api.views import wrap
from extproc.hooks.chain import HookChain, overrides
from extproc.hooks.loader import HandlerError, LoadedHandler, resolve
from extproc.types import HookKind
from handlers.pii import ENTITIES, Handler

# entity -> texts holding exactly one such value
POSITIVE = {
    "email": ["write to john.doe+news@example.co.uk.", "a@b.io"],
    "phone": [
        "call +1 415 555 2671 now",
        "call (415) 555-2671",
        "call 415-555-2671",
        "ring +44 20 7946 0958",
    ],
    "credit_card": [
        "card 4111 1111 1111 1111 ok",
        "card 4111111111111111",
        "card 5500-0000-0000-0004",
        "amex 378282246310005",
    ],
    "iban": [
        "pay DE89 3704 0044 0532 0130 00 today",
        "pay GB82WEST12345698765432",
        "BE68 5390 0754 7034 THEN",
    ],
    "ipv4": ["host 192.168.1.10, ok", "at 10.0.0.1.", "255.255.255.255"],
    "ipv6": ["host 2001:db8::8a2e:370:7334 ok", "loopback ::1.", "fe80::1%"],
    "us_ssn": ["ssn 123-45-6789.", "ssn: 078-05-1120"],
    "secret": [
        "key sk-proj-Abc123DEF456ghi789JKL012mno",
        "sk-ant-api03-Xy7Zq9Wv2Ut5Sr8Qp1On4Ml",
        "aws AKIAIOSFODNN7EXAMPLE",
        "gh ghp_" + "a1B2" * 9,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "slack xoxb-1234567890-abcdefghij",
        "google AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p67",
        'api_key="a8f5f167f44f4964e6c998dee827110c"',
        "Authorization: Bearer 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    ],
}
NEAR_MISSES = [
    "card 4111111111111112",  # 16 digits, fails Luhn
    "card 4111 1111 1111 1112",
    "order 123456789012",  # 12 digits
    "iban DE88 3704 0044 0532 0130 00",  # bad check digits
    "iban DE89370400440532013001",
    "ip 999.1.1.1",
    "ip 256.1.1.1 and 1.2.3.4.5 and 01.02.03.04",
    "time 12:30:45, mac 00:1A:2B:3C:4D:5E, std::vector",
    "ssn 000-12-3456, 666-12-3456, 900-12-3456, 123-00-4567, 123-45-0000, 123456789",
    "sk-learn-tutorial-for-beginners",
    "token: " + "x" * 40,  # after a keyword, but not random-looking
    "the key insight is simple",
    "AKIA123",
    "date 2024-01-15, price 1,234.56, phone 555-1234",
    "email me at john at example dot com",
]


async def pre_call(handler: Handler, data: dict[str, Any], call_type: str = "completion") -> dict[str, Any]:
    assert await handler.async_pre_call_hook(None, None, data, call_type) is None  # type: ignore[arg-type]
    return data


def chat(*contents: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": c} for c in contents]}


def masked(text: str, **options: Any) -> str:
    handler = Handler(**options)
    return handler.mask(text, handler.hits(text), Counter())


@pytest.mark.parametrize(("entity", "text"), [(e, t) for e, texts in POSITIVE.items() for t in texts])
async def test_every_entity_is_masked(entity: str, text: str) -> None:
    data = await pre_call(Handler(), chat(text))
    content = data["messages"][0]["content"]
    assert f"<{entity.upper()}>" in content, content
    assert data["metadata"]["pii"] == {entity: 1}


@pytest.mark.parametrize(("entity", "text"), [(e, t) for e, texts in POSITIVE.items() for t in texts])
async def test_only_that_entity_is_looked_for_when_listed(entity: str, text: str) -> None:
    others = {name: "mask" for name in ENTITIES if name != entity}
    assert await pre_call(Handler(entities=others), chat(text)) == chat(text)
    assert masked(text, entities={entity: "mask"}) != text


@pytest.mark.parametrize("text", NEAR_MISSES)
async def test_near_misses_are_left_alone(text: str) -> None:
    data = await pre_call(Handler(), chat(text))
    assert data["messages"][0]["content"] == text
    assert "pii" not in data.get("metadata", {})


def test_exact_masking_keeps_the_surrounding_text() -> None:
    text = "Mail a@b.io or call +1 415 555 2671; card 4111-1111-1111-1111, from 10.0.0.1."
    assert masked(text) == "Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD>, from <IPV4>."
    assert masked('api_key="a8f5f167f44f4964e6c998dee827110c"') == 'api_key="<SECRET>"'  # only the value
    assert masked("a@b.io", mask_format="[{ENTITY} removed]") == "[EMAIL removed]"
    assert masked("a@b.io", mask_format="***") == "***"
    assert masked("v4 in v6 ::ffff:192.168.1.1!") == "v4 in v6 <IPV6>!"  # ipv6 is looked for first


async def test_every_place_a_request_holds_text() -> None:
    handler = Handler()
    image = "data:image/png;base64,eEB5Lmlv+x@y.io"
    parts = [
        {"type": "text", "text": "mine a@b.io"},
        {"type": "image_url", "image_url": {"url": "https://x.io/?u=x@y.io"}},  # the client's text too
        {"type": "image_url", "image_url": {"url": image}},  # a payload, not text
    ]
    data = await pre_call(handler, chat("hi a@b.io and c@d.io", parts))
    assert data["messages"][0]["content"] == "hi <EMAIL> and <EMAIL>"
    assert data["messages"][1]["content"][0]["text"] == "mine <EMAIL>"
    assert data["messages"][1]["content"][1]["image_url"]["url"] == "https://x.io/?u=<EMAIL>"
    assert data["messages"][1]["content"][2]["image_url"]["url"] == image
    assert data["metadata"]["pii"] == {"email": 4}
    cases = [
        ("text_completion", "prompt", "to a@b.io", "to <EMAIL>"),
        ("text_completion", "prompt", ["to a@b.io", "x"], ["to <EMAIL>", "x"]),
        ("embeddings", "input", ["a@b.io", "x", [1, 2]], ["<EMAIL>", "x", [1, 2]]),
        ("moderation", "input", "call 415-555-2671", "call <PHONE>"),
        ("moderation", "input", [{"type": "text", "text": "a@b.io"}], [{"type": "text", "text": "<EMAIL>"}]),
        ("image_generation", "prompt", "a cat owned by a@b.io", "a cat owned by <EMAIL>"),
    ]
    for call_type, key, before, after in cases:
        data = await pre_call(handler, {"model": "m", key: before}, call_type)
        assert data[key] == after, (call_type, data)


async def test_metadata_counts_never_values() -> None:
    data = chat("a@b.io, c@d.io, 4111111111111111 and 123-45-6789")
    data["metadata"] = {"headers": {"x": "y"}}
    await pre_call(Handler(), data)
    assert data["metadata"] == {"headers": {"x": "y"}, "pii": {"email": 2, "credit_card": 1, "us_ssn": 1}}
    assert "a@b.io" not in json.dumps(data["metadata"])


@pytest.mark.parametrize(("entity", "text"), [(e, texts[0]) for e, texts in POSITIVE.items()])
async def test_block_per_entity(entity: str, text: str) -> None:
    handler = Handler(entities={"email": "mask", entity: "block"})
    data = chat("from a@b.io", text)
    with pytest.raises(HTTPException) as caught:
        await pre_call(handler, data)
    assert caught.value.status_code == 400
    assert caught.value.detail == {"error": f"Request blocked: it contains {entity}", "entity": entity}


async def test_block_only_the_blocked_entity() -> None:
    handler = Handler(entities={"email": "mask", "credit_card": "block"})
    data = await pre_call(handler, chat("a@b.io with 4111111111111112"))  # fails Luhn: not a card
    assert data["messages"][0]["content"] == "<EMAIL> with 4111111111111112"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"entities": {"email": "erase"}}, "entities.email: 'erase' is neither 'mask' nor 'block'"),
        ({"entities": {"passport": "mask"}}, "entities: unknown entity 'passport'"),
        ({"entities": ["email"]}, "entities: expected a non-empty mapping"),
        ({"entities": {}}, "entities: expected a non-empty mapping"),
        ({"mask_format": "<{KIND}>"}, "mask_format:"),
        ({"mask_format": "<{0}>"}, "mask_format:"),
        ({"mask_format": 3}, "mask_format:"),
        ({"responses": "yes"}, "responses:"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match="^" + fragment.replace("(", r"\(")):
        Handler(**options)


def test_the_loader_names_the_handler_and_the_option(tmp_path: Any) -> None:
    with pytest.raises(HandlerError, match=r"handlers\.pii.*entities\.email: 'erase'"):
        resolve("handlers.pii", (tmp_path,), options={"entities": {"email": "erase"}})
    with pytest.raises(HandlerError, match=r"handlers\.pii.*unexpected keyword argument 'entitys'"):
        resolve("handlers.pii", (tmp_path,), options={"entitys": {}})
    assert isinstance(resolve("handlers.pii", (tmp_path,), options={"responses": True}), Handler)


def test_answer_hooks_exist_only_with_responses() -> None:
    plain, answering = Handler(), Handler(responses=True)
    assert type(plain) is Handler
    assert isinstance(answering, Handler)
    for kind in (HookKind.POST_CALL_SUCCESS, HookKind.POST_CALL_STREAMING_ITERATOR):
        assert not overrides(plain, kind)
        assert overrides(answering, kind)
    chain = HookChain([LoadedHandler("handlers.pii", answering)], 1.0)  # signatures pass the chain's checks
    assert [hook.kind for hooks in chain.hooks.values() for hook in hooks] == [
        HookKind.PRE_CALL,
        HookKind.POST_CALL_SUCCESS,
        HookKind.POST_CALL_STREAMING_ITERATOR,
    ]


async def test_non_streaming_answers_are_masked() -> None:
    handler = Handler(responses=True, entities={"email": "block", "phone": "mask"})
    data: dict[str, Any] = {"metadata": {}}
    response = wrap(
        {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "ask a@b.io"}}]}
    )
    assert await handler.async_post_call_success_hook(data, None, response) is None  # type: ignore[arg-type]
    assert response.choices[0].message.content == "ask <EMAIL>"
    text = wrap({"object": "text_completion", "choices": [{"index": 0, "text": "call 415-555-2671"}]})
    await handler.async_post_call_success_hook(data, None, text)  # type: ignore[arg-type]
    assert text.choices[0].text == "call <PHONE>"
    assert data["metadata"]["pii_response"] == {"email": 1, "phone": 1}
    embeddings = wrap({"object": "list", "data": [{"embedding": [0.1]}]})
    await handler.async_post_call_success_hook(data, None, embeddings)  # type: ignore[arg-type]


def chat_chunks(pieces: list[str], finish: bool = True) -> list[dict[str, Any]]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [
        {**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    if finish:
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return chunks


async def run_stream(handler: Handler, chunks: list[dict[str, Any]], data: dict[str, Any]) -> list[Any]:
    async def source() -> Any:
        for chunk in chunks:
            yield wrap(chunk)

    hook = handler.async_post_call_streaming_iterator_hook(None, source(), data)  # type: ignore[arg-type]
    return [chunk async for chunk in hook]


def streamed_text(chunks: list[Any]) -> str:
    out = []
    for chunk in chunks:
        raw = chunk if isinstance(chunk, dict) else chunk.model_dump()
        for choice in raw["choices"]:
            out.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(out)


STREAM_TEXT = (
    "Dear customer, write to john.doe@example.com or call +1 415 555 2671. Your card 4111 1111 1111 1111 "
    "and IBAN DE89 3704 0044 0532 0130 00 are on file; the server is 192.168.1.10 and the key is "
    "sk-proj-Abc123DEF456ghi789JKL012mno. Thanks!"
)


@pytest.mark.parametrize("seed", range(25))
async def test_streams_never_split_an_entity(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(STREAM_TEXT)), rng.randint(1, 40)))
    pieces = [STREAM_TEXT[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM_TEXT)], strict=True)]
    data: dict[str, Any] = {"metadata": {}}
    out = await run_stream(Handler(responses=True), chat_chunks(pieces), data)
    assert streamed_text(out) == masked(STREAM_TEXT)
    assert "john.doe" not in streamed_text(out) and "4111" not in streamed_text(out)
    assert len(out) == len(pieces) + 2  # every chunk goes on, some with less (or no) text
    assert out[0].choices[0].delta.role == "assistant"
    assert data["metadata"]["pii_response"] == {
        "email": 1,
        "phone": 1,
        "credit_card": 1,
        "iban": 1,
        "ipv4": 1,
        "secret": 1,
    }


async def test_stream_text_goes_on_before_the_end() -> None:
    words = [f"word{i} " for i in range(40)]
    out = await run_stream(Handler(responses=True), chat_chunks(words), {})
    contents = [chunk.choices[0].delta.content for chunk in out[1:-1]]
    assert contents[-1]  # text flows while the stream runs, only the last ~64 characters are held
    assert streamed_text(out) == "".join(words)


async def test_stream_without_finish_reason_and_text_completions() -> None:
    out = await run_stream(Handler(responses=True), chat_chunks(["mail a@", "b.io"], finish=False), {})
    assert streamed_text(out) == "mail <EMAIL>"
    assert out[-1]["choices"] == [{"index": 0, "delta": {"content": "mail <EMAIL>"}, "finish_reason": None}]
    base = {"id": "t", "object": "text_completion", "created": 1, "model": "m"}
    chunks = [
        {**base, "choices": [{"index": 0, "text": "mail a@", "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "text": "b.io", "finish_reason": "stop"}]},
    ]
    out = await run_stream(Handler(responses=True), chunks, {})
    assert [chunk.choices[0].text for chunk in out] == ["", "mail <EMAIL>"]


async def test_tool_calls_names_tool_results_and_tool_definitions_are_masked_in_place() -> None:
    arguments = json.dumps({"to": "a@b.io", "cc": ["c@d.io"], "e@f.io": 1})
    data: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi", "name": "x@y.io"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "1", "type": "function", "function": {"name": "f", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "sent to a@b.io"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "mails g@h.io"}}],
    }
    data = await pre_call(Handler(), data)
    messages = data["messages"]
    assert messages[0]["name"] == "<EMAIL>"
    masked_arguments = json.loads(messages[1]["tool_calls"][0]["function"]["arguments"])
    assert masked_arguments == {"to": "<EMAIL>", "cc": ["<EMAIL>"], "<EMAIL>": 1}
    assert messages[2]["content"][0]["text"] == "sent to <EMAIL>"
    assert data["tools"][0]["function"]["description"] == "mails <EMAIL>"
    assert data["metadata"]["pii"] == {"email": 6}


async def test_a_card_in_a_tool_result_or_as_a_number_in_arguments_is_refused() -> None:
    handler = Handler({"credit_card": "block"})
    result = {
        "role": "tool",
        "tool_call_id": "1",
        "content": [{"type": "text", "text": "4111 1111 1111 1111"}],
    }
    with pytest.raises(HTTPException):
        await pre_call(handler, {"model": "m", "messages": [result]})
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"n": 4111111111111111}'}}
    with pytest.raises(HTTPException):
        await pre_call(handler, {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]})


async def test_unicode_is_read_normalised_but_forwarded_as_sent_when_nothing_matched() -> None:
    text = "ｈｅｌｌｏ wo\u200brld, café"  # noqa: RUF001
    data = await pre_call(Handler(), chat(text))
    assert data["messages"][0]["content"] == text
    data = await pre_call(Handler(), chat("mail a\u200b@b.io ｈｉ"))  # noqa: RUF001
    assert data["messages"][0]["content"] == "mail <EMAIL> hi"  # the masked place is written normalised


def test_digits_of_any_script_still_count() -> None:
    # the digit rules are skipped for text without digits: a non-ASCII digit is a digit too
    arabic_indic = "".join(chr(0x0660 + int(c)) if c.isdigit() else c for c in "4111 1111 1111 1111")
    assert [hit.entity for hit in Handler().hits(f"card {arabic_indic}")] == ["credit_card"]
    assert [hit.entity for hit in Handler().hits("github_pat_11ABCDEFG0123456789_abcdefghijklmnop")] == [
        "secret"
    ]

"""`handlers.keyword_moderation` and `handlers.llm_judge`: their moderation hooks called directly; the judge
against real local HTTP servers (the mock upstream, a server that never answers, a closed port)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from extproc import HTTPException
from extproc.devtools.mock_upstream import start
from extproc.hooks.chain import HookChain
from extproc.hooks.loader import LoadedHandler
from extproc.types import HookKind
from handlers import keyword_moderation, llm_judge
from handlers.keyword_moderation import Handler as Keywords
from handlers.llm_judge import Handler as Judge


def chat(*contents: Any, model: str = "gpt-4o") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": c} for c in contents]}


async def refusal(handler: Any, data: dict[str, Any], call_type: str = "completion") -> Any:
    """The refusal's (status, detail), or None when the hook let the request through."""
    try:
        await handler.async_moderation_hook(data, None, call_type)
    except HTTPException as exc:
        return exc.status_code, exc.detail
    return None


def keyword(rule: str, status: int = 400) -> tuple[int, dict[str, str]]:
    return status, {"error": "Violated content policy", "category": "keyword", "match": rule}


# ---- keyword moderation ----
async def test_block_words_whole_and_any_case() -> None:
    handler = Keywords(block=["forbidden", "dark magic"])
    assert await refusal(handler, chat("this is FORBIDDEN stuff")) == keyword("forbidden")
    assert await refusal(handler, chat("some dark\n  Magic please")) == keyword("dark magic")
    assert await refusal(handler, chat("forbiddenness and darkmagic are fine")) is None
    assert await refusal(handler, chat("a kind request")) is None


async def test_the_refusal_names_the_rule_not_the_text() -> None:
    status, detail = await refusal(Keywords(block=["/k[i1]ll\\w*/"]), chat("please K1LLing spree"))
    assert (status, detail) == keyword("/k[i1]ll\\w*/")
    assert "K1LLing" not in str(detail)


async def test_case_sensitive() -> None:
    handler = Keywords(block=["Secret", "/^ABC/"], case_sensitive=True)
    assert await refusal(handler, chat("a secret, abc")) is None
    assert await refusal(handler, chat("a Secret")) == keyword("Secret")
    assert await refusal(handler, chat("ABC first")) == keyword("/^ABC/")


async def test_allow_exempts_what_it_covers() -> None:
    handler = Keywords(block=["kill"], allow=["kill process", "/kill -9 \\d+/"])
    assert await refusal(handler, chat("how do I kill process 42?")) is None
    assert await refusal(handler, chat("run kill -9 1234")) is None
    assert await refusal(handler, chat("kill process 42, then kill them all")) == keyword("kill")
    assert await refusal(handler, chat("kill them")) == keyword("kill")


async def test_per_model_rules_are_added_to_the_defaults() -> None:
    handler = Keywords(
        block=["forbidden"],
        allow=["forbidden fruit"],
        models={"gpt-4o": {"block": ["secret"]}, "kids": {"block": ["fruit"], "allow": ["fruit salad"]}},
        status_code=403,
    )
    assert await refusal(handler, chat("a secret")) == keyword("secret", 403)
    assert await refusal(handler, chat("forbidden")) == keyword("forbidden", 403)
    assert await refusal(handler, chat("the forbidden fruit")) is None
    assert await refusal(handler, chat("a secret", model="other")) is None
    assert await refusal(handler, chat("forbidden", model="other")) == keyword("forbidden", 403)
    assert await refusal(handler, chat("fruit", model="kids")) == keyword("fruit", 403)
    assert await refusal(handler, chat("fruit salad", model="kids")) is None
    only_models = Keywords(models={"kids": {"block": ["beer"]}})
    assert await refusal(only_models, chat("beer")) is None
    assert await refusal(only_models, chat("beer", model="kids")) == keyword("beer")


async def test_every_call_type_and_message_boundaries() -> None:
    handler = Keywords(block=["forbidden"])
    cases = [
        ("completion", chat([{"type": "text", "text": "the "}, {"type": "text", "text": "forbidden"}])),
        (
            "completion",
            {
                "model": "m",
                "messages": [{"role": "system", "content": "Be brief"}, *chat("forbidden")["messages"]],
            },
        ),
        ("text_completion", {"model": "m", "prompt": ["ok", "a forbidden word"]}),
        ("embeddings", {"model": "m", "input": ["x", "forbidden"]}),
        ("moderation", {"model": "m", "input": "forbidden"}),
        ("image_generation", {"model": "m", "prompt": "forbidden art"}),
    ]
    for call_type, data in cases:
        assert await refusal(handler, data, call_type) == keyword("forbidden"), (call_type, data)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"block": "forbidden"}, "block: expected a list"),
        ({"block": ["ok", ""]}, "block[1]: expected a word"),
        ({"block": ["ok", 3]}, "block[1]: expected a word"),
        ({"block": ["/(/"]}, "block[0]: '/(/' is not a valid regular expression"),
        ({"block": ["/a*/"]}, "block[0]: '/a*/' matches the empty text"),
        ({"block": ["x"], "allow": "y"}, "allow: expected a list"),
        ({"block": ["x"], "models": ["m"]}, "models: expected a mapping"),
        ({"block": ["x"], "models": {"m": {"deny": ["y"]}}}, "models.m: expected a mapping with only"),
        ({"block": ["x"], "models": {"m": {"block": ["/[/"]}}}, "models.m.block[0]:"),
        ({"block": ["x"], "case_sensitive": "no"}, "case_sensitive: expected true or false"),
        ({"block": ["x"], "status_code": 200}, "status_code: expected an HTTP error status"),
        ({"block": ["x"], "status_code": "400"}, "status_code: expected an HTTP error status"),
        ({}, "block: no rules"),
        ({"allow": ["x"], "models": {"m": {"allow": ["y"]}}}, "block: no rules"),
    ],
)
def test_keyword_bad_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        Keywords(**options)
    assert str(caught.value).startswith(fragment), caught.value


def test_both_are_plain_moderation_hooks_to_the_chain() -> None:
    handlers = [Keywords(block=["x"]), Judge(base_url="http://127.0.0.1:1")]
    chain = HookChain([LoadedHandler(f"handlers.h{i}", h) for i, h in enumerate(handlers)], 1.0)
    assert {kind for kind, hooks in chain.hooks.items() if hooks} == {HookKind.MODERATION}
    assert keyword_moderation.Handler is Keywords and llm_judge.Handler is Judge


# ---- LLM judge ----
@pytest.fixture()
async def mock_url() -> AsyncIterator[str]:
    runner, port = await start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def judged(mock: str, data: dict[str, Any], call_type: str = "completion", **options: Any) -> Any:
    judge = Judge(base_url=mock, **options)
    try:
        return await refusal(judge, data, call_type)
    finally:
        await judge.aclose()


async def mock_requests(mock: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=mock, trust_env=False) as client:
        records: list[dict[str, Any]] = (await client.get("/__mock/requests")).json()
        return records


def unsafe(category: str) -> tuple[int, dict[str, str]]:
    return 400, {"error": "Violated content safety policy", "category": category}


async def test_moderations_mode(mock_url: str) -> None:
    assert await judged(mock_url, chat("tell me about violence")) == unsafe("violence")
    assert await judged(mock_url, chat("tell me about peace")) is None
    records = await mock_requests(mock_url)
    assert [r["path"] for r in records] == ["/v1/moderations"] * 2
    assert records[0]["json"] == {"model": "omni-moderation-latest", "input": "tell me about violence"}
    assert "authorization" not in records[0]["headers"]


async def test_moderations_mode_options(mock_url: str) -> None:
    options = {"api_key": "sk-judge", "model": "text-moderation-stable", "categories": ["hate"]}
    assert await judged(mock_url + "/v1/", chat("violence"), **options) is None  # filtered out
    assert await judged(mock_url, chat("violence"), categories=["Violence"]) == unsafe("violence")
    assert await judged(mock_url, {"input": ["peace", "violence"]}, "embeddings") == unsafe("violence")
    assert await judged(mock_url, chat("   ")) is None  # nothing to judge: no call
    first = (await mock_requests(mock_url))[0]
    assert first["path"] == "/v1/moderations"
    assert first["headers"]["authorization"] == "Bearer sk-judge"
    assert first["json"]["model"] == "text-moderation-stable"
    assert len(await mock_requests(mock_url)) == 3


async def test_llama_guard_mode(mock_url: str) -> None:
    conversation = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "describe the violence"}]},
        ],
    }
    assert await judged(mock_url, conversation, mode="llama_guard") == unsafe("Violent Crimes")
    assert await judged(mock_url, chat("a poem about spring"), mode="llama_guard") is None
    request = (await mock_requests(mock_url))[0]
    assert request["path"] == "/v1/chat/completions"
    body = request["json"]
    assert body["model"] == "meta-llama/Llama-Guard-3-8B"
    [message] = body["messages"]
    assert message["role"] == "user"
    prompt = message["content"]
    assert (
        "<BEGIN CONVERSATION>\n\nUser: You are helpful.\n\nUser: hi\n\nAgent: hello\n\n"
        "User: describe the violence\n\n<END CONVERSATION>" in prompt
    )
    assert "S1: Violent Crimes." in prompt and "S14: Code Interpreter Abuse." in prompt
    assert "ONLY THE LAST User message" in prompt
    assert "First line must read 'safe' or 'unsafe'." in prompt


async def test_llama_guard_categories_filter(mock_url: str) -> None:
    data = chat("violence")
    assert await judged(mock_url, data, mode="llama_guard", model="guard", categories=["S2"]) is None
    assert await judged(
        mock_url, data, mode="llama_guard", model="guard", categories=["violent crimes"]
    ) == unsafe("Violent Crimes")
    assert await judged(mock_url, data, mode="llama_guard", model="guard", categories=["s1"]) == unsafe(
        "Violent Crimes"
    )


class Scripted:
    """A local judge answering whatever the test says, with a status."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if isinstance(self.body, str):
            return web.Response(status=self.status, text=self.body)
        return web.json_response(self.body, status=self.status)


@pytest.fixture()
async def scripted() -> AsyncIterator[Scripted]:
    script = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    script.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield script
    finally:
        await runner.cleanup()


def guard_answer(content: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("safe", None),
        ("  Safe\n", None),
        ("unsafe\nS1", unsafe("Violent Crimes")),
        ("unsafe\nS10,S99", unsafe("Hate, S99")),
        ("unsafe S11", unsafe("Suicide & Self-Harm")),
        ("unsafe", unsafe("unspecified")),
    ],
)
async def test_llama_guard_answers(scripted: Scripted, content: str, expected: Any) -> None:
    scripted.body = guard_answer(content)
    assert await judged(scripted.url, chat("x"), mode="llama_guard") == expected


UNAVAILABLE = (503, {"error": "content moderation unavailable"})


@pytest.mark.parametrize(
    ("status", "body", "mode"),
    [
        (500, {"error": {"message": "down"}}, "moderations"),
        (429, {"error": {"message": "slow down"}}, "llama_guard"),
        (200, "not json", "moderations"),
        (200, {"results": []}, "moderations"),
        (200, {"results": [{"flagged": "yes"}]}, "moderations"),
        (200, ["a list"], "moderations"),
        (200, guard_answer("I cannot help with that"), "llama_guard"),
        (200, guard_answer(None), "llama_guard"),
        (200, {"choices": []}, "llama_guard"),
    ],
)
@pytest.mark.parametrize("fail_open", [False, True])
async def test_judge_errors_fail_closed_or_open(
    scripted: Scripted, status: int, body: Any, mode: str, fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    scripted.status, scripted.body = status, body
    with caplog.at_level(logging.WARNING, logger="handlers.llm_judge"):
        result = await judged(scripted.url, chat("x"), mode=mode, fail_open=fail_open)
    assert result == (None if fail_open else UNAVAILABLE)
    assert ("request allowed (fail_open)" in caplog.text) is fail_open


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture()
def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("mode", ["moderations", "llama_guard"])
@pytest.mark.parametrize("fail_open", [False, True])
async def test_timeout(
    silent_server: str, mode: str, fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="handlers.llm_judge"):
        result = await judged(silent_server, chat("x"), mode=mode, timeout_ms=200, fail_open=fail_open)
    elapsed = time.monotonic() - started
    assert result == (None if fail_open else UNAVAILABLE)
    assert 0.15 <= elapsed < 1.5
    assert ("unavailable, request allowed" in caplog.text) is fail_open


@pytest.mark.parametrize("fail_open", [False, True])
async def test_connection_refused(closed_port: str, fail_open: bool) -> None:
    assert await judged(closed_port, chat("x"), fail_open=fail_open) == (None if fail_open else UNAVAILABLE)


async def test_one_client_per_handler_and_loop(mock_url: str) -> None:
    judge = Judge(base_url=mock_url)
    try:
        await judge.async_moderation_hook(chat("a"), None, "completion")  # type: ignore[arg-type]
        client = judge._client
        await asyncio.gather(*(judge.async_moderation_hook(chat("b"), None, "completion") for _ in range(5)))  # type: ignore[arg-type]
        assert judge._client is client is not None
    finally:
        await judge.aclose()
    assert judge._client is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({}, "base_url: required"),
        ({"base_url": "guard:8000"}, "base_url: required"),
        ({"base_url": "http://g", "api_key": ""}, "api_key: expected"),
        ({"base_url": "http://g", "mode": "openai"}, "mode: 'openai' is neither"),
        ({"base_url": "http://g", "model": 3}, "model: expected"),
        ({"base_url": "http://g", "timeout_ms": 0}, "timeout_ms: expected"),
        ({"base_url": "http://g", "timeout_ms": "2s"}, "timeout_ms: expected"),
        ({"base_url": "http://g", "fail_open": "yes"}, "fail_open: expected"),
        ({"base_url": "http://g", "categories": "violence"}, "categories: expected"),
        ({"base_url": "http://g", "categories": [""]}, "categories: expected"),
    ],
)
def test_judge_bad_options_name_the_option(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        Judge(**options)
    assert str(caught.value).startswith(fragment), caught.value


# ---- keyword moderation: every text place, read normalised ----
async def test_keywords_in_tool_calls_names_and_tool_definitions_are_refused() -> None:
    handler = Keywords(block=["forbidden"])
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"q": "forbidden"}'}}
    requests = [
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]},
        {"messages": [{"role": "user", "content": "hi", "name": "forbidden"}]},
        {
            "messages": [
                {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": "forbidden"}]}
            ]
        },
        {
            "messages": [],
            "tools": [{"type": "function", "function": {"name": "f", "description": "forbidden"}}],
        },
    ]
    for data in requests:
        assert await refusal(handler, {"model": "m", **data}) == keyword("forbidden"), data


async def test_keywords_are_matched_on_normalised_text() -> None:
    handler = Keywords(block=["forbidden", "/^secret plan$/"])
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "forbidden")
    for text in (fullwidth, "forb\u200bidden", "FORBID\u00adDEN"):
        assert await refusal(handler, chat(f"a {text} b")) == keyword("forbidden"), text
    assert await refusal(handler, chat("intro", "secret plan")) == keyword("/^secret plan$/")
    assert await refusal(handler, chat("forbiddenly")) is None


async def test_a_phrase_or_an_allow_rule_does_not_span_two_places() -> None:
    handler = Keywords(block=["forbidden"], allow=["forbidden fruit"])
    assert await refusal(handler, chat("forbidden", "fruit")) == keyword("forbidden")
    assert await refusal(handler, chat("the forbidden fruit")) is None


def test_a_rule_of_format_characters_only_is_refused() -> None:
    with pytest.raises(ValueError, match=r"block\[0\]: .* nothing but format characters"):
        Keywords(block=["\u200b\u200d"])

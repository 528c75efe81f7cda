"""The rate limiter built-in on a real sidecar: limits, 429s, and a slot released on every ending."""

import asyncio
import textwrap

import orjson
import pytest

from .harness import (
    Harness,
    body_request,
    headers_request,
    response_body_request,
    response_headers_request,
)

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
OK = orjson.dumps(
    {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    }
)
KEY = {"authorization": "Bearer sk-one"}

EXTRA = textwrap.dedent("""
    import asyncio
    from extproc import CustomLogger, HTTPException

    class Refuser(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            if data["messages"][0]["content"] == "refuse":
                return "no"
            if data["messages"][0]["content"] == "raise":
                raise HTTPException(status_code=403, detail="nope")
            if data["messages"][0]["content"] == "hang":
                await asyncio.sleep(10)

    class Moderator(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            if data["messages"][0]["content"] == "flag":
                raise HTTPException(status_code=400, detail="flagged")

    refuser, moderator = Refuser(), Moderator()
""")


@pytest.fixture
def limiter(load_pipeline):
    """`limiter(options, ", x.refuser")`: the rate limiter with these options, then EXTRA's callbacks."""

    def load(options, extra_callbacks=""):
        config = f"""
            litellm_settings: {{callbacks: [handlers.rate_limiter{extra_callbacks}]}}
            extproc:
              hook_timeout_ms: 200
              handlers:
                handlers.rate_limiter: {{options: {options}}}
        """
        return load_pipeline(config, {"x.py": EXTRA})

    return load


def chat(content):
    return body_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}))


async def counter(built, key):
    return await built.cache.async_get_cache(key)


async def settled(built, key, expected):
    for _ in range(100):
        if await counter(built, key) == expected:
            return
        await asyncio.sleep(0.01)
    assert await counter(built, key) == expected


PARALLEL = "rl:api_key:{}:parallel"


def parallel_key():
    import hashlib

    return PARALLEL.format(hashlib.sha256(b"sk-one").hexdigest())


async def test_parallel_limit_refuses_with_429_message_and_headers(limiter):
    built = limiter("{limits: {api_key: {max_parallel_requests: 1}}}")
    async with Harness(built) as harness:
        first = harness.open()
        for request in (headers_request(headers=KEY), body_request(CHAT)):
            await first.write(request)
            await first.read()
        _, refused = await harness.exchange(headers_request(headers=KEY), body_request(CHAT))
        reply = refused.immediate_response
        assert reply.status.code == 429
        message = orjson.loads(reply.body)["error"]["message"]
        assert message.startswith("Rate limit exceeded for api_key: ")
        assert (
            "Limit type: max_parallel_requests. Current limit: 1, Remaining: 0. Limit resets at: " in message
        )
        headers = {h.header.key: h.header.raw_value.decode() for h in reply.headers.set_headers}
        assert headers["retry-after"] == "1"
        assert headers["x-ratelimit-api_key-remaining-max_parallel_requests"] == "0"
        # the first request completes: its slot comes back, and the success carries the headers
        await first.write(response_headers_request())
        answer = await first.read()
        mutation = {
            h.header.key: h.header.raw_value.decode()
            for h in answer.response_headers.response.header_mutation.set_headers
        }
        assert mutation == {}  # the body is read (success event), so the headers come with its answer
        await first.write(response_body_request(OK))
        done = await first.read()
        first.cancel()
        body_headers = {
            h.header.key: h.header.raw_value.decode()
            for h in done.response_body.response.header_mutation.set_headers
        }
        assert body_headers["x-ratelimit-api_key-limit-max_parallel_requests"] == "1"
        assert body_headers["x-ratelimit-api_key-remaining-max_parallel_requests"] == "0"
        await settled(built, parallel_key(), 0)


@pytest.mark.parametrize(
    ("ending", "callbacks"),
    [
        ("upstream error", ""),
        ("refusal by a later hook", ", x.refuser"),
        ("HTTP exception by a later hook", ", x.refuser"),
        ("moderation refusal", ", x.moderator"),
        ("client disconnect", ""),
        ("sidecar-side timeout", ", x.refuser"),
    ],
)
async def test_the_slot_is_released_on_every_ending(limiter, ending, callbacks):
    built = limiter("{limits: {api_key: {max_parallel_requests: 5}}}", callbacks)
    async with Harness(built) as harness:
        if ending == "upstream error":
            await harness.exchange(
                headers_request(headers=KEY),
                body_request(CHAT),
                response_headers_request(500),
                response_body_request(b'{"error": {"message": "boom"}}'),
            )
        elif ending == "refusal by a later hook":
            _, answer = await harness.exchange(headers_request(headers=KEY), chat("refuse"))
            assert answer.immediate_response.status.code == 200
        elif ending == "HTTP exception by a later hook":
            _, answer = await harness.exchange(headers_request(headers=KEY), chat("raise"))
            assert answer.immediate_response.status.code == 403
        elif ending == "sidecar-side timeout":
            _, answer = await harness.exchange(headers_request(headers=KEY), chat("hang"))
            assert answer.immediate_response.status.code == 504
        elif ending == "moderation refusal":
            call = harness.open()
            for request in (headers_request(headers=KEY), chat("flag")):
                await call.write(request)
                await call.read()
            pushed = await asyncio.wait_for(call.read(), 5)
            assert pushed.immediate_response.status.code == 400
            call.cancel()
        else:
            call = harness.open()
            for request in (headers_request(headers=KEY), body_request(CHAT)):
                await call.write(request)
                await call.read()
            assert await counter(built, parallel_key()) == 1
            call.cancel()
        await settled(built, parallel_key(), 0)


async def test_rpm_and_tokens_and_settlement(limiter):
    built = limiter("{limits: {api_key: {rpm: 3, tpm: 1000}, end_user: {rpm: 1}}}")
    user_chat = orjson.dumps({"model": "m", "user": "u1", "messages": [{"role": "user", "content": "hello"}]})
    async with Harness(built) as harness:
        *_, ok = await harness.exchange(
            headers_request(headers=KEY),
            body_request(CHAT),
            response_headers_request(),
            response_body_request(OK),
        )
        _, end_user_ok = await harness.exchange(headers_request(headers=KEY), body_request(user_chat))
        _, end_user_over = await harness.exchange(headers_request(headers=KEY), body_request(user_chat))
    assert ok.HasField("response_body")
    assert end_user_ok.HasField("request_body")
    reply = end_user_over.immediate_response
    assert reply.status.code == 429
    assert (
        "Rate limit exceeded for end_user: u1. Limit type: requests"
        in orjson.loads(reply.body)["error"]["message"]
    )
    # the refused request gave back what it took: the key's request count is 2, not 3
    import hashlib
    import time

    window = int(time.time() // 60)
    key_hash = hashlib.sha256(b"sk-one").hexdigest()
    assert await counter(built, f"rl:api_key:{key_hash}:rpm:{window}") == 2
    # tokens: the first request settled at its real usage (5); the second reserved its estimate (2) and,
    # its stream closed before any response (a client gone after the upstream had its prompt), keeps
    # its prompt counted
    await settled(built, f"rl:api_key:{key_hash}:tpm:{window}", 7)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{limits: {apikey: {rpm: 1}}}", "unknown scope 'apikey'"),
        ("{limits: {api_key: {rpn: 1}}}", "limits.api_key.rpn: unknown limit"),
        ("{limits: {api_key: {rpm: -1}}}", "expected an integer >= 0"),
        ("{window_s: 0}", "window_s and parallel_ttl_s must be >= 1"),
    ],
)
def test_bad_options_are_named(limiter, options, fragment):
    from extproc.hooks.loader import HandlerError

    with pytest.raises(HandlerError) as info:
        limiter(options)
    assert "handlers.rate_limiter" in str(info.value) and fragment in str(info.value)


async def test_tokens_settle_with_a_streams_final_usage(limiter):
    import hashlib
    import time

    built = limiter("{limits: {api_key: {tpm: 100000}}}")
    stream_chat = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    )
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":31,"total_tokens":42}}\n\n'
    async with Harness(built) as harness:
        call = harness.open()
        for request in (headers_request(headers=KEY), body_request(stream_chat)):
            await call.write(request)
            await call.read()
        await call.write(response_headers_request(headers={"content-type": "text/event-stream"}))
        await call.read()
        chunk = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        await call.write(response_body_request(chunk + usage + b"data: [DONE]\n\n", end_of_stream=True))
        await call.read()
        call.cancel()
        window = int(time.time() // 60)
        key_hash = hashlib.sha256(b"sk-one").hexdigest()
        await settled(built, f"rl:api_key:{key_hash}:tpm:{window}", 42)

"""The rate limiter's accounting, driven directly on an in-process `DualCache`: what a request counts
when its stream carries no usage or its client leaves, a `max_tokens` beyond any limit, and a record
that later hooks cannot erase."""

import asyncio
import copy
import math

import pytest

from extproc import DualCache, HTTPException, InMemoryCache, UserAPIKeyAuth
from extproc.errors import ClientDisconnected, RejectedRequestError
from extproc.state.cache import PinningBackend
from extproc.state.redis_cache import CacheUnavailable
from handlers.rate_limiter import Handler

USER = UserAPIKeyAuth(api_key="hashed-key")
PROMPT = "x" * 40  # 10 tokens at four characters a token
SLOTS = "rl:api_key:hashed-key:parallel"


def tokens(cache: DualCache) -> float:
    [key] = [k for k in cache.in_memory_cache._store if ":tpm:" in k]
    return cache.get_cache(key)


def request(**extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": PROMPT}], **extra}


def run(scenario) -> None:
    asyncio.run(scenario())


def test_a_max_tokens_beyond_the_limit_is_refused_before_anything_is_counted():
    handler = Handler(limits={"api_key": {"tpm": 1000, "max_parallel_requests": 5}})
    cache = DualCache()

    async def scenario() -> None:
        await handler.async_pre_call_hook(USER, cache, request(max_tokens=500), "completion")
        assert tokens(cache) == 510
        with pytest.raises(HTTPException) as refused:
            await handler.async_pre_call_hook(USER, cache, request(max_tokens=10**25), "completion")
        assert refused.value.status_code == 429
        assert tokens(cache) == 510 and cache.get_cache(SLOTS) == 1  # nothing taken, nothing lost

    run(scenario)


def test_limits_beyond_exact_counts_are_refused():
    with pytest.raises(ValueError, match="< 2\\*\\*53"):
        Handler(limits={"api_key": {"tpm": 2**64}})


def test_a_later_hook_that_drops_the_metadata_cannot_keep_the_slot():
    handler = Handler(limits={"api_key": {"max_parallel_requests": 1}})
    cache = DualCache()

    async def one() -> None:
        data = request()
        await handler.async_pre_call_hook(USER, cache, data, "completion")
        data["metadata"] = {"replaced": True}  # what a later hook may do
        kwargs = {"litellm_params": {"metadata": data["metadata"]}}
        await handler.async_log_success_event(kwargs, None, None, None)

    async def scenario() -> None:
        for _ in range(3):  # each in the context of its own request, as the sidecar runs them
            await asyncio.create_task(one())
        assert cache.get_cache(SLOTS) == 0

    run(scenario)


@pytest.mark.parametrize("ending", ["success-without-usage", "client-left", "copied-metadata-left"])
def test_a_stream_counts_its_prompt_and_the_text_it_let_through(ending):
    handler = Handler(limits={"api_key": {"tpm": 1000}})
    cache = DualCache()
    streamed = "y" * 100

    async def scenario() -> None:
        data = request(stream=True)
        await handler.async_pre_call_hook(USER, cache, data, "completion")
        metadata = copy.deepcopy(data["metadata"]) if ending.startswith("copied") else data["metadata"]
        for end in (30, 100):
            await handler.async_post_call_streaming_hook(USER, streamed[:end])
        kwargs = {"litellm_params": {"metadata": metadata}}
        if ending == "success-without-usage":
            await handler.async_log_success_event(kwargs, None, None, None)
        else:
            kwargs["exception"] = ClientDisconnected()
            await handler.async_log_failure_event(kwargs, None, None, None)
        assert tokens(cache) == 10 + math.ceil(100 / 4)  # nothing given back

    run(scenario)


@pytest.mark.parametrize(
    ("exception", "counted"),
    [(ClientDisconnected(), 10), (RejectedRequestError("no", {}, "later"), 0)],
    ids=["client-left-before-the-answer", "refused-by-a-later-hook"],
)
def test_a_request_that_ends_before_its_answer(exception, counted):
    """The upstream had the prompt of a request whose client left; a refused one never reached it."""
    handler = Handler(limits={"api_key": {"tpm": 1000}})
    cache = DualCache()

    async def scenario() -> None:
        data = request(max_tokens=200)
        await handler.async_pre_call_hook(USER, cache, data, "completion")
        kwargs = {"litellm_params": {"metadata": data["metadata"]}, "exception": exception}
        await handler.async_log_failure_event(kwargs, None, None, None)
        assert tokens(cache) == counted

    run(scenario)


class RefusesAfterOne(PinningBackend):
    """A shared store (our own interface over an in-process one) that refuses every call after its
    first, as `on_unavailable: deny` does when the store stops answering."""

    def __init__(self) -> None:
        self.store = InMemoryCache()
        self.calls = 0

    async def increment_pinned(self, key, amount, ttl, token=None):
        self.calls += 1
        if self.calls > 1:
            raise CacheUnavailable()
        return await self.store.increment(key, amount, ttl), "shared"

    async def adjust_pinned(self, key, amount, store, token=None):
        return await self.store.adjust(key, amount)


def test_a_store_that_refuses_mid_request_gets_back_what_the_request_took():
    handler = Handler(limits={"api_key": {"max_parallel_requests": 3, "rpm": 10}})
    shared = RefusesAfterOne()
    cache = DualCache(shared_cache=shared)  # type: ignore[arg-type]

    async def scenario() -> None:
        with pytest.raises(CacheUnavailable):
            await handler.async_pre_call_hook(USER, cache, request(), "completion")
        assert shared.store.get_sync(SLOTS) == 0  # the slot it took before the refusal is back

    run(scenario)


@pytest.mark.parametrize(
    ("key", "limit"),
    [
        ("rl:api_key:abc:tpm:123", "tpm"),
        ("rl:api_key:abc:rpm:123", "rpm"),
        ("rl:api_key_model:abc/x:tpm:y:parallel", "max_parallel_requests"),  # a model named "x:tpm:y"
        ("rl:api_key_model:abc/x:tpm:y:rpm:123", "rpm"),
        ("rl:end_user:a:parallel:b:tpm:7", "tpm"),
    ],
)
def test_a_counter_is_classified_from_the_end_of_its_key_whatever_the_client_named(key, limit):
    from handlers.rate_limiter import _limit_of

    assert _limit_of(key) == limit

"""Counters taken and given back with a token, on a real valkey-server: each pair counts once, whatever
order a slow store applies them in, and give-backs a store could not take are sent once it answers."""

import asyncio

import pytest
from redis_server import ValkeyServer, valkey_server_fixture  # noqa: F401  (the `valkey_server` fixture)

from extproc.state.cache import DualCache, InMemoryCache
from extproc.state.redis_cache import RedisBackend, ResilientBackend

PREFIX = "llm-extproc:"
RETRY_S = 0.2


@pytest.fixture()
async def backend(valkey_server: ValkeyServer):
    store = RedisBackend(valkey_server.url)
    yield store
    await store.close()


@pytest.fixture()
def plain(valkey_server: ValkeyServer):
    with valkey_server.client() as client:
        yield client


async def test_a_take_and_its_give_back_count_once_and_replays_do_nothing(backend, plain) -> None:
    assert await backend.take("slots", 1, 60, "a") == 1
    assert await backend.take("slots", 1, 60, "a") == 1  # a replayed take does not count again
    assert await backend.take("slots", 1, 60, "b") == 2
    assert await backend.give("slots", -1, "a") == 1
    assert plain.exists("{llm-extproc:slots}:take:a") == 0  # the marker goes with its give-back
    assert await backend.give("slots", -1, "a") is None  # a replayed give-back gives nothing
    assert plain.get(PREFIX + "slots") == b"1"


async def test_a_give_back_that_arrives_before_its_take_cancels_it(backend, plain) -> None:
    """A store that wakes up may apply a late take after its give-back: the take then does not count."""
    assert await backend.take("slots", 1, 60, "other") == 1
    assert await backend.give("slots", -1, "late") is None
    assert await backend.take("slots", 1, 60, "late") == 1
    assert plain.get(PREFIX + "slots") == b"1"
    assert plain.pttl("{llm-extproc:slots}:take:late") > 0  # remembered for a while, not forever


async def test_give_backs_owed_during_an_outage_are_sent_when_the_store_answers(
    valkey_server: ValkeyServer, plain
) -> None:
    store = ResilientBackend(RedisBackend(valkey_server.url), InMemoryCache(), retry_after_s=RETRY_S)
    cache = DualCache(in_memory_cache=store.local, shared_cache=store)
    try:
        count, where = await cache.async_increment_counter("slots", 1, 60, token="held")
        assert (count, where) == (1, "shared")
        valkey_server.stop()
        valkey_server.start()  # empty again: put the held slot back as it was
        plain.set(PREFIX + "slots", 1)
        plain.set("{llm-extproc:slots}:take:held", "taken")
        assert await cache.async_increment_counter("slots", 1, 60, token="unsure") == (1, "local")
        # the shared store is down for the limiter: the give-back is owed, not dropped
        assert await cache.async_adjust_counter("slots", -1, "shared", token="held") is None
        assert store.pending == {("slots", "unsure"): -1, ("slots", "held"): -1}
        await asyncio.sleep(RETRY_S)
        assert await cache.async_increment_counter("slots", 1, 60, token="next") == (1, "shared")
        assert store.pending == {} and store.dropped_releases == 0
        assert plain.get(PREFIX + "slots") == b"1"  # only "next" holds a slot
        assert plain.get("{llm-extproc:slots}:take:unsure") == b"given"  # a late "unsure" will not count
    finally:
        await store.close()

import asyncio
import time

from extproc import DualCache, InMemoryCache


def test_set_get_delete_and_ttl(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = DualCache()
    cache.set_cache("a", 1, ttl=10)
    cache.set_cache("b", 2)
    assert cache.get_cache("a") == 1
    now[0] += 11
    assert cache.get_cache("a") is None
    assert cache.get_cache("b") == 2
    cache.delete_cache("b")
    assert cache.get_cache("b") is None


def test_increment_keeps_window_expiry(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = DualCache()
    assert cache.increment_cache("n", 1, ttl=60) == 1
    now[0] = 30
    assert cache.increment_cache("n", 2, ttl=60) == 3
    now[0] = 61
    assert cache.get_cache("n") is None
    assert cache.increment_cache("n", 5, ttl=60) == 5


def test_async_methods_and_batch():
    async def scenario():
        cache = DualCache()
        await cache.async_set_cache("k1", "v1")
        await cache.async_batch_set_cache([("k2", "v2"), ("k3", "v3")], ttl=5)
        assert await cache.async_get_cache("k1") == "v1"
        assert await cache.async_batch_get_cache(["k1", "k2", "missing", "k3"]) == ["v1", "v2", None, "v3"]
        assert await cache.async_increment_cache("c", 2) == 2
        assert await cache.async_increment_cache("c", -1) == 1
        await cache.async_delete_cache("k1")
        assert await cache.async_get_cache("k1") is None

    asyncio.run(scenario())


def test_bounded_size_evicts_oldest():
    store = InMemoryCache(max_size=3)
    cache = DualCache(in_memory_cache=store)
    for i in range(5):
        cache.set_cache(f"k{i}", i)
    assert len(store) == 3
    assert cache.batch_get_cache(["k0", "k1", "k2", "k3", "k4"]) == [None, None, 2, 3, 4]

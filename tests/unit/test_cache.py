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


# ---- counters that are given back: adjust never creates a key ----
def test_adjust_changes_only_an_existing_counter_and_keeps_its_expiry(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = InMemoryCache()
    assert store.adjust_sync("missing", -1) is None
    assert len(store) == 0 and store.get_sync("missing") is None  # nothing created
    store.increment_sync("n", 3, ttl=60)
    now[0] = 30
    assert store.adjust_sync("n", -1) == 2
    assert store.adjust_sync("n", 0.5) == 2.5
    now[0] = 59.9
    assert store.get_sync("n") == 2.5
    now[0] = 60  # the window's original expiry: adjusting did not extend it
    assert store.get_sync("n") is None
    store.increment_sync("gone", 1, ttl=10)
    now[0] = 71
    assert store.adjust_sync("gone", -1) is None  # expired: no key at -1
    assert store.get_sync("gone") is None and len(store) == 0


def test_dual_cache_counter_extensions_without_a_shared_store(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])

    async def scenario():
        cache = DualCache()
        assert await cache.async_adjust_counter("p", -1) is None
        assert await cache.async_adjust_counter("p", -1, store="local") is None
        assert len(cache.in_memory_cache) == 0
        assert await cache.async_increment_counter("p", 1, ttl=10) == (1, "local")
        assert await cache.async_increment_counter("p", 1, ttl=10) == (2, "local")
        assert await cache.async_adjust_counter("p", -1, store="local") == 1
        now[0] = 11
        assert await cache.async_adjust_counter("p", -1, store="local") is None
        assert cache.get_cache("p") is None and len(cache.in_memory_cache) == 0

    asyncio.run(scenario())


def test_rate_limiter_release_after_the_counters_expired_creates_nothing(monkeypatch):
    """A parallel slot and a tpm window that expire while the request is in flight end absent,
    not at -1 (or at the settlement's negative amount)."""
    from extproc import UserAPIKeyAuth
    from handlers.rate_limiter import Handler

    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    handler = Handler(limits={"api_key": {"max_parallel_requests": 2, "tpm": 1000}}, parallel_ttl_s=600)
    user = UserAPIKeyAuth(api_key="hashed-key")
    parallel = "rl:api_key:hashed-key:parallel"

    async def scenario():
        cache = DualCache()
        data = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}
        assert await handler.async_pre_call_hook(user, cache, data, "completion") is None
        held = data["metadata"]["rate_limiter"]["held"]
        assert [(key.split(":")[3], store) for key, _, _, store in held] == [
            ("parallel", "local"),
            ("tpm", "local"),
        ]
        assert cache.get_cache(parallel) == 1
        now[0] = 601  # both counters expire while the request is in flight
        kwargs = {"litellm_params": {"metadata": data["metadata"]}}
        await handler.async_log_failure_event(kwargs, None, None, None)
        assert cache.get_cache(parallel) is None
        assert len(cache.in_memory_cache) == 0  # no parallel key at -1, no tpm window at -estimate
        # the next request starts from a clean count, so the limit is not loosened
        second = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        await handler.async_pre_call_hook(user, cache, second, "completion")
        assert cache.get_cache(parallel) == 1

    asyncio.run(scenario())


def test_adjust_never_takes_a_counter_below_zero_but_increment_may():
    store = InMemoryCache()
    store.increment_sync("p", 1, 60)
    assert store.adjust_sync("p", -1) == 0
    assert store.adjust_sync("p", -1) == 0
    assert store.increment_sync("p", -1, 60) == -1

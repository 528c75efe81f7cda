"""`RedisBackend` and `ResilientBackend` against a real valkey-server (never a mock)."""

import asyncio
import logging
import socket
import time

import pytest
import redis.exceptions
from redis_server import ValkeyServer, valkey_server_fixture  # noqa: F401  (the `valkey_server` fixture)

from extproc.api.openai import reply_for as from_exception
from extproc.state.cache import DualCache, InMemoryCache
from extproc.state.redis_cache import (
    CacheUnavailable,
    RedisBackend,
    ResilientBackend,
    shared_dual_cache,
)

PREFIX = "llm-extproc:"
LOGGER = "extproc.redis_cache"
RETRY_S = 0.2


@pytest.fixture()
async def backend(valkey_server: ValkeyServer):
    store = RedisBackend(valkey_server.url)
    yield store
    await store.close()


@pytest.fixture()
def plain(valkey_server: ValkeyServer):
    """A plain client to look at what is really on the server."""
    with valkey_server.client() as client:
        yield client


# ---- RedisBackend ----
async def test_set_get_delete_round_trip(backend: RedisBackend, plain) -> None:
    values = {"s": "hello", "d": {"a": 1, "b": [1, 2.5, None], "c": "x"}, "i": 42, "f": 1.5, "l": [1, "two"]}
    for key, value in values.items():
        await backend.set(key, value, None)
    for key, value in values.items():
        assert await backend.get(key) == value
    assert plain.get(PREFIX + "i") == b"42"  # JSON numerals, so INCRBYFLOAT works on them
    assert plain.get(PREFIX + "s") == b'"hello"'
    assert plain.pttl(PREFIX + "d") == -1
    assert await backend.get("missing") is None
    await backend.delete("s")
    assert await backend.get("s") is None
    assert plain.exists(PREFIX + "s") == 0


async def test_batch_get(backend: RedisBackend) -> None:
    await backend.set("a", {"x": 1}, None)
    await backend.set("c", 3, None)
    assert await backend.batch_get(["a", "b", "c"]) == [{"x": 1}, None, 3]
    assert await backend.batch_get([]) == []


async def test_set_with_ttl_uses_px(backend: RedisBackend, plain) -> None:
    await backend.set("t", "v", 10)
    assert 9_000 < plain.pttl(PREFIX + "t") <= 10_000
    await backend.set("short", "v", 0.05)
    assert 0 < plain.pttl(PREFIX + "short") <= 50


async def test_increment_creates_with_ttl_and_keeps_the_window(backend: RedisBackend, plain) -> None:
    key = PREFIX + "c"
    assert await backend.increment("c", 1, 10) == 1
    assert 9_000 < plain.pttl(key) <= 10_000
    plain.pexpire(key, 5_000)  # pretend most of the window has passed
    result = await backend.increment("c", 2, 10)
    assert result == 3 and isinstance(result, int)
    assert 0 < plain.pttl(key) <= 5_000  # later increments do not extend the window
    half = await backend.increment("c", 0.5, 10)
    assert half == 3.5 and isinstance(half, float)
    assert await backend.get("c") == 3.5


async def test_increment_without_ttl_and_on_a_set_number(backend: RedisBackend, plain) -> None:
    assert await backend.increment("n", 2, None) == 2
    assert plain.pttl(PREFIX + "n") == -1
    await backend.set("m", 5, None)
    assert await backend.increment("m", -2, None) == 3
    assert await backend.get("m") == 3


async def test_prefix_separates_stores(valkey_server: ValkeyServer, plain) -> None:
    a, b = RedisBackend(valkey_server.url, prefix="a:"), RedisBackend(valkey_server.url, prefix="b:")
    try:
        await a.set("k", 1, None)
        assert await b.get("k") is None
        assert plain.get("a:k") == b"1"
    finally:
        await a.close()
        await b.close()


async def test_concurrent_increments_from_two_replicas_are_exact(valkey_server: ValkeyServer) -> None:
    # About exactness, not timeouts: 200 calls at once on a busy machine may wait longer than 0.25 s.
    one, two = RedisBackend(valkey_server.url, timeout_s=5), RedisBackend(valkey_server.url, timeout_s=5)
    try:
        calls = [(one if i % 2 else two).increment("rpm", 1, 60) for i in range(200)]
        results = await asyncio.gather(*calls)
        assert sorted(results) == list(range(1, 201))  # every increment saw a distinct count
        assert await one.get("rpm") == 200
    finally:
        await one.close()
        await two.close()


# ---- a store that is not there ----
async def test_dead_server_fails_fast(valkey_server: ValkeyServer) -> None:
    store = RedisBackend(valkey_server.url)
    valkey_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.increment("k", 1, 10)
        assert time.monotonic() - started < 2
    finally:
        await store.close()


async def test_silent_server_is_bounded_by_the_timeout() -> None:
    """A peer that accepts connections but never answers: the socket timeout ends the call."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        store = RedisBackend(url, timeout_s=0.25)
        resilient = ResilientBackend(RedisBackend(url, timeout_s=0.25), InMemoryCache())
        try:
            started = time.monotonic()
            with pytest.raises(redis.exceptions.TimeoutError):
                await store.get("k")
            assert time.monotonic() - started < 2
            started = time.monotonic()
            assert await resilient.increment("k", 1, 10) == 1  # served locally
            assert time.monotonic() - started < 2
            assert resilient.state == "down"
        finally:
            await store.close()
            await resilient.close()


# ---- ResilientBackend ----
def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def test_outage_falls_back_to_local_and_recovers(
    valkey_server: ValkeyServer, plain, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    store = ResilientBackend(RedisBackend(valkey_server.url), InMemoryCache(), retry_after_s=RETRY_S)
    try:
        assert await store.increment("k", 5, 60) == 5
        assert plain.get(PREFIX + "k") == b"5"
        assert store.state == "up"

        valkey_server.stop()
        results = await asyncio.gather(*(store.increment("k", 1, 60) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))  # in-process counts from here on
        await store.set("s", "local", None)
        assert await store.get("s") == "local"
        assert await store.batch_get(["k", "s"]) == [20, "local"]
        assert store.state == "down"
        assert store.outages == 1
        assert store.fallback_calls == 23
        warnings = _records(caplog, logging.WARNING)
        assert len(warnings) == 1, warnings  # one line per outage, not per request
        assert "unavailable" in warnings[0].getMessage() and valkey_server.url in warnings[0].getMessage()

        valkey_server.start()  # empty again, same port
        assert await store.get("k") == 20  # not retried before retry_after_s: still local
        assert store.state == "down"
        await asyncio.sleep(RETRY_S)
        assert await store.increment("k", 1, 60) == 1  # this call reached the restarted server
        assert store.state == "up"
        assert plain.get(PREFIX + "k") == b"1"
        assert 0 < plain.pttl(PREFIX + "k") <= 60_000
        await store.set("after", {"ok": True}, None)
        assert plain.get(PREFIX + "after") == b'{"ok":true}'
        assert store.outages == 1 and store.fallback_calls == 24
        assert len(_records(caplog, logging.WARNING)) == 1
        recovered = _records(caplog, logging.INFO)
        assert len(recovered) == 1 and "recovered" in recovered[0].getMessage()

        valkey_server.stop()  # a second outage is counted and logged once more
        assert await store.get("after") is None
        assert store.outages == 2 and len(_records(caplog, logging.WARNING)) == 2
    finally:
        await store.close()


async def test_deny_mode_refuses_while_down_and_recovers(
    valkey_server: ValkeyServer, plain, caplog: pytest.LogCaptureFixture
) -> None:
    store = ResilientBackend(
        RedisBackend(valkey_server.url), InMemoryCache(), on_unavailable="deny", retry_after_s=RETRY_S
    )
    try:
        assert await store.increment("k", 1, 60) == 1
        valkey_server.stop()
        for _ in range(3):
            with pytest.raises(CacheUnavailable) as raised:
                await store.increment("k", 1, 60)
        assert raised.value.status_code == 503
        assert raised.value.detail == "rate-limit state is unavailable"
        reply = from_exception(raised.value)  # what the sidecar answers with
        assert reply.status == 503
        assert store.state == "down" and store.outages == 1 and store.fallback_calls == 3
        assert len(_records(caplog, logging.WARNING)) == 1

        valkey_server.start()
        await asyncio.sleep(RETRY_S)
        assert await store.increment("k", 1, 60) == 1
        assert store.state == "up"
        assert plain.get(PREFIX + "k") == b"1"
    finally:
        await store.close()


async def test_resilient_backend_rejects_an_unknown_mode(valkey_server: ValkeyServer) -> None:
    shared = RedisBackend(valkey_server.url)
    try:
        with pytest.raises(ValueError, match="on_unavailable"):
            ResilientBackend(shared, InMemoryCache(), on_unavailable="maybe")  # type: ignore[arg-type]
    finally:
        await shared.close()


async def test_shared_dual_cache(valkey_server: ValkeyServer, plain) -> None:
    cache = shared_dual_cache(valkey_server.url)
    assert isinstance(cache, DualCache)
    shared = cache.shared_cache
    assert isinstance(shared, ResilientBackend) and shared.local is cache.in_memory_cache
    try:
        assert await cache.async_increment_cache("user:1", 2, ttl=60) == 2
        assert plain.get(PREFIX + "user:1") == b"2"
        await cache.async_set_cache("cfg", {"limit": 10}, ttl=30)
        assert await cache.async_get_cache("cfg") == {"limit": 10}
        assert await cache.async_batch_get_cache(["cfg", "user:1"]) == [{"limit": 10}, 2]
        assert cache.get_cache("cfg") is None  # the sync forms stay in-process
    finally:
        await shared.close()


# ---- counters that are given back ----
async def test_adjust_changes_only_an_existing_key(backend: RedisBackend, plain) -> None:
    assert await backend.adjust("missing", -1) is None
    assert plain.exists(PREFIX + "missing") == 0  # no key created at -1
    assert await backend.increment("c", 3, 10) == 3
    plain.pexpire(PREFIX + "c", 5_000)
    result = await backend.adjust("c", -1)
    assert result == 2 and isinstance(result, int)
    assert 0 < plain.pttl(PREFIX + "c") <= 5_000  # the expiry is kept
    half = await backend.adjust("c", 0.5)
    assert half == 2.5 and isinstance(half, float)
    assert await backend.increment("forever", 1, None) == 1
    assert await backend.adjust("forever", -1) == 0
    assert plain.pttl(PREFIX + "forever") == -1  # no expiry added either


async def test_adjust_after_the_key_expired_leaves_it_absent(backend: RedisBackend, plain) -> None:
    assert await backend.increment("parallel", 1, 0.05) == 1
    await asyncio.sleep(0.1)  # the counter expires while "in flight"
    assert await backend.adjust("parallel", -1) is None
    assert plain.exists(PREFIX + "parallel") == 0
    assert await backend.get("parallel") is None  # absent, not -1
    assert await backend.increment("parallel", 1, 60) == 1  # the next acquire starts from zero


async def test_release_pinned_local_leaves_the_shared_counter_alone(
    valkey_server: ValkeyServer, plain
) -> None:
    local = InMemoryCache()
    store = ResilientBackend(RedisBackend(valkey_server.url), local, retry_after_s=RETRY_S)
    try:
        valkey_server.stop()
        assert await store.increment_pinned("p", 1, 60) == (1, "local")  # acquired during the outage
        valkey_server.start()
        await asyncio.sleep(RETRY_S)
        assert await store.increment_pinned("p", 1, 60) == (1, "shared")  # another request, after recovery
        assert store.state == "up"
        assert await store.adjust_pinned("p", -1, "local") == 0  # the first one ends
        assert plain.get(PREFIX + "p") == b"1"  # the shared count of the request still in flight
        assert local.get_sync("p") == 0
        assert await store.adjust_pinned("p", -1, "shared") == 0
        assert plain.get(PREFIX + "p") == b"0"
        assert store.dropped_releases == 0
    finally:
        await store.close()


async def test_release_pinned_shared_while_down_is_dropped(valkey_server: ValkeyServer, plain) -> None:
    local = InMemoryCache()
    store = ResilientBackend(RedisBackend(valkey_server.url), local, retry_after_s=RETRY_S)
    try:
        assert await store.increment_pinned("p", 1, 60) == (1, "shared")
        valkey_server.stop()
        assert await store.increment_pinned("p", 1, 60) == (1, "local")  # a request during the outage
        assert await store.adjust_pinned("p", -1, "shared") is None  # the first one ends: skipped
        assert store.dropped_releases == 1
        assert local.get_sync("p") == 1  # the local count was not touched
        assert await store.adjust_pinned("other", -1, "shared") is None  # within the probe interval
        assert store.dropped_releases == 2 and local.get_sync("other") is None

        valkey_server.start()  # empty again
        await asyncio.sleep(RETRY_S)
        assert await store.adjust_pinned("p", -1, "shared") is None  # this one probes: reached, key absent
        assert store.state == "up" and store.dropped_releases == 2
        assert plain.exists(PREFIX + "p") == 0  # no key created at -1
        assert local.get_sync("p") == 1
    finally:
        await store.close()


async def test_dual_cache_pins_counters_to_the_store_that_took_them(
    valkey_server: ValkeyServer, plain
) -> None:
    cache = shared_dual_cache(valkey_server.url)
    shared = cache.shared_cache
    assert isinstance(shared, ResilientBackend)
    shared.retry_after_s = RETRY_S
    try:
        assert await cache.async_increment_counter("c", 2, ttl=60) == (2, "shared")
        assert await cache.async_adjust_counter("c", -1, store="shared") == 1
        assert await cache.async_adjust_counter("absent", -1, store="shared") is None
        assert plain.get(PREFIX + "c") == b"1" and plain.exists(PREFIX + "absent") == 0
        valkey_server.stop()
        assert await cache.async_increment_counter("c", 1, ttl=60) == (1, "local")
        assert await cache.async_adjust_counter("c", -1, store="shared") is None
        assert shared.dropped_releases == 1 and cache.get_cache("c") == 1
        assert await cache.async_adjust_counter("c", -1, store="local") == 0
    finally:
        await shared.close()


async def test_rate_limiter_release_after_the_shared_counters_expired(
    valkey_server: ValkeyServer, plain
) -> None:
    """The soak's negative parallel counters: a slot that expires in flight must not come back at -1."""
    from extproc import UserAPIKeyAuth
    from handlers.rate_limiter import Handler

    handler = Handler(limits={"api_key": {"max_parallel_requests": 2, "tpm": 1000}})
    user = UserAPIKeyAuth(api_key="hashed-key")
    parallel = PREFIX + "rl:api_key:hashed-key:parallel"
    cache = shared_dual_cache(valkey_server.url)
    shared = cache.shared_cache
    assert isinstance(shared, ResilientBackend)
    try:
        data = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}
        assert await handler.async_pre_call_hook(user, cache, data, "completion") is None
        held = data["metadata"]["rate_limiter"]["held"]
        assert [store for *_, store in held] == ["shared", "shared"]
        assert plain.get(parallel) == b"1"
        tpm = PREFIX + held[1][0]
        for key in (parallel, tpm):
            plain.pexpire(key, 20)
        await asyncio.sleep(0.05)  # both expire while the request is in flight
        kwargs = {"litellm_params": {"metadata": data["metadata"]}}
        await handler.async_log_failure_event(kwargs, None, None, None)
        assert plain.exists(parallel) == 0 and plain.exists(tpm) == 0  # absent, not -1 / -estimate
        assert shared.dropped_releases == 0
    finally:
        await shared.close()


async def test_rate_limiter_releases_an_outage_acquire_locally(valkey_server: ValkeyServer, plain) -> None:
    from extproc import UserAPIKeyAuth
    from handlers.rate_limiter import Handler

    handler = Handler(limits={"api_key": {"max_parallel_requests": 5}})
    user = UserAPIKeyAuth(api_key="hashed-key")
    key = "rl:api_key:hashed-key:parallel"
    cache = shared_dual_cache(valkey_server.url)
    shared = cache.shared_cache
    assert isinstance(shared, ResilientBackend)
    shared.retry_after_s = RETRY_S

    def request() -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": "hello"}]}

    async def end(data: dict) -> None:
        await handler.async_log_success_event(
            {"litellm_params": {"metadata": data["metadata"]}}, None, None, None
        )

    try:
        valkey_server.stop()
        during = request()
        await handler.async_pre_call_hook(user, cache, during, "completion")  # counted locally
        valkey_server.start()
        await asyncio.sleep(RETRY_S)
        after = request()
        await handler.async_pre_call_hook(user, cache, after, "completion")  # counted in Valkey
        assert plain.get(PREFIX + key) == b"1" and cache.get_cache(key) == 1
        await end(during)
        assert plain.get(PREFIX + key) == b"1"  # the shared count is not decremented by a local acquire
        assert cache.get_cache(key) == 0
        await end(after)
        assert plain.get(PREFIX + key) == b"0"
        assert shared.dropped_releases == 0
    finally:
        await shared.close()


async def test_connections_from_before_a_restart_do_not_make_a_second_outage(
    valkey_server: ValkeyServer, plain
) -> None:
    store = ResilientBackend(RedisBackend(valkey_server.url), InMemoryCache(), retry_after_s=RETRY_S)
    try:
        # Eight calls at once open eight pooled connections, idle afterwards.
        await asyncio.gather(*(store.increment("k", 1, 60) for _ in range(8)))
        valkey_server.stop()
        valkey_server.start()  # the idle connections now lead to a server that is gone
        assert await store.increment("k", 1, 60) == 1  # local: one of them failed, an outage began
        assert store.outages == 1
        await asyncio.sleep(RETRY_S)
        assert await store.increment("k", 1, 60) == 1  # the probe reached the new server
        assert store.state == "up"
        results = await asyncio.gather(*(store.increment("k", 1, 60) for _ in range(8)))
        assert sorted(results) == list(range(2, 10))  # all on the new server, none on a stale connection
        assert store.outages == 1 and store.state == "up"
        assert plain.get(PREFIX + "k") == b"9"
    finally:
        await store.close()


async def test_adjust_never_takes_a_counter_below_zero(backend: RedisBackend, plain) -> None:
    # A key that expired while requests ran is re-created by newer ones; the older ones' releases then
    # land on it and must not take it negative (a negative count loosens the limit until the TTL).
    assert await backend.increment("p", 1, 10) == 1
    assert await backend.adjust("p", -1) == 0
    assert await backend.adjust("p", -1) == 0
    assert plain.get(PREFIX + "p") == b"0"
    assert 0 < plain.pttl(PREFIX + "p") <= 10_000  # the expiry is kept
    assert await backend.increment("p", -1, 10) == -1  # LiteLLM's increment itself is not clamped


# ---- several counters in one round trip ----
async def test_take_many_and_adjust_many_are_the_single_calls_in_one_batch(backend: RedisBackend, plain) -> None:
    takes = [("a", 1.0, 60.0, None), ("b", 2.5, None, "t1"), ("a", 1.0, 60.0, None)]
    assert await backend.take_many(takes) == [1.0, 2.5, 2.0]
    assert await backend.take_many([("b", 2.5, None, "t1")]) == [2.5]  # the same take counts once
    assert 0 < plain.pttl(PREFIX + "a") <= 60_000 and plain.pttl(PREFIX + "b") == -1
    plain.script_flush()  # a restarted server holds no scripts: they are loaded and the batch resent
    await backend.adjust_many([("a", -1.5, None), ("b", -2.5, "t1"), ("b", -2.5, "t1"), ("gone", -1, None)])
    assert plain.get(PREFIX + "a") == b"0.5"
    assert plain.get(PREFIX + "b") == b"0"  # given back once, however often it is sent
    assert plain.exists(PREFIX + "gone") == 0


async def test_a_batch_with_one_script_missing_counts_each_change_once(backend: RedisBackend, plain) -> None:
    plain.script_flush()
    await backend.increment("warm", 1, None)  # the server now holds the increment script, not the take one
    assert await backend.take_many([("a", 1.0, None, None), ("b", 1.0, None, "t")]) == [1.0, 1.0]
    assert plain.get(PREFIX + "a") == b"1" and plain.get(PREFIX + "b") == b"1"


class RoundTrips:
    """A TCP relay in front of a server that counts the client's turns: each time the client sends after
    the server last spoke (or first), one round trip."""

    def __init__(self, port: int) -> None:
        self.port, self.turns = port, 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        last = ["server"]

        async def pump(reader, writer, side: str) -> None:
            while data := await reader.read(65536):
                if side == "client" and last[0] == "server":
                    self.turns += 1
                last[0] = side
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(
            pump(client_reader, server_writer, "client"), pump(server_reader, client_writer, "server")
        )

    def close(self) -> None:
        assert self._server is not None
        self._server.close()


async def test_the_rate_limiter_makes_one_round_trip_to_take_and_one_to_release(
    valkey_server: ValkeyServer, plain
) -> None:
    from extproc import HTTPException, UserAPIKeyAuth
    from handlers.rate_limiter import Handler

    relay = RoundTrips(valkey_server.port)
    cache = shared_dual_cache(await relay.start())
    handler = Handler(limits={"api_key": {"max_parallel_requests": 2, "rpm": 3, "tpm": 10_000}})
    user = UserAPIKeyAuth(api_key="hashed-key")

    def chat() -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": "hello"}]}

    try:
        warm = chat()  # the connection's own setup and the scripts' first load are not per request
        await handler.async_pre_call_hook(user, cache, warm, "completion")
        await handler.async_log_failure_event({"litellm_params": {"metadata": warm["metadata"]}}, None, None, None)
        data, before = chat(), relay.turns
        await handler.async_pre_call_hook(user, cache, data, "completion")
        assert relay.turns - before == 1  # three counters, one round trip
        assert plain.get(PREFIX + "rl:api_key:hashed-key:parallel") == b"1"
        before = relay.turns
        await handler.async_log_failure_event({"litellm_params": {"metadata": data["metadata"]}}, None, None, None)
        assert relay.turns - before == 1  # tokens settled and the slot freed together
        assert plain.get(PREFIX + "rl:api_key:hashed-key:parallel") == b"0"
        await handler.async_pre_call_hook(user, cache, chat(), "completion")  # the window's third request
        before = relay.turns
        with pytest.raises(HTTPException) as refused:
            await handler.async_pre_call_hook(user, cache, chat(), "completion")
        assert refused.value.status_code == 429
        assert relay.turns - before == 2  # taken, then all given back
        assert plain.get(PREFIX + "rl:api_key:hashed-key:parallel") == b"1"  # only the third holds a slot
    finally:
        await cache.shared_cache.close()
        relay.close()


class FailingStore(InMemoryCache):
    """A shared store whose client fails as redis-py's cluster client does in a failover."""

    where = "a cluster failing over"

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def increment(self, key: str, amount: float, ttl: float | None) -> float:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.SlotNotCoveredError("slot 42 is not covered"),
        AttributeError("'NoneType' object has no attribute 'writelines'"),
    ],
    ids=["clusterdown", "tryagain", "slot-not-covered", "writer-gone"],
)
async def test_a_cluster_between_primaries_is_an_outage_not_a_failed_request(error: BaseException) -> None:
    store = ResilientBackend(FailingStore(error), InMemoryCache(), retry_after_s=RETRY_S)  # type: ignore[arg-type]
    assert await store.increment("k", 1, 60) == 1  # counted in-process
    assert store.state == "down" and store.outages == 1 and store.fallback_calls == 1


async def test_a_bug_is_not_an_outage() -> None:
    store = ResilientBackend(FailingStore(redis.exceptions.ResponseError("WRONGTYPE")), InMemoryCache())  # type: ignore[arg-type]
    with pytest.raises(redis.exceptions.ResponseError):
        await store.increment("k", 1, 60)
    assert store.state == "up"

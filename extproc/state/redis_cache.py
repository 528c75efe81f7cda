"""A shared `CacheBackend` on Redis or Valkey, and a wrapper that survives the store going away.

`RedisBackend` keeps values JSON-encoded (numbers as plain numerals, so counters are server-side
INCRBYFLOAT targets) and changes counters atomically in one round trip. `ResilientBackend` puts it in
front of the in-process cache: while the shared store is unreachable, calls are served from local
counts (or refused with `CacheUnavailable`), and the shared store is tried again at most once per
`retry_after_s` until it answers.

Counters that are given back use `adjust`, which changes only a key that still exists (so a release
after the key expired creates no negative count), and the pinned forms: `increment_pinned` says which
store counted, and `adjust_pinned` gives back on that store only. A release meant for the shared store
while it is down is dropped (its count expires with the key's TTL), never applied to local counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from extproc.state.cache import CacheBackend, DualCache, InMemoryCache, PinningBackend, Store

logger = logging.getLogger("extproc.redis_cache")
T = TypeVar("T")

# KEYS[1] = counter, ARGV[1] = amount, ARGV[2] = ttl in ms (0: none). The expiry is set only when the
# key has none (a new counter), so later increments never extend the window. The result is returned
# as INCRBYFLOAT's string: a Lua number would be truncated to an integer on the way out.
INCREMENT_LUA = """
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
local ttl_ms = tonumber(ARGV[2])
if ttl_ms > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return value
"""

# KEYS[1] = counter, ARGV[1] = amount. Changes the counter only if it exists (an expired key does not),
# so a release never creates a key, and never below 0: releases of requests counted on a key that expired
# while they ran may land on its successor. nil when absent, else INCRBYFLOAT's string as above.
ADJUST_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if tonumber(value) < 0 then
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
  return '0'
end
return value
"""

# What makes the shared store "down" (OSError includes the builtin TimeoutError). Other errors, such as
# a ResponseError for a key holding a non-number, are bugs to surface, not outages.
UNAVAILABLE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, round(ttl * 1000))


def _decode(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _number(raw: bytes | str) -> float:
    value = float(raw)
    return int(value) if value.is_integer() else value


class RedisBackend:
    """`CacheBackend` on `redis.asyncio`; every call is bounded by `timeout_s` and never retried here.

    At most `max_connections` are open; a burst beyond that waits (up to 2 s or 8 timeouts) for a free one
    instead of failing with "too many connections".
    """

    def __init__(
        self, url: str, *, timeout_s: float = 0.25, prefix: str = "llm-extproc:", max_connections: int = 32
    ) -> None:
        self.prefix = prefix
        # Where the store is, for logs: the URL without credentials.
        parts = urlsplit(url)
        self.where = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            # Waiting for a free connection is not an outage: every call in progress ends within its socket
            # timeout, so a burst beyond the pool waits its turn instead of falling back to local counts.
            timeout=max(2.0, 8 * timeout_s),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # fail fast: ResilientBackend decides what happens next
        )
        self._client = aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
        self._increment = self._client.register_script(INCREMENT_LUA)
        self._adjust = self._client.register_script(ADJUST_LUA)

    async def get(self, key: str) -> Any:
        return _decode(await self._client.get(self.prefix + key))

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        await self._client.set(self.prefix + key, orjson.dumps(value), px=_ms(ttl) or None)

    async def increment(self, key: str, amount: float, ttl: float | None) -> float:
        return _number(await self._increment(keys=[self.prefix + key], args=[repr(amount), _ms(ttl)]))

    async def adjust(self, key: str, amount: float) -> float | None:
        raw = await self._adjust(keys=[self.prefix + key], args=[repr(amount)])
        return None if raw is None else _number(raw)

    async def delete(self, key: str) -> None:
        await self._client.delete(self.prefix + key)

    async def drop_idle_connections(self) -> None:
        await self._client.connection_pool.disconnect(inuse_connections=False)

    async def batch_get(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        raws: list[bytes | str | None] = await self._client.mget([self.prefix + key for key in keys])
        return [_decode(raw) for raw in raws]

    async def close(self) -> None:
        await self._client.aclose()


class CacheUnavailable(Exception):
    """Raised by `ResilientBackend(on_unavailable="deny")` while the shared store is down.

    HTTP-exception-shaped (`status_code`, `detail`), so a hook that lets it escape fails closed:
    the sidecar answers with a 503 error envelope.
    """

    status_code = 503
    detail = "rate-limit state is unavailable"

    def __init__(self) -> None:
        super().__init__(self.detail)


class ResilientBackend(PinningBackend):
    """Calls go to `shared`; while it is unreachable, to `local` ("local") or nowhere ("deny").

    One warning is logged per outage and one line when it ends. While down, at most one call per
    `retry_after_s` tries the shared store again; the first that succeeds switches back. Counts kept
    locally during an outage are not merged into the shared store.
    """

    def __init__(
        self,
        shared: RedisBackend,
        local: InMemoryCache,
        *,
        on_unavailable: Literal["local", "deny"] = "local",
        retry_after_s: float = 1.0,
    ) -> None:
        if on_unavailable not in ("local", "deny"):
            raise ValueError(f"on_unavailable must be 'local' or 'deny', not {on_unavailable!r}")
        self.shared = shared
        self.local = local
        self.on_unavailable = on_unavailable
        self.retry_after_s = retry_after_s
        self.outages = 0  # outages seen since start
        self.fallback_calls = 0  # calls answered without the shared store (served locally or denied)
        self.dropped_releases = 0  # pinned adjustments of the shared store skipped while it was down
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def state(self) -> str:
        return "up" if self._down_since is None else "down"

    def _shared_due(self) -> bool:
        """Whether a call goes to the shared store: it is up, or this is the interval's one probe."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_after_s  # one probe per interval, however many calls
        return True

    async def _served(self, op: Callable[[CacheBackend], Awaitable[T]]) -> tuple[T, Store]:
        if self._shared_due():
            try:
                result = await op(self.shared)
            except UNAVAILABLE_ERRORS as exc:
                self._mark_down(exc)
            else:
                if self._down_since is not None:
                    await self._mark_up()
                return result, "shared"
        self.fallback_calls += 1
        if self.on_unavailable == "deny":
            raise CacheUnavailable()
        return await op(self.local), "local"

    async def _call(self, op: Callable[[CacheBackend], Awaitable[T]]) -> T:
        return (await self._served(op))[0]

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        now = time.monotonic()
        self._down_since = now
        self._next_try = now + self.retry_after_s
        self.outages += 1
        action = "serving in-process counts" if self.on_unavailable == "local" else "denying requests"
        logger.warning(
            "shared cache %s unavailable (outage %d: %s: %s); %s until it recovers",
            self.shared.where,
            self.outages,
            type(exc).__name__,
            exc,
            action,
        )

    async def _mark_up(self) -> None:
        assert self._down_since is not None
        # Connections idle since before the outage may lead to a server that restarted meanwhile: drop them
        # now rather than let each fail once and look like a new outage.
        await self.shared.drop_idle_connections()
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        logger.info(
            "shared cache %s recovered after %.1f s (outage %d)", self.shared.where, down_for, self.outages
        )

    async def get(self, key: str) -> Any:
        return await self._call(lambda store: store.get(key))

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        await self._call(lambda store: store.set(key, value, ttl))

    async def increment(self, key: str, amount: float, ttl: float | None) -> float:
        return await self._call(lambda store: store.increment(key, amount, ttl))

    async def adjust(self, key: str, amount: float) -> float | None:
        return await self._call(lambda store: store.adjust(key, amount))

    async def increment_pinned(self, key: str, amount: float, ttl: float | None) -> tuple[float, Store]:
        return await self._served(lambda store: store.increment(key, amount, ttl))

    async def adjust_pinned(self, key: str, amount: float, store: Store) -> float | None:
        """`adjust` on the store named: "local" is the in-process cache; "shared" is skipped (and
        counted in `dropped_releases`) while the shared store is down, never applied locally."""
        if store == "local":
            return await self.local.adjust(key, amount)
        if self._shared_due():
            try:
                result = await self.shared.adjust(key, amount)
            except UNAVAILABLE_ERRORS as exc:
                self._mark_down(exc)
            else:
                if self._down_since is not None:
                    await self._mark_up()
                return result
        self.dropped_releases += 1
        return None

    async def delete(self, key: str) -> None:
        await self._call(lambda store: store.delete(key))

    async def batch_get(self, keys: list[str]) -> list[Any]:
        return await self._call(lambda store: store.batch_get(keys))

    async def close(self) -> None:
        await self.shared.close()


def shared_dual_cache(url: str, *, on_unavailable: str = "local", timeout_s: float = 0.25) -> DualCache:
    """A `DualCache` whose async calls share state through Redis/Valkey at `url`."""
    local = InMemoryCache()
    mode = cast(Literal["local", "deny"], on_unavailable)  # ResilientBackend checks the value
    shared = ResilientBackend(RedisBackend(url, timeout_s=timeout_s), local, on_unavailable=mode)
    return DualCache(in_memory_cache=local, shared_cache=shared)

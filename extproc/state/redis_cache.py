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

A request's counters (the rate limiter's limits) change together in one round trip: `take_many` and
`adjust_many` send their script calls as one pipeline (not a transaction: each script is atomic on its
own); on a cluster the counters live in different slots, so there it is one call each.

Counters taken with a token (the rate limiter's parallel slots) are exact across a slow store: a take
leaves a marker beside its counter and its give-back removes it, so each counts once in whichever order
the store applies them. A take whose answer did not come in time may still be applied when the store
wakes up, so it is given back; a give-back that could not be sent is kept. Both wait in `pending` and
are sent before anything else once the store answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar, cast

import orjson
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from extproc.state.cache import (
    CacheBackend,
    DualCache,
    GiveBack,
    InMemoryCache,
    PinningBackend,
    Store,
    Take,
)
from extproc.state.store_url import StoreAddress, parse_store_url

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

# KEYS[1] = counter, KEYS[2] = the take's marker, ARGV as INCREMENT_LUA. A marker that exists means this
# take was counted already or given back already (a give-back that came first): it does not count again.
TAKE_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.call('GET', KEYS[1]) or '0'
end
local ttl_ms = tonumber(ARGV[2])
redis.call('SET', KEYS[2], 'taken', 'PX', ttl_ms > 0 and ttl_ms or tonumber(ARGV[3]))
local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if ttl_ms > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return value
"""

# KEYS[1] = counter, KEYS[2] = the take's marker, ARGV[1] = amount, ARGV[2] = how long a give-back that
# found no take is remembered (ms). Applies ADJUST_LUA only when the take counted and was not given back;
# with no take yet, leaves a marker so a take still on its way does not count.
GIVE_LUA = """
local marker = redis.call('GET', KEYS[2])
if marker == 'taken' then
  redis.call('DEL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return false
  end
  local value = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
  if tonumber(value) < 0 then
    redis.call('SET', KEYS[1], '0', 'KEEPTTL')
    return '0'
  end
  return value
end
if not marker then
  redis.call('SET', KEYS[2], 'given', 'PX', tonumber(ARGV[2]))
end
return false
"""
MARKER_TTL_MS = 3_600_000  # a take's marker on a counter without a TTL; a lone give-back's memory

# What makes the shared store "down" (OSError includes the builtin TimeoutError): no answer, a cluster
# between primaries (CLUSTERDOWN, TRYAGAIN, a slot no node serves yet), and the AttributeError redis-py's
# asyncio cluster client raises when a failover closes a connection another call is writing on (`_writer`
# gone: seen under traffic). Other errors, such as a ResponseError for a key holding a non-number, are
# bugs to surface, not outages.
UNAVAILABLE_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    AttributeError,
    OSError,
)
MAX_PENDING = 100_000  # give-backs kept for a shared store that is down; beyond, they are dropped


def _ms(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, round(ttl * 1000))


def _decode(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _number(raw: bytes | str) -> float:
    value = float(raw)
    return int(value) if value.is_integer() else value


def _connect(address: StoreAddress, timeout_s: float, max_connections: int) -> Any:
    """A redis.asyncio client for `address`: one node, the sentinels' primary, or a cluster."""
    # Fail fast: ResilientBackend decides what happens next.
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
    }
    if address.kind == "node":
        pool = aioredis.BlockingConnectionPool.from_url(
            address.url,
            max_connections=max_connections,
            # Waiting for a free connection is not an outage: every call in progress ends within its
            # socket timeout, so a burst beyond the pool waits its turn instead of falling back to local
            # counts.
            timeout=max(2.0, 8 * timeout_s),
            **common,
        )
        return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
    auth: dict[str, Any] = {"username": address.username, "password": address.password}
    if address.kind == "sentinel":
        assert address.service_name is not None
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            list(address.nodes),
            sentinel_kwargs={"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, **auth},
        )
        client = sentinels.master_for(address.service_name, db=address.db, ssl=address.tls, **auth, **common)
        client.sentinel_clients = sentinels.sentinels  # closed with the client (RedisBackend.close)
        return client
    nodes = [ClusterNode(host, port) for host, port in address.nodes]
    # One attempt per call (`retry`), as for a single node: a moved slot or a failed primary is found
    # again on a later call (the client refreshes its map of the cluster after such an error).
    return RedisCluster(
        startup_nodes=nodes,
        max_connections=max_connections,
        ssl=address.tls,
        username=address.username,
        password=address.password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


class RedisBackend:
    """`CacheBackend` on `redis.asyncio`; every call is bounded by `timeout_s` and never retried here.

    On one node at most `max_connections` are open; a burst beyond that waits (up to 2 s or 8 timeouts)
    for a free one instead of failing with "too many connections". With Sentinel the client follows the
    primary across failovers; on a cluster, a counter and its take markers share a hash slot (the marker
    is hash-tagged with the counter's name), so every script runs on one node.
    """

    def __init__(
        self, url: str, *, timeout_s: float = 0.25, prefix: str = "llm-extproc:", max_connections: int = 32
    ) -> None:
        self.prefix = prefix
        address = parse_store_url(url)
        self.kind = address.kind
        self.where = address.where  # where the store is, for logs: the URL without credentials
        self._client = _connect(address, timeout_s, max_connections)
        self._increment = self._client.register_script(INCREMENT_LUA)
        self._adjust = self._client.register_script(ADJUST_LUA)
        self._take = self._client.register_script(TAKE_LUA)
        self._give = self._client.register_script(GIVE_LUA)

    def _name(self, key: str) -> str:
        """A key's name in the store: no braces of its own, so a cluster hashes the whole name."""
        return self.prefix + key.replace("{", "%7B").replace("}", "%7D")

    def _pair(self, key: str, token: str) -> list[str]:
        """A counter and its take marker, in one hash slot."""
        name = self._name(key)
        return [name, f"{{{name}}}:take:{token}"]

    async def get(self, key: str) -> Any:
        return _decode(await self._client.get(self._name(key)))

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        await self._client.set(self._name(key), orjson.dumps(value), px=_ms(ttl) or None)

    async def increment(self, key: str, amount: float, ttl: float | None) -> float:
        return _number(await self._increment(keys=[self._name(key)], args=[repr(amount), _ms(ttl)]))

    async def adjust(self, key: str, amount: float) -> float | None:
        raw = await self._adjust(keys=[self._name(key)], args=[repr(amount)])
        return None if raw is None else _number(raw)

    async def take(self, key: str, amount: float, ttl: float | None, token: str) -> float:
        """`increment`, counted once per `token` (see TAKE_LUA)."""
        args = [repr(amount), _ms(ttl), MARKER_TTL_MS]
        return _number(await self._take(keys=self._pair(key, token), args=args))

    async def give(self, key: str, amount: float, token: str) -> float | None:
        """`adjust`, only for a take with this `token` that counted and was not given back yet."""
        raw = await self._give(keys=self._pair(key, token), args=[repr(amount), MARKER_TTL_MS])
        return None if raw is None else _number(raw)

    async def take_many(self, takes: Sequence[Take]) -> list[float]:
        """`increment` (or `take`, for an item with a token) of every item, in order, in one round trip."""
        if self.kind == "cluster":  # counters in different slots: one script call each
            return [
                await (self.increment(k, n, ttl) if token is None else self.take(k, n, ttl, token))
                for k, n, ttl, token in takes
            ]
        calls = [
            (self._increment, [self._name(key)], [repr(amount), _ms(ttl)])
            if token is None
            else (self._take, self._pair(key, token), [repr(amount), _ms(ttl), MARKER_TTL_MS])
            for key, amount, ttl, token in takes
        ]
        return [_number(raw) for raw in await self._pipelined(calls)]

    async def adjust_many(self, changes: Sequence[tuple[str, float, str | None]]) -> None:
        """`adjust` (or `give`, for an item with a token) of every (key, amount, token), in order, in one
        round trip."""
        if self.kind == "cluster":
            for key, amount, token in changes:
                await (self.adjust(key, amount) if token is None else self.give(key, amount, token))
            return
        calls = [
            (self._adjust, [self._name(key)], [repr(amount)])
            if token is None
            else (self._give, self._pair(key, token), [repr(amount), MARKER_TTL_MS])
            for key, amount, token in changes
        ]
        await self._pipelined(calls)

    async def _pipelined(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """Script calls sent together (EVALSHA, not a transaction: each script is atomic on its own).
        A script the server does not hold yet (a restart, a new server) is loaded and only the calls that
        failed for it are sent again: the others were applied, and must not count twice."""
        results = await self._send(calls)
        no_script = redis.exceptions.NoScriptError
        missing = [n for n, result in enumerate(results) if isinstance(result, no_script)]
        if missing:
            for script in {id(calls[n][0]): calls[n][0] for n in missing}.values():
                await self._client.script_load(script.script)
            for n, result in zip(missing, await self._send([calls[n] for n in missing]), strict=True):
                results[n] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _send(self, calls: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def delete(self, key: str) -> None:
        await self._client.delete(self._name(key))

    async def drop_idle_connections(self) -> None:
        pool = getattr(self._client, "connection_pool", None)  # a cluster client keeps one per node
        if pool is not None:
            await pool.disconnect(inuse_connections=False)

    async def batch_get(self, keys: list[str]) -> list[Any]:
        if not keys:
            return []
        names = [self._name(key) for key in keys]
        if self.kind == "cluster":  # keys in different slots: one MGET per node
            raws: list[bytes | str | None] = await self._client.mget_nonatomic(names)
        else:
            raws = await self._client.mget(names)
        return [_decode(raw) for raw in raws]

    async def close(self) -> None:
        await self._client.aclose()
        for sentinel in getattr(self._client, "sentinel_clients", ()):
            await sentinel.aclose()


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
        # Token give-backs the shared store still owes: (key, token) -> amount. Sent first when it answers.
        self.pending: dict[tuple[str, str], float] = {}
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

    async def _served(
        self, op: Callable[[CacheBackend], Awaitable[T]], unsure: Callable[[], None] | None = None
    ) -> tuple[T, Store]:
        """`op` on the shared store, else locally (or refused); `unsure()` when the shared store failed
        to answer (the call may still be applied there)."""
        if self._shared_due():
            try:
                await self._send_pending()
                result = await op(self.shared)
            except UNAVAILABLE_ERRORS as exc:
                self._mark_down(exc)
                if unsure is not None:
                    unsure()
            else:
                if self._down_since is not None:
                    await self._mark_up()
                return result, "shared"
        self.fallback_calls += 1
        if self.on_unavailable == "deny":
            raise CacheUnavailable()
        return await op(self.local), "local"

    async def _send_pending(self) -> None:
        """Send the give-backs the shared store owes, oldest first; raises if it does not answer."""
        while self.pending:
            (key, token), amount = next(iter(self.pending.items()))
            await self.shared.give(key, amount, token)
            del self.pending[(key, token)]

    def _owe(self, key: str, amount: float, token: str) -> None:
        if len(self.pending) < MAX_PENDING:
            self.pending[(key, token)] = amount
        else:
            self.dropped_releases += 1

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

    async def increment_pinned(
        self, key: str, amount: float, ttl: float | None, token: str | None = None
    ) -> tuple[float, Store]:
        if token is None:
            return await self._served(lambda store: store.increment(key, amount, ttl))
        shared = self.shared

        def take(store: CacheBackend) -> Awaitable[float]:
            if store is shared:
                return shared.take(key, amount, ttl, token)
            return store.increment(key, amount, ttl)

        # Counted locally instead, the take must not also count on the shared store when it wakes up.
        return await self._served(take, unsure=lambda: self._owe(key, -amount, token))

    async def adjust_pinned(
        self, key: str, amount: float, store: Store, token: str | None = None
    ) -> float | None:
        """`adjust` on the store named: "local" is the in-process cache; "shared" is never applied
        locally. While the shared store is down, a give-back with a token is kept for when it answers
        (in `pending`); one without is skipped (counted in `dropped_releases`)."""
        if store == "local":
            return await self.local.adjust(key, amount)
        if self._shared_due():
            try:
                await self._send_pending()
                if token is None:
                    result = await self.shared.adjust(key, amount)
                else:
                    result = await self.shared.give(key, amount, token)
            except UNAVAILABLE_ERRORS as exc:
                self._mark_down(exc)
            else:
                if self._down_since is not None:
                    await self._mark_up()
                return result
        if token is not None:
            self._owe(key, amount, token)
        else:
            self.dropped_releases += 1
        return None

    async def increment_many_pinned(self, takes: Sequence[Take]) -> list[tuple[float, Store]]:
        """Every take on the shared store in one round trip, or all locally (or refused)."""
        shared = self.shared

        async def take_all(store: CacheBackend) -> list[float]:
            if store is shared:
                return await shared.take_many(takes)
            return [await store.increment(key, amount, ttl) for key, amount, ttl, _ in takes]

        def unsure() -> None:  # counted locally instead: no take may also count on the shared store
            for key, amount, _, token in takes:
                if token is not None:
                    self._owe(key, -amount, token)

        counts, store = await self._served(take_all, unsure=unsure)
        return [(count, store) for count in counts]

    async def adjust_many_pinned(self, give_backs: Sequence[GiveBack]) -> None:
        """`adjust_pinned` of each, the shared store's in one round trip."""
        for key, amount, store, _ in give_backs:
            if store == "local":
                await self.local.adjust(key, amount)
        remote = [(key, amount, token) for key, amount, store, token in give_backs if store == "shared"]
        if not remote:
            return
        if self._shared_due():
            try:
                await self._send_pending()
                await self.shared.adjust_many(remote)
            except UNAVAILABLE_ERRORS as exc:
                self._mark_down(exc)
            else:
                if self._down_since is not None:
                    await self._mark_up()
                return
        for key, amount, token in remote:
            if token is not None:
                self._owe(key, amount, token)
            else:
                self.dropped_releases += 1

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

"""`DualCache`: LiteLLM's cache interface over an in-process TTL store (and, later, a shared one).

Every method exists in a sync and an async form, with LiteLLM's names and keyword arguments.
The async forms are the ones hooks should use; a shared backend (Redis) plugs in behind
`CacheBackend` without changing what handlers call.

Two extensions serve counters that are taken and given back (the rate limiter's): `async_adjust_counter`
changes a counter only if it still exists, so a release never creates a key (a negative count) after
the counter expired, and `async_increment_counter` reports which store ("shared" or "local") counted
an increment, so the release can be pinned to that same store across a shared-store outage. Both take
an optional `token` naming the request: on a shared store a take and its give-back with the same token
count once, whatever order a slow store applies them in, so either can be retried.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

Store = Literal["shared", "local"]
# A counter change in a batch: (key, amount, ttl, token) to take; (key, amount, store, token) to give back.
Take = tuple[str, float, float | None, str | None]
GiveBack = tuple[str, float, Store, str | None]


class CacheBackend(Protocol):
    """What a store must offer; counters change atomically inside the store."""

    async def get(self, key: str) -> Any: ...
    async def set(self, key: str, value: Any, ttl: float | None) -> None: ...
    async def increment(self, key: str, amount: float, ttl: float | None) -> float: ...
    # Changes an existing, unexpired counter by `amount`, never below 0 (a count given back cannot go
    # negative); None, and no key created, if there is none.
    async def adjust(self, key: str, amount: float) -> float | None: ...
    async def delete(self, key: str) -> None: ...
    async def batch_get(self, keys: list[str]) -> list[Any]: ...


class PinningBackend:
    """A shared backend with a local fallback that tells which store served an increment, and
    adjusts a counter on the store named."""

    async def increment_pinned(
        self, key: str, amount: float, ttl: float | None, token: str | None = None
    ) -> tuple[float, Store]:
        raise NotImplementedError

    async def adjust_pinned(
        self, key: str, amount: float, store: Store, token: str | None = None
    ) -> float | None:
        raise NotImplementedError

    async def increment_many_pinned(self, takes: Sequence[Take]) -> list[tuple[float, Store]]:
        """Every take of `takes`, all or none: if one fails, those taken before it are given back (a
        backend may send them all in one round trip)."""
        counted: list[tuple[float, Store]] = []
        try:
            for take in takes:
                counted.append(await self.increment_pinned(*take))
        except BaseException:
            for (key, amount, _, token), (_, store) in zip(takes, counted, strict=False):
                await self.adjust_pinned(key, -amount, store, token)
            raise
        return counted

    async def adjust_many_pinned(self, give_backs: Sequence[GiveBack]) -> None:
        """Every give-back, in order, each on the store named."""
        for give_back in give_backs:
            await self.adjust_pinned(*give_back)


class InMemoryCache:
    """A bounded dict of `key -> (value, expiry)`; expired entries are dropped when read or evicted."""

    def __init__(self, max_size: int = 100_000, default_ttl: float | None = None) -> None:
        self.max_size = max_size
        self.default_ttl = default_ttl
        self._store: dict[str, tuple[Any, float | None]] = {}

    def _expiry(self, ttl: float | None) -> float | None:
        ttl = self.default_ttl if ttl is None else ttl
        return None if ttl is None else time.monotonic() + ttl

    def get_sync(self, key: str) -> Any:
        entry = self._store.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._store[key]
            return None
        return value

    def set_sync(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._store.pop(key, None)
        if len(self._store) >= self.max_size:
            self._evict()
        self._store[key] = (value, self._expiry(ttl))

    def increment_sync(self, key: str, amount: float, ttl: float | None = None) -> float:
        value = self.adjust_sync(key, amount, floor=None)
        if value is None:
            self.set_sync(key, amount, ttl)
            return amount
        return value

    def adjust_sync(self, key: str, amount: float, floor: float | None = 0) -> float | None:
        """Add `amount` to an existing, unexpired counter, not below `floor`; None (nothing created) if
        there is none."""
        entry = self._store.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= time.monotonic():
            del self._store[key]
            return None
        value: float = (entry[0] or 0) + amount
        if floor is not None and value < floor:
            value = floor
        # Changing a counter keeps the window's original expiry, as Redis' INCRBY does.
        self._store[key] = (value, entry[1])
        return value

    def delete_sync(self, key: str) -> None:
        self._store.pop(key, None)

    def _evict(self) -> None:
        now = time.monotonic()
        expired = [k for k, (_, exp) in self._store.items() if exp is not None and exp <= now]
        for key in expired:
            del self._store[key]
        while len(self._store) >= self.max_size:
            del self._store[next(iter(self._store))]

    def __len__(self) -> int:
        return len(self._store)

    async def get(self, key: str) -> Any:
        return self.get_sync(key)

    async def set(self, key: str, value: Any, ttl: float | None) -> None:
        self.set_sync(key, value, ttl)

    async def increment(self, key: str, amount: float, ttl: float | None) -> float:
        return self.increment_sync(key, amount, ttl)

    async def adjust(self, key: str, amount: float) -> float | None:
        return self.adjust_sync(key, amount)

    async def delete(self, key: str) -> None:
        self.delete_sync(key)

    async def batch_get(self, keys: list[str]) -> list[Any]:
        return [self.get_sync(key) for key in keys]

    def flush(self) -> None:
        self._store.clear()


def _ttl(kwargs: dict[str, Any]) -> float | None:
    ttl = kwargs.get("ttl")
    return None if ttl is None else float(ttl)


class DualCache:
    """LiteLLM's `DualCache`: an in-process layer, and an optional shared backend behind it."""

    def __init__(
        self,
        in_memory_cache: InMemoryCache | None = None,
        shared_cache: CacheBackend | None = None,
        default_in_memory_ttl: float | None = None,
    ) -> None:
        if in_memory_cache is None:
            in_memory_cache = InMemoryCache(default_ttl=default_in_memory_ttl)
        self.in_memory_cache = in_memory_cache
        self.shared_cache = shared_cache

    # --- sync (in-process only; a shared store is reached from the async forms) ---
    def get_cache(self, key: str, local_only: bool = False, **kwargs: Any) -> Any:
        return self.in_memory_cache.get_sync(key)

    def set_cache(self, key: str, value: Any, local_only: bool = False, **kwargs: Any) -> None:
        self.in_memory_cache.set_sync(key, value, _ttl(kwargs))

    def increment_cache(self, key: str, value: float, local_only: bool = False, **kwargs: Any) -> float:
        return self.in_memory_cache.increment_sync(key, value, _ttl(kwargs))

    def delete_cache(self, key: str) -> None:
        self.in_memory_cache.delete_sync(key)

    def batch_get_cache(self, keys: list[str], local_only: bool = False, **kwargs: Any) -> list[Any]:
        return [self.in_memory_cache.get_sync(key) for key in keys]

    def flush_cache(self) -> None:
        self.in_memory_cache.flush()

    # --- async ---
    def _store(self, local_only: bool) -> CacheBackend:
        if self.shared_cache is not None and not local_only:
            return self.shared_cache
        return self.in_memory_cache

    async def async_get_cache(self, key: str, local_only: bool = False, **kwargs: Any) -> Any:
        return await self._store(local_only).get(key)

    async def async_set_cache(self, key: str, value: Any, local_only: bool = False, **kwargs: Any) -> None:
        await self._store(local_only).set(key, value, _ttl(kwargs))

    async def async_increment_cache(
        self, key: str, value: float, local_only: bool = False, **kwargs: Any
    ) -> float:
        return await self._store(local_only).increment(key, value, _ttl(kwargs))

    async def async_increment_counter(
        self, key: str, amount: float, ttl: float | None = None, token: str | None = None
    ) -> tuple[float, Store]:
        """`async_increment_cache`, and which store counted it: pass that to `async_adjust_counter`.

        With `token`, give it back with the same token: a shared store then counts the pair once.
        """
        shared = self.shared_cache
        if shared is None:
            return await self.in_memory_cache.increment(key, amount, ttl), "local"
        if isinstance(shared, PinningBackend):
            return await shared.increment_pinned(key, amount, ttl, token)
        return await shared.increment(key, amount, ttl), "shared"

    async def async_adjust_counter(
        self, key: str, amount: float, store: Store | None = None, token: str | None = None
    ) -> float | None:
        """Change an existing counter by `amount`; None, and no key created, if it is absent or expired.

        With `store` (from `async_increment_counter`) the change goes to the store that counted the
        increment, never to the other one; with the increment's `token`, it gives that increment back.
        """
        shared = self.shared_cache
        if shared is None or store == "local":
            return await self.in_memory_cache.adjust(key, amount)
        if store is not None and isinstance(shared, PinningBackend):
            return await shared.adjust_pinned(key, amount, store, token)
        return await shared.adjust(key, amount)

    async def async_increment_counters(self, takes: Sequence[Take]) -> list[tuple[float, Store]]:
        """`async_increment_counter` of each (key, amount, ttl, token), in order, all on one store: on a
        shared store in one round trip."""
        shared = self.shared_cache
        if shared is None:
            return [(await self.in_memory_cache.increment(key, n, ttl), "local") for key, n, ttl, _ in takes]
        if isinstance(shared, PinningBackend):
            return await shared.increment_many_pinned(takes)
        return [(await shared.increment(key, n, ttl), "shared") for key, n, ttl, _ in takes]

    async def async_adjust_counters(self, give_backs: Sequence[GiveBack]) -> None:
        """`async_adjust_counter` of each (key, amount, store, token), in order: the changes for a shared
        store in one round trip."""
        shared = self.shared_cache
        if isinstance(shared, PinningBackend):
            await shared.adjust_many_pinned(give_backs)
            return
        for key, amount, store, token in give_backs:
            await self.async_adjust_counter(key, amount, store, token)

    async def async_delete_cache(self, key: str, local_only: bool = False, **kwargs: Any) -> None:
        await self._store(local_only).delete(key)

    async def async_batch_get_cache(
        self, keys: list[str], local_only: bool = False, **kwargs: Any
    ) -> list[Any]:
        return await self._store(local_only).batch_get(list(keys))

    async def async_batch_set_cache(
        self, cache_list: Iterable[tuple[str, Any]], local_only: bool = False, **kwargs: Any
    ) -> None:
        store = self._store(local_only)
        for key, value in cache_list:
            await store.set(key, value, _ttl(kwargs))

    async_set_cache_pipeline = async_batch_set_cache

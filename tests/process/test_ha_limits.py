"""The rate limiter on a highly available shared store: real Valkey processes under Sentinel and as a
cluster. A primary is killed with slots held; after the failover no slot is leaked and the limit is
exact again."""

import asyncio
from collections.abc import Iterator
from functools import partial

import pytest
from redis_server import ValkeyCluster, ValkeySentinel, ValkeyServer

from extproc import HTTPException, UserAPIKeyAuth
from extproc.state.redis_cache import ResilientBackend, shared_dual_cache
from handlers.rate_limiter import Handler

SLOTS = "llm-extproc:rl:api_key:hashed-key:parallel"
LIMIT = 3


@pytest.fixture(params=["sentinel", "cluster"])
def store(request) -> Iterator[ValkeySentinel | ValkeyCluster]:
    with ValkeySentinel() if request.param == "sentinel" else ValkeyCluster() as ha:
        yield ha


def primary_and_replica(store: ValkeySentinel | ValkeyCluster) -> tuple[ValkeyServer, ValkeyServer]:
    if isinstance(store, ValkeySentinel):
        return store.primary(), store.replica()
    primary = store.primary_for(SLOTS)
    return primary, store.replicas[store.primaries.index(primary)]


def slots_on(node: ValkeyServer, replica_in_cluster: bool = False) -> float:
    with node.client() as client:
        if replica_in_cluster:  # a cluster replica answers reads only when told to
            client.execute_command("READONLY")
        return float(client.get(SLOTS) or 0)


async def until(probe, what: str, deadline_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not await probe():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_limits_stay_exact_across_a_failover(store) -> None:
    handler = Handler(limits={"api_key": {"max_parallel_requests": LIMIT}})
    user = UserAPIKeyAuth(api_key="hashed-key")
    cache = shared_dual_cache(store.url, timeout_s=0.25)
    shared = cache.shared_cache
    assert isinstance(shared, ResilientBackend)
    shared.retry_after_s = 0.2

    def request() -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": "hello"}]}

    async def take(data: dict) -> None:
        await handler.async_pre_call_hook(user, cache, data, "completion")
        assert [store for *_, store in data["metadata"]["rate_limiter"]["held"]] == ["shared"]

    async def end(data: dict) -> None:
        kwargs = {"litellm_params": {"metadata": data["metadata"]}}
        await handler.async_log_success_event(kwargs, None, None, None)

    try:
        held = [request(), request()]
        for data in held:
            await take(data)
        primary, replica = primary_and_replica(store)
        in_cluster = isinstance(store, ValkeyCluster)

        def replicated() -> bool:
            return slots_on(replica, in_cluster) == 2

        await until(lambda: asyncio.to_thread(replicated), "the replica to have the slots")
        kill = partial(store.kill_primary, SLOTS) if in_cluster else store.kill_primary
        promoted = await asyncio.to_thread(kill)
        assert promoted.port == replica.port and not primary.running
        for data in held:  # the requests end during the failover: their give-backs are owed, then sent
            await end(data)

        async def answering() -> bool:
            await cache.async_get_cache("probe")
            return shared.state == "up" and not shared.pending

        await until(answering, "the shared store to answer again")
        assert await asyncio.to_thread(slots_on, promoted) == 0  # no slot leaked
        after = [request() for _ in range(LIMIT)]
        for data in after:
            await take(data)
        with pytest.raises(HTTPException) as refused:
            await handler.async_pre_call_hook(user, cache, request(), "completion")
        assert refused.value.status_code == 429  # the limit is exact on the new primary
        for data in after:
            await end(data)
        assert await asyncio.to_thread(slots_on, promoted) == 0
        assert shared.dropped_releases == 0
    finally:
        await shared.close()

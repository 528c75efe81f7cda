"""The rate limiter through a real Envoy on a highly available Valkey (Sentinel, cluster): a primary is
killed under traffic; requests keep being answered, and once the store has failed over no slot is left
taken and the parallel limit is exact again."""

import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Iterator
from functools import partial

import httpx
import pytest
from helpers import poll as poll_until
from redis_server import ValkeyCluster, ValkeySentinel, ValkeyServer

pytestmark = pytest.mark.e2e
poll = partial(poll_until, deadline_s=20.0)
KEY = "sk-ha-cache"
SLOTS = f"llm-extproc:rl:api_key:{hashlib.sha256(KEY.encode()).hexdigest()}:parallel"
CONFIG = """
litellm_settings: {{callbacks: [handlers.rate_limiter]}}
extproc:
  cache: {{redis_url: "{url}", timeout_ms: 250}}
  handlers:
    handlers.rate_limiter: {{options: {{limits: {{api_key: {{max_parallel_requests: 3}}}}}}}}
"""


@pytest.fixture(params=["sentinel", "cluster"])
def store(request) -> Iterator[ValkeySentinel | ValkeyCluster]:
    with ValkeySentinel() if request.param == "sentinel" else ValkeyCluster() as ha:
        yield ha


def slots_on(node: ValkeyServer) -> float:
    with node.client() as client:
        return float(client.get(SLOTS) or 0)


def test_a_primary_killed_under_traffic_leaves_no_slot_taken(e2e_stack, store):
    stack = e2e_stack(CONFIG.format(url=store.url))

    def one(delay_ms: int = 100) -> int:
        with httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": f"Bearer {KEY}", "x-mock-delay-ms": str(delay_ms)}
            return client.post("/v1/chat/completions", json=body, headers=headers).status_code

    def burst(count: int) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return sorted(pool.map(lambda _: one(400), range(count)))

    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(one())

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(traffic) for _ in range(2)]
        try:
            poll(lambda: len(statuses) >= 4, "traffic through the shared store")
            if isinstance(store, ValkeyCluster):
                store.kill_primary(SLOTS)
            else:
                store.kill_primary()
            count = len(statuses)
            poll(lambda: len(statuses) >= count + 4, "traffic after the failover")
        finally:
            stop.set()
        for worker in workers:
            worker.result()
    assert set(statuses) == {200}, statuses  # never more than 2 in flight: the limit is 3
    primary = store.primary_for(SLOTS) if isinstance(store, ValkeyCluster) else store.primary()

    def exact() -> bool:
        """Four at once: three accepted, one refused, and no slot left taken once they ended."""
        if burst(4) != [200, 200, 200, 429]:
            return False
        deadline = time.monotonic() + 2
        while slots_on(primary) != 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    poll(exact, "the limit to be exact on the new primary, with no slot left taken")
    assert "Traceback" not in stack.sidecar_log()

"""Attacks on the rate limiter through a real Envoy and a real Valkey: streams that hide their usage or
end before it, a `max_tokens` beyond 64 bits, a shared cache that stalls, and later hooks that drop the
limiter's record.

Each test has a stack of its own (its config is the attack's setting) and keys of its own; limits use a
day-long window, so no window ends while a test counts.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial

import httpx
import pytest
from helpers import poll as poll_until
from redis_server import ValkeyServer

pytestmark = pytest.mark.e2e
poll = partial(poll_until, deadline_s=15.0)
PREFIX = "llm-extproc:"
# About 1.5 estimated tokens a word (four characters a token), one token a word for the mock upstream.
PROMPT = " ".join(["story"] * 20)

LATER_HOOK = """
from extproc import CustomLogger


class Later(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        content = data["messages"][0]["content"]
        if content == "new-dict":
            return {k: v for k, v in data.items() if k != "metadata"}
        if content == "replace-metadata":
            data["metadata"] = {"tagged": True}
        return None


later = Later()
"""


def limiter_config(
    url: str, limits: str, callbacks: str = "handlers.rate_limiter", timeout_ms: int = 2000
) -> str:
    return f"""
litellm_settings: {{callbacks: [{callbacks}]}}
extproc:
  cache: {{redis_url: "{url}", timeout_ms: {timeout_ms}}}
  handlers:
    handlers.rate_limiter: {{options: {{window_s: 86400, limits: {{api_key: {limits}}}}}}}
"""


@pytest.fixture(scope="module")
def valkey() -> Iterator[ValkeyServer]:
    with ValkeyServer() as server:
        yield server


def new_key() -> str:
    return f"sk-limits-{uuid.uuid4().hex[:12]}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def chat(content: str = PROMPT, **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def post(stack, key: str, body: dict[str, object], **headers: str) -> httpx.Response:
    return stack.http.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}", **headers}
    )


def counter(valkey: ValkeyServer, key: str, name: str) -> float:
    with valkey.client() as client:
        keys = list(client.scan_iter(match=f"{PREFIX}rl:api_key:{key_hash(key)}:{name}*"))
        values = [client.get(k) for k in keys if b":take:" not in k]
    return sum(float(v or 0) for v in values)


def settled(valkey: ValkeyServer, key: str) -> None:
    """Wait until the key holds no parallel slot: its last request ended and its tokens are settled."""
    poll(lambda: counter(valkey, key, "parallel") == 0, f"the slots of {key} to be released")


def passes_until_429(send, limit: int = 12) -> int:
    """How many requests `send()` gets answered 200 before the first 429."""
    for count in range(limit):
        status = send()
        assert status in (200, 429), status
        if status == 429:
            return count
    return limit


def test_a_huge_max_tokens_cannot_reset_shared_token_counters(e2e_stack, valkey):
    """S10. A max_tokens beyond 64 bits is refused (429 or 400) and the tokens already counted stay counted."""
    stack = e2e_stack(limiter_config(valkey.url, "{tpm: 1000, max_parallel_requests: 100}"))
    long_prompt = " ".join(["word"] * 100)  # ~200 tokens a request for the mock upstream

    def send(key: str, **extra: object) -> int:
        status = post(stack, key, chat(long_prompt, **extra)).status_code
        settled(valkey, key)
        return status

    attacked, control = new_key(), new_key()
    for key in (attacked, control):
        assert [send(key) for _ in range(3)] == [200, 200, 200]
    counted = counter(valkey, attacked, "tpm")
    assert counted >= 600
    assert send(attacked, max_tokens=10000000000000000000000000) in (429, 400)
    assert counter(valkey, attacked, "tpm") == counted  # what was counted stays counted
    # the key gets no more requests through in the window than it would have without the attack
    assert passes_until_429(lambda: send(attacked)) == passes_until_429(lambda: send(control))


@pytest.mark.parametrize("variant", ["new-dict", "replace-metadata"])
def test_later_hooks_cannot_make_the_limiter_leak_slots(e2e_stack, valkey, variant):
    """M3. A later pre-call hook that drops or replaces `metadata`: every request releases its slot."""
    config = limiter_config(
        valkey.url, "{max_parallel_requests: 3}", callbacks="handlers.rate_limiter, later.later"
    )
    stack = e2e_stack(config, {"later.py": LATER_HOOK})
    key = new_key()
    statuses = []
    for _ in range(5):
        statuses.append(post(stack, key, chat(variant)).status_code)
        settled(valkey, key)
    assert statuses == [200] * 5


def streamed(stack, key: str, include_usage: bool, leave_before_usage: bool) -> int:
    """One streamed request; with `leave_before_usage`, the client reads up to the last content event
    and leaves before the usage event comes."""
    body = chat(stream=True)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    headers = {"authorization": f"Bearer {key}"}
    if leave_before_usage:
        headers["x-mock-chunk-delay-ms"] = "300"
    with (
        httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response.status_code
        for line in response.iter_lines():
            if leave_before_usage and '"finish_reason":"stop"' in line.replace(" ", ""):
                break  # the connection closes with the response, before the usage event
    return 200


@pytest.mark.parametrize("variant", ["without-include-usage", "leaves-before-usage"])
def test_streaming_does_not_evade_token_limits(e2e_stack, valkey, variant):
    """S7. A streamed answer counts at least as much as the same answer not streamed."""
    stack = e2e_stack(limiter_config(valkey.url, "{tpm: 160, max_parallel_requests: 100}"))

    def counted(send) -> int:
        key = new_key()

        def one() -> int:
            status = send(key)
            settled(valkey, key)
            return status

        return passes_until_429(one)

    plain = counted(lambda key: post(stack, key, chat()).status_code)
    leaves = variant == "leaves-before-usage"
    stream = counted(partial(streamed, stack, include_usage=leaves, leave_before_usage=leaves))
    assert plain >= 2
    # streaming without include_usage, or leaving before the usage event, buys no request more
    assert stream <= plain, (stream, plain)


def test_a_slow_shared_cache_does_not_leak_parallel_slots(e2e_stack, valkey):
    """M1. A cache pausing 400 ms five times (timeout 250 ms): once traffic stops, no slot stays taken."""
    stack = e2e_stack(limiter_config(valkey.url, "{max_parallel_requests: 3}", timeout_ms=250))
    key = new_key()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=stack.url, timeout=10, trust_env=False) as client:
            while not stop.is_set():
                headers = {"authorization": f"Bearer {key}", "x-mock-delay-ms": "100"}
                client.post("/v1/chat/completions", json=chat("hi"), headers=headers)

    def one(_: int) -> int:
        return post(stack, key, chat("hi"), **{"x-mock-delay-ms": "300"}).status_code

    def burst() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            return list(pool.map(one, range(3)))

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        workers = [pool.submit(traffic) for _ in range(3)]
        try:
            with valkey.client() as client:
                for _ in range(5):
                    client.execute_command("CLIENT", "PAUSE", 400)
                    time.sleep(0.7)  # the pause, then traffic on a store that answers
        finally:
            stop.set()
        for worker in workers:
            worker.result()

    def recovered() -> bool:
        """Three concurrent requests accepted, and no slot left taken in Valkey once they ended."""
        if burst() != [200, 200, 200]:
            return False
        deadline = time.monotonic() + 2
        while counter(valkey, key, "parallel") != 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    poll(recovered, "no slot left taken and three concurrent requests accepted")

"""Valkey killed and restarted under a real Envoy: requests keep flowing, the shared counts come back."""

import concurrent.futures
import hashlib
import time

import httpx
import pytest
from redis_server import ValkeyServer

pytestmark = pytest.mark.e2e
KEY = "sk-redis-faults"
CONFIG = """
litellm_settings: {{callbacks: [handlers.rate_limiter]}}
extproc:
  cache: {{redis_url: "{url}", timeout_ms: 2000}}  # a killed server refuses at once; no spurious timeouts
  handlers:
    handlers.rate_limiter: {{options: {{limits: {{api_key: {{max_parallel_requests: 4, rpm: 100000}}}}}}}}
"""


def burst(stack, count=4):
    def one(_):
        with httpx.Client(base_url=stack.url, trust_env=False, timeout=10) as client:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            return client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return [r.status_code for r in pool.map(one, range(count))]


def test_valkey_down_and_back_under_envoy(e2e_stack):
    with ValkeyServer() as valkey:
        stack = e2e_stack(CONFIG.format(url=valkey.url))
        assert burst(stack) == [200] * 4
        valkey.stop()
        assert burst(stack) == [200] * 4  # on the sidecar's local counts meanwhile (on_unavailable: local)
        assert burst(stack) == [200] * 4
        valkey.start()
        time.sleep(1.1)  # the shared store is tried again at most once a second
        assert burst(stack, 1) == [200]  # this one finds the store back (see the README's limits)
        assert burst(stack) == [200] * 4
        client = valkey.client()
        try:
            window_keys = list(client.scan_iter(match="llm-extproc:rl:api_key:*:rpm:*"))
            assert window_keys, "the counts are back in Valkey"
            parallel = f"llm-extproc:rl:api_key:{hashlib.sha256(KEY.encode()).hexdigest()}:parallel"
            deadline = time.monotonic() + 5
            while float(client.get(parallel) or 0) != 0:  # released by the endings, just after the answers
                assert time.monotonic() < deadline, (client.get(parallel), stack.sidecar_log()[-3000:])
                time.sleep(0.02)
        finally:
            client.close()
        log = stack.sidecar_log()
        assert "unavailable" in log and "recovered" in log
        assert "Traceback" not in log

"""API keys never appear in the sidecar's logs, its metrics, or Envoy's access log and metadata: only a hash."""

import hashlib
import re
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

KEY = "sk-live-SECRET-e2e-0123456789abcdef"
CONFIG = """
litellm_settings: {callbacks: [h.h]}
extproc:
  metrics_listen: "127.0.0.1:0"
  log_level: debug
"""
HANDLER = """
import logging
from extproc import CustomLogger

log = logging.getLogger("user.handler")

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        log.info("pre-call sees %s and %s", data, user_api_key_dict)
        if data["messages"][0]["content"] == "crash":
            raise RuntimeError(f"crashed while looking at {data['metadata']['headers']}")

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        log.warning("failure: %r", original_exception)

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        log.info("success for %s", user_api_key_dict.api_key)

h = H()
"""


def test_the_key_appears_nowhere_but_as_its_hash(e2e_stack):
    stack = e2e_stack(CONFIG, {"h.py": HANDLER})
    for content, auth in (
        ("hi", f"Bearer {KEY}"),
        ("crash", f"Bearer {KEY}"),
        ("hi", KEY),
        ("hi", f"bearer {KEY}"),
    ):
        stack.http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": content}]},
            headers={"authorization": auth},
        )
    stack.http.post("/v1/embeddings", json={"input": "x"}, headers={"x-api-key": KEY})
    stack.http.post(
        "/v1/chat/completions",
        content=b"{broken",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
    )
    deadline = time.monotonic() + 10
    while (found := re.search(r"metrics on (http://\S+)", stack.sidecar_log())) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with httpx.Client(trust_env=False) as client:
        metrics = client.get(found.group(1)).text
    time.sleep(0.3)  # Envoy flushes its access log every 100 ms
    logs, access = stack.sidecar_log(), stack.stack.access_log_path.read_text()
    assert "pre-call sees" in logs and "crashed while looking at" in logs  # the hooks did log
    for text in (logs, access, metrics):
        assert KEY not in text
        assert "SECRET-e2e" not in text
    key_hash = hashlib.sha256(KEY.encode()).hexdigest()
    assert key_hash in access  # Envoy's metadata carries the hash, and only that

"""Several worker processes (`extproc.workers`) behind a real Envoy: balanced, restarted, stopped."""

import os
import re
import signal
from functools import partial
from pathlib import Path

import httpx
import pytest
from helpers import children_of
from helpers import poll as poll_until

from extproc.devtools.dev import DevStack

pytestmark = pytest.mark.e2e
wait_for = partial(poll_until, deadline_s=20.0)

CONFIG = """
litellm_settings: {callbacks: [h.h]}
extproc:
  workers: 2
  metrics_listen: "127.0.0.1:0"
"""
HANDLER = """
import os
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = f"worker-{os.getpid()}"

h = H()
"""
PRE_CALLS = re.compile(
    r'^llm_extproc_hook_duration_seconds_count\{handler="h.h",hook="async_pre_call_hook"\} (\S+)$', re.M
)


def workers_of(supervisor: int, gone: int = 0) -> list[int] | None:
    """The supervisor's two worker pids once both run (and `gone` is not among them)."""
    found = children_of(supervisor)
    return found if len(found) == 2 and gone not in found else None


def chat(url: str) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, trust_env=False, timeout=10)


def pre_calls(metrics_url: str) -> float:
    found = PRE_CALLS.search(httpx.get(metrics_url, trust_env=False).text)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def stack(tmp_path):
    (tmp_path / "h.py").write_text(HANDLER)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with DevStack(config) as running:
        yield running


def test_two_workers_share_the_traffic_and_each_runs_the_hooks(stack):
    supervisor = stack.children["sidecar"].process.pid
    workers = wait_for(lambda: workers_of(supervisor), "2 workers")
    models = set()
    for _ in range(20):
        response = chat(stack.url)
        assert response.status_code == 200
        models.add(response.json()["model"])
    # The mock echoes the model it was sent: every request went through one worker's hook.
    assert models == {f"worker-{pid}" for pid in workers}
    log = stack.children["sidecar"].output()
    # One scrape target: both workers name the supervisor's endpoint, which sums their counts.
    (aggregated,) = re.findall(r"metrics of all workers on (http://\S+)", log)
    assert re.findall(r"metrics on (http://\S+)", log) == [aggregated, aggregated]
    assert pre_calls(aggregated) == 20


def test_a_dead_worker_is_restarted_and_sigterm_stops_them_all(stack):
    supervisor = stack.children["sidecar"].process.pid
    first, second = wait_for(lambda: workers_of(supervisor), "2 workers")
    os.kill(second, signal.SIGKILL)
    replaced = wait_for(lambda: workers_of(supervisor, gone=second), "a new worker")
    assert first in replaced
    # Back in service: the new worker's socket answers health, and both workers take traffic again.
    wait_for(stack._sidecar_serving, "both workers SERVING")
    models = {chat(stack.url).json()["model"] for _ in range(10)}
    assert models == {f"worker-{pid}" for pid in replaced}
    assert "worker 1 exited with -9; restarting it" in stack.children["sidecar"].output()

    stack.children["sidecar"].signal(signal.SIGTERM)
    assert stack.children["sidecar"].process.wait(15) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in replaced)


def test_workers_stop_when_the_supervisor_is_killed(stack):
    supervisor = stack.children["sidecar"].process.pid
    workers = wait_for(lambda: workers_of(supervisor), "2 workers")
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: all(not Path(f"/proc/{pid}").exists() for pid in workers), "the workers to stop")


def test_a_broken_handler_stops_serve_before_any_worker_starts(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text("litellm_settings: {callbacks: [nope.x]}\nextproc: {workers: 2}\n")
    command = [sys.executable, "-m", "extproc", "serve", "--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "module 'nope' not found" in done.stderr
    assert "started 2 workers" not in done.stderr

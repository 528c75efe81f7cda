"""Faults through a real Envoy: the sidecar killed, wedged, or stopped under load; hooks that hang.

After each fault the rate limiter's parallel slots must all be free again: a burst as large as the
limit must pass.
"""

import concurrent.futures
import signal
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

HANDLERS = {
    "h.py": """
import asyncio
import pathlib
from extproc import CustomLogger

STARTED = pathlib.Path(__file__).with_name("started.log")

class Rewrite(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        content = data["messages"][0]["content"]
        if content.startswith("slow"):
            with STARTED.open("a") as out:
                out.write(content + "\\n")
            await asyncio.sleep(0.8)
        data["model"] = "rewritten"
        return data

class Hang(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "hang":
            await asyncio.sleep(30)

rewrite, hang = Rewrite(), Hang()
"""
}

LIMIT = 4


def config(failure_mode_allow=False):
    return f"""
litellm_settings:
  callbacks: [handlers.rate_limiter, h.hang, h.rewrite]
extproc:
  metrics_listen: "127.0.0.1:0"
  failure_mode_allow: {str(failure_mode_allow).lower()}
  hook_timeout_ms: 1500
  grace_seconds: 5
  handlers:
    handlers.rate_limiter: {{options: {{limits: {{api_key: {{max_parallel_requests: {LIMIT}}}}}}}}}
    h.hang: {{timeout_ms: 200, fail_open: true}}
"""


def chat(content="hi"):
    return {"model": "original", "messages": [{"role": "user", "content": content}]}


KEY = {"authorization": "Bearer sk-faults"}


def post(stack, content="hi", timeout=10.0):
    with httpx.Client(base_url=stack.url, trust_env=False, timeout=timeout) as client:
        return client.post("/v1/chat/completions", json=chat(content), headers=KEY)


def scrape(stack):
    import re

    deadline = time.monotonic() + 10
    while (found := re.search(r"metrics on (http://\S+)", stack.sidecar_log())) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with httpx.Client(trust_env=False) as client:
        text = client.get(found.group(1)).text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("llm_extproc_in_flight_requests ", "llm_extproc_asyncio_tasks "))
    }


IDLE_TASKS: dict[int, float] = {}


def note_idle(stack):
    """The task count of this sidecar process while idle (right after it started)."""
    pid = stack.stack.children["sidecar"].process.pid
    IDLE_TASKS[pid] = scrape(stack)["llm_extproc_asyncio_tasks"]


def assert_settled(stack):
    """Nothing left running: no request in flight, no task beyond the idle ones, no error logged."""
    idle = IDLE_TASKS[stack.stack.children["sidecar"].process.pid]
    deadline = time.monotonic() + 5
    while True:
        values = scrape(stack)
        if values["llm_extproc_in_flight_requests"] == 0 and values["llm_extproc_asyncio_tasks"] <= idle:
            break
        assert time.monotonic() < deadline, (values, idle)
        time.sleep(0.05)
    errors = [
        line for line in stack.sidecar_log().splitlines() if '"level": "error"' in line or "Traceback" in line
    ]
    assert errors == []


def restart(stack):
    stack.stack.restart_sidecar()
    note_idle(stack)


def assert_slots_free(stack):
    """As many concurrent requests as the parallel limit all pass: no slot leaked."""
    with concurrent.futures.ThreadPoolExecutor(LIMIT) as pool:
        statuses = list(pool.map(lambda i: post(stack, "slow-burst").status_code, range(LIMIT)))
    assert statuses == [200] * LIMIT


def assert_envelope(response, status, fragment):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == str(status) and fragment in error["message"]


@pytest.fixture(scope="module")
def closed(e2e_stack):
    stack = e2e_stack(config(), HANDLERS)
    note_idle(stack)
    return stack


@pytest.fixture(scope="module")
def open_(e2e_stack):
    stack = e2e_stack(config(failure_mode_allow=True), HANDLERS)
    note_idle(stack)
    return stack


def test_sidecar_killed_fails_closed_with_an_envelope_and_recovers(closed):
    assert post(closed).status_code == 200
    sidecar = closed.stack.children["sidecar"]
    sidecar.signal(signal.SIGKILL)
    sidecar.process.wait(10)
    assert_envelope(post(closed), 503, "llm-extproc is unavailable")
    # Envoy's own reply on an Anthropic route is in Anthropic's error shape.
    messages = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    for path in ("/v1/messages", "/anthropic/v1/messages"):
        response = closed.http.post(path, json=messages)
        assert response.status_code == 503, response.text
        assert response.json() == {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "llm-extproc is unavailable: the request was not processed",
            },
        }
    assert not any(r["path"].endswith("/messages") for r in closed.mock_requests())
    restart(closed)
    closed.mock_clear()
    assert post(closed).status_code == 200
    assert closed.mock_last()["json"]["model"] == "rewritten"
    assert_slots_free(closed)
    assert_settled(closed)


def test_sidecar_killed_with_failure_mode_allow_lets_requests_through_unhooked(open_):
    sidecar = open_.stack.children["sidecar"]
    sidecar.signal(signal.SIGKILL)
    sidecar.process.wait(10)
    open_.mock_clear()
    assert post(open_).status_code == 200
    assert open_.mock_last()["json"]["model"] == "original"  # not hooked: failure_mode_allow
    restart(open_)
    open_.mock_clear()
    assert post(open_).status_code == 200
    assert open_.mock_last()["json"]["model"] == "rewritten"
    assert_slots_free(open_)
    assert_settled(open_)


def test_a_wedged_sidecar_times_out_as_a_504_envelope(closed):
    sidecar = closed.stack.children["sidecar"]
    sidecar.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert_envelope(post(closed), 504, "llm-extproc did not answer in time")
        assert time.monotonic() - started < 5  # Envoy's message timeout: hook timeout + 0.5 s
    finally:
        sidecar.signal(signal.SIGCONT)
    assert post(closed).status_code == 200
    assert_slots_free(closed)
    assert_settled(closed)


def test_sigterm_under_load_finishes_requests_in_flight_then_exits(closed, tmp_path):
    marker = closed.stack.config_path.with_name("started.log")
    marker.write_text("")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, closed, f"slow-{i}") for i in range(3)]
        deadline = time.monotonic() + 10
        while len(marker.read_text().splitlines()) < 3:  # all three are inside the hook
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sidecar = closed.stack.children["sidecar"]
        stopped_at = time.monotonic()
        sidecar.signal(signal.SIGTERM)
        assert [f.result().status_code for f in futures] == [200, 200, 200]
    assert sidecar.process.wait(10) == 0
    assert time.monotonic() - stopped_at < 5 + 1  # within grace_seconds
    assert_envelope(post(closed), 503, "llm-extproc is unavailable")  # no new request accepted
    restart(closed)
    assert_slots_free(closed)
    assert_settled(closed)


def test_a_hanging_fail_open_hook_is_skipped_after_its_timeout(closed):
    closed.mock_clear()
    started = time.monotonic()
    response = post(closed, "hang")
    assert response.status_code == 200
    assert time.monotonic() - started < 1.5  # h.hang's own timeout is 200 ms
    assert closed.mock_last()["json"]["model"] == "rewritten"  # the hooks after it still ran
    assert "h.hang.async_pre_call_hook failed open" in closed.sidecar_log()
    assert_slots_free(closed)
    assert_settled(closed)


def in_flight(stack, count):
    """`count` slow requests inside the pre-call hook; returns their futures and the pool."""
    marker = stack.stack.config_path.with_name("started.log")
    marker.write_text("")
    pool = concurrent.futures.ThreadPoolExecutor(count)
    futures = [pool.submit(post, stack, f"slow-{i}") for i in range(count)]
    deadline = time.monotonic() + 10
    while len(marker.read_text().splitlines()) < count:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return pool, futures


@pytest.mark.parametrize("allow", [False, True])
def test_sidecar_killed_under_load(closed, open_, allow):
    stack = open_ if allow else closed
    pool, futures = in_flight(stack, 3)
    stack.stack.children["sidecar"].signal(signal.SIGKILL)
    with pool:
        responses = [f.result() for f in futures]
    if allow:  # Envoy lets the requests it was holding go on, unhooked
        assert [r.status_code for r in responses] == [200, 200, 200]
    else:
        for response in responses:
            assert_envelope(response, 503, "llm-extproc is unavailable")
    restart(stack)
    assert post(stack).status_code == 200
    assert_slots_free(stack)
    assert_settled(stack)

"""Attacks on the request core through a real Envoy: hooks that raise anything, block, hang or answer
with what HTTP cannot carry, bodies built to stall the sidecar, and hot reloads that go wrong.

One handler file serves most tests: what each hook does is picked by the request's first message
(`attack:<name>`), so one stack covers many attacks.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import textwrap
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
from helpers import poll as poll_until

pytestmark = pytest.mark.e2e
poll = partial(poll_until, deadline_s=15.0)

ATTACKS = """
import asyncio
import time
from extproc import CustomLogger, HTTPException


def attack(data):
    messages = data.get("messages") or [{}]
    first = messages[0] if isinstance(messages[0], dict) else {}
    content = first.get("content")
    return content.removeprefix("attack:") if isinstance(content, str) else ""


class PreCall(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        name = attack(data)
        if name == "exit":
            raise SystemExit(3)
        if name == "interrupt":
            raise KeyboardInterrupt()
        if name == "cancel":
            raise asyncio.CancelledError()
        if name.startswith("status-"):
            raise HTTPException(int(name.removeprefix("status-")), "the hook's own status")
        if name == "block":
            time.sleep(2.5)
        return None


class Moderation(CustomLogger):
    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if attack(data) == "cancel-moderation":
            raise asyncio.CancelledError()


class Headers(CustomLogger):
    async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response, request_headers=None):
        name = attack(data)
        if name == "crlf":
            return {"x-bad": "a\\r\\nx-injected: 1", "x-good": "kept"}
        if name == "nul":
            return {"x-bad": "a\\x00b", "x-good": "kept"}
        if name == "space":
            return {"bad name": "v", "x-good": "kept"}
        if name == "pseudo":
            return {":status": "299", "x-good": "kept"}
        if name == "content-length":
            return {"content-length": "3", "transfer-encoding": "chunked", "x-good": "kept"}
        return None


class Iterator(CustomLogger):
    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        name = attack(request_data)
        count = 0
        async for chunk in response:
            count += 1
            if count == 2 and name == "cancel-stream":
                raise asyncio.CancelledError()
            if count == 2 and name == "huge-chunk":
                chunk.choices[0].delta.content = "x" * (40 * 1024 * 1024)
            yield chunk


pre_call, moderation, headers, iterator = PreCall(), Moderation(), Headers(), Iterator()
"""


def attacks_config(failure_mode_allow: bool) -> str:
    return f"""
litellm_settings:
  callbacks: [attacks.pre_call, attacks.moderation, attacks.headers, attacks.iterator]
extproc:
  failure_mode_allow: {str(failure_mode_allow).lower()}
  hook_timeout_ms: 2000
"""


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


@pytest.fixture(scope="module", params=[False, True], ids=["fail-closed", "fail-open"])
def attacked(request, e2e_stack):
    return e2e_stack(attacks_config(request.param), {"attacks.py": ATTACKS})


def sidecar_pid(stack) -> int:
    return stack.stack.children["sidecar"].process.pid


@pytest.mark.parametrize("name", ["exit", "interrupt"])
def test_a_hook_that_exits_or_interrupts_gets_a_500_and_the_sidecar_lives_on(attacked, assert_error, name):
    """S6. A pre-call hook raising SystemExit(3) or KeyboardInterrupt: 500 envelope, same sidecar serves on."""
    pid = sidecar_pid(attacked)
    attacked.mock_clear()
    response = attacked.http.post("/v1/chat/completions", json=chat(f"attack:{name}"))
    error = assert_error(response, 500, kind="internal_server_error")
    assert ("SystemExit" if name == "exit" else "KeyboardInterrupt") in error["message"]
    assert attacked.mock_requests() == []
    assert sidecar_pid(attacked) == pid and attacked.stack.dead_child() is None
    assert attacked.http.post("/v1/chat/completions", json=chat("hi")).status_code == 200


def test_a_hook_raising_cancelled_error_fails_closed(attacked, assert_error):
    """S5. A pre-call hook raising CancelledError: a 5xx envelope, and the request never goes upstream."""
    attacked.mock_clear()
    response = attacked.http.post("/v1/chat/completions", json=chat("attack:cancel"))
    assert_error(response, 500, kind="internal_server_error")
    assert attacked.mock_requests() == []


@pytest.mark.parametrize("status", [100, 101, 204, 304, 302])
def test_hook_statuses_that_are_not_errors_become_500(attacked, assert_error, status):
    """L1. A hook raising HTTPException(100/101/204/304/302): a 500 envelope, never sent as success."""
    attacked.mock_clear()
    response = attacked.http.post("/v1/chat/completions", json=chat(f"attack:status-{status}"))
    assert_error(response, 500, message="the hook's own status")
    assert attacked.mock_requests() == []


def keep_alive_exchange(url: str, first: bytes, second: bytes) -> tuple[bytes, bytes]:
    """Two requests on one HTTP/1.1 connection; each answer read by its own framing."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reader = sock.makefile("rb")

        def answer(request: bytes) -> bytes:
            sock.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += reader.read(1)
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next(
                (int(line.split(":")[1]) for line in lines if line.startswith("content-length:")), 0
            )
            return head + reader.read(length)

        return answer(first), answer(second)


def raw_post(content: str) -> bytes:
    body = httpx.Request("POST", "http://x", json=chat(content)).content
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.mark.parametrize("name", ["status-204", "status-304", "content-length"])
def test_hook_output_cannot_desynchronise_a_keep_alive_connection(attacked, name):
    """M6. A hook's 204/304, or a `content-length: 3` header from a headers hook: framing stays right,
    and the next request on the same connection gets its own 200."""
    first, second = keep_alive_exchange(attacked.url, raw_post(f"attack:{name}"), raw_post("hi"))
    if name == "content-length":
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        assert b"chat.completion" in first and b"x-good: kept" in first
    else:
        assert first.startswith(b"HTTP/1.1 500"), first[:200]
    assert second.startswith(b"HTTP/1.1 200"), second[:300]
    assert b"chat.completion" in second


@pytest.mark.parametrize("name", ["crlf", "nul", "space", "pseudo"])
def test_invalid_hook_headers_are_dropped_and_the_answer_delivered(attacked, name):
    """M7. A headers hook returning CR/LF or NUL in a value, a name with a space, or `:status`: the
    invalid header is dropped (and logged), the upstream's 200 answer is delivered with the valid one."""
    response = attacked.http.post("/v1/chat/completions", json=chat(f"attack:{name}"))
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
    assert response.headers["x-good"] == "kept"
    assert "x-injected" not in response.headers and "x-bad" not in response.headers
    assert "dropped" in attacked.sidecar_log()


def test_a_cancelled_moderation_hook_answers_an_envelope(attacked, assert_error):
    """M15. A moderation hook raising CancelledError: an error envelope, never an empty 504 and never
    the upstream's answer unmoderated."""
    response = attacked.http.post("/v1/chat/completions", json=chat("attack:cancel-moderation"))
    assert_error(response, 500, kind="internal_server_error")
    assert "chat.completion" not in response.text


def stream_events(stack, content: str) -> tuple[int, list[str]]:
    body = chat(content, stream=True)
    with (
        httpx.Client(base_url=stack.url, trust_env=False, timeout=20) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
        return response.status_code, lines


@pytest.mark.parametrize("name", ["cancel-stream", "huge-chunk"])
def test_a_broken_streaming_iterator_ends_the_stream_with_an_error_event(attacked, name):
    """M10. An iterator hook raising CancelledError, or yielding a 40 MB chunk (L11, M7): the stream ends
    at once with an error event, never an empty 503 and never a client left waiting."""
    started = time.monotonic()
    status, lines = stream_events(attacked, f"attack:{name}")
    assert status == 200
    assert any(line.startswith('data: {"error"') for line in lines), lines[-3:]
    assert lines[-1] == "data: [DONE]"
    assert time.monotonic() - started < 10


SLOW_CHAIN = """
import asyncio
from extproc import CustomLogger, HTTPException

class First(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        await asyncio.sleep(0.8)

class Second(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        await asyncio.sleep(0.8)
        if "refuse" in str(data["messages"]):
            raise HTTPException(403, "refused by the second hook")

first, second = First(), Second()
"""


def slow_chain_config(failure_mode_allow: bool) -> str:
    return f"""
litellm_settings:
  callbacks: [handlers.pii, slow.first, slow.second]
extproc:
  failure_mode_allow: {str(failure_mode_allow).lower()}
  hook_timeout_ms: 1000
  handlers:
    handlers.pii: {{options: {{entities: {{email: mask}}}}}}
"""


@pytest.mark.parametrize("failure_mode_allow", [False, True], ids=["fail-closed", "fail-open"])
def test_a_slow_chain_keeps_its_verdict_and_never_fails_open(e2e_stack, assert_error, failure_mode_allow):
    """S5. PII first, then two 0.8 s hooks (each within its 1 s timeout, 1.6 s together), the second
    refusing with 403: the client gets that 403 (L12), and a passing request reaches the upstream with
    its email masked, never unhooked."""
    stack = e2e_stack(slow_chain_config(failure_mode_allow), {"slow.py": SLOW_CHAIN})
    stack.mock_clear()
    refused = stack.http.post("/v1/chat/completions", json=chat("refuse me: alice@example.com"))
    assert_error(refused, 403, message="refused by the second hook")
    passed = stack.http.post("/v1/chat/completions", json=chat("write to alice@example.com"))
    assert passed.status_code == 200, passed.text
    sent = stack.mock_requests()
    assert len(sent) == 1
    assert "alice@example.com" not in str(sent[0]["json"])


BLOCKING = """
import time
from extproc import CustomLogger

class Sleeper(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "block":
            time.sleep(3)

sleeper = Sleeper()
"""


def test_a_hook_that_blocks_the_event_loop_is_named(e2e_stack):
    """M11. A pre-call hook calling time.sleep(3): the sidecar logs a warning naming that callback as
    having blocked the event loop."""
    stack = e2e_stack(
        "litellm_settings:\n  callbacks: blocking.sleeper\nextproc:\n  hook_timeout_ms: 1000\n",
        {"blocking.py": BLOCKING},
    )
    with httpx.Client(base_url=stack.url, trust_env=False, timeout=10) as client:
        client.post("/v1/chat/completions", json=chat("block"))
    log = poll(
        lambda: stack.sidecar_log() if "event loop is blocked" in stack.sidecar_log() else None, "warning"
    )
    line = next(line for line in log.splitlines() if "event loop is blocked" in line)
    assert "Sleeper.async_pre_call_hook" in line and "blocking.py" in line


def many_nodes_body() -> bytes:
    """30 MB: ten million empty arrays (and a 19-digit integer, which takes the exact-integer path)."""
    head = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1234567890123456789,"x":['
    return head + b"[]," * 10_000_000 + b"[]]}"


PII_OPEN = """
litellm_settings:
  callbacks: [handlers.pii]
extproc:
  failure_mode_allow: true
  handlers:
    handlers.pii: {options: {entities: {email: mask}}}
"""


def test_one_huge_many_node_body_does_not_stall_others(e2e_stack):
    """S4. One client posts 30 MB of ten million empty arrays: every concurrent request of another
    client is answered 200 with its email masked before it reaches the upstream."""
    stack = e2e_stack(PII_OPEN, {})
    stack.mock_clear()
    body = many_nodes_body()

    def huge() -> int:
        with httpx.Client(base_url=stack.url, trust_env=False, timeout=60) as client:
            headers = {"content-type": "application/json"}
            return client.post("/v1/chat/completions", content=body, headers=headers).status_code

    def ordinary(index: int) -> int:
        with httpx.Client(base_url=stack.url, trust_env=False, timeout=30) as client:
            content = f"ordinary {index}: mail bob@example.com"
            return client.post("/v1/chat/completions", json=chat(content)).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        big = pool.submit(huge)
        others = [pool.submit(ordinary, i) for i in range(20)]
        statuses = [future.result() for future in others]
        assert big.result() in (200, 400, 413)
    assert statuses == [200] * 20
    emails = [str(r["json"]) for r in stack.mock_requests() if "ordinary" in str(r["json"])]
    assert len(emails) == 20 and not any("@example.com" in text for text in emails)


def write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(textwrap.dedent(text))
    os.replace(temporary, path)


MODEL_HANDLER = """
from extproc import CustomLogger
{prelude}
class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "{model}"
        return data

handler = H()
"""


def answer_model(stack) -> str:
    response = stack.http.post("/v1/chat/completions", json=chat("hi"))
    assert response.status_code == 200, response.text
    return str(response.json()["model"])


@pytest.mark.parametrize(
    ("module", "prelude"),
    [
        ("interrupted_h", "raise KeyboardInterrupt()"),
        ("cancelled_h", "import asyncio\nraise asyncio.CancelledError()"),
    ],
)
def test_a_reload_survives_any_exception_at_import(e2e_stack, module, prelude):
    """M12, S6. A handler file edited to raise KeyboardInterrupt or CancelledError at import is refused
    with a log line, the previous handler keeps serving, and the fixed file is loaded afterwards."""
    stack = e2e_stack(
        f"litellm_settings:\n  callbacks: {module}.handler\n",
        {f"{module}.py": MODEL_HANDLER.format(prelude="", model="first")},
    )
    pid = sidecar_pid(stack)
    handler = stack.folder / f"{module}.py"
    write(handler, MODEL_HANDLER.format(prelude=prelude, model="broken"))
    poll(lambda: "reload refused" in stack.sidecar_log(), "the broken handler is refused")
    assert answer_model(stack) == "first"
    write(handler, MODEL_HANDLER.format(prelude="", model="fixed"))
    poll(lambda: answer_model(stack) == "fixed", "the fixed handler serves")
    assert sidecar_pid(stack) == pid


def test_a_slow_reload_does_not_stall_traffic(e2e_stack):
    """M13. A reload whose handler import takes 3 s while requests arrive every 100 ms: every request
    is answered normally meanwhile (none delayed by a second or more); the new handler serves after."""
    stack = e2e_stack(
        "litellm_settings:\n  callbacks: slow_h.handler\n",
        {"slow_h.py": MODEL_HANDLER.format(prelude="", model="before")},
    )
    assert answer_model(stack) == "before"
    write(
        stack.folder / "slow_h.py", MODEL_HANDLER.format(prelude="import time\ntime.sleep(3)", model="after")
    )
    slowest, models = 0.0, []
    deadline = time.monotonic() + 20
    while "after" not in models and time.monotonic() < deadline:
        started = time.monotonic()
        models.append(answer_model(stack))
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.1)
    assert models[-1] == "after", models[-5:]
    assert "before" in models
    assert slowest < 1.0, slowest


ROUTED = """
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: gpt-4o}}
    model_info: {{id: first}}{more}
litellm_settings:
  callbacks: timeout_h.handler
extproc:
  routing: true
  hook_timeout_ms: {timeout}
"""
NEW_DEPLOYMENT = """
  - model_name: gpt-new
    litellm_params: {model: gpt-new, api_base: "http://127.0.0.1:9"}
    model_info: {id: second}"""
SLOW_HOOK = """
import asyncio
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        await asyncio.sleep({seconds})

handler = H()
"""


def test_a_reload_the_running_envoy_cannot_follow_is_not_silent(e2e_stack):
    """M8. A reload adding a deployment with an api_base of its own is refused, naming what needs a
    regenerated Envoy config; a reload with a larger hook_timeout_ms fully works (a hook within the new
    timeout completes although Envoy was configured for the old one)."""
    stack = e2e_stack(ROUTED.format(more="", timeout=1000), {"timeout_h.py": SLOW_HOOK.format(seconds=0)})
    write(stack.folder / "config.yaml", ROUTED.format(more=NEW_DEPLOYMENT, timeout=1000))
    line = poll(
        lambda: next((x for x in stack.sidecar_log().splitlines() if "reload refused" in x), None),
        "the reload adding a deployment is refused",
    )
    assert "second at http://127.0.0.1:9" in line and "envoy-config" in line
    write(stack.folder / "timeout_h.py", SLOW_HOOK.format(seconds=2.5))
    write(stack.folder / "config.yaml", ROUTED.format(more="", timeout=4000))

    def slow_answer() -> httpx.Response | None:
        started = time.monotonic()
        response = stack.http.post("/v1/chat/completions", json=chat("hi", model="gpt-4o"), timeout=15)
        return response if time.monotonic() - started > 2.4 or response.status_code != 200 else None

    response = poll(slow_answer, "the slower hook with the larger timeout serves")
    assert response.status_code == 200, response.text

"""The hostile input corpus (`table.py`), each case sent through a real Envoy, sidecar and upstream.

One stack for the whole module: `max_request_bytes: 65536`, `max_json_depth: 32`, the rate limiter with
generous limits (so a leaked parallel slot shows in its `remaining` header), a handler with every hook
kind that changes nothing unless asked (`x-rewrite-model`), and `tests/hostile/upstream.py` as the
upstream: the project's mock, plus scripted hostile answers. After the corpus, the sidecar must still be
alive and answering, have logged no traceback other than the known bugs' (an exact allow-list: the
requests of cases marked `traceback`), hold no leaked slot, and Envoy's ext_proc streams must all be closed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import poll as wait_for

from extproc.api.anthropic import error_type as anthropic_error_type
from extproc.devtools.dev import Child

from .table import ANTHROPIC_PATHS, CASES, UNSET, Case, by_category, render
from .upstream import ANSWERS, HEADER, READY

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
KEY = "sk-hostile-corpus"
PARALLEL_LIMIT = 1000
DEADLINE_S = 10.0
HOOKS = """
from extproc import CustomLogger, sidecar_metadata


class Hostile(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        model = sidecar_metadata(data)["headers"].get("x-rewrite-model")
        if model is not None:
            data["model"] = model

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return None

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        return None

    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        return None

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        async for chunk in response:
            yield chunk


handler = Hostile()
"""
CONFIG = f"""
litellm_settings:
  callbacks: [handlers.rate_limiter, hostile_hooks.handler]
general_settings:
  enforce_user_param: false
extproc:
  max_request_bytes: 65536
  max_json_depth: 32
  max_stream_hold_bytes: 65536
  hook_timeout_ms: 20000  # Envoy's message timeout: room for the slow depth scan (a known bug) on slow machines
  handlers:
    handlers.rate_limiter:
      options:
        limits:
          api_key: {{max_parallel_requests: {PARALLEL_LIMIT}, rpm: 1000000}}
"""
REMAINING = "x-ratelimit-api_key-remaining-max_parallel_requests"
ENVELOPE_KEYS = {"message", "type", "param", "code"}
# Categories the corpus must cover (the brief's list).
REQUIRED_CATEGORIES = {
    "malformed-json",
    "not-an-object",
    "wrong-types",
    "missing-required",
    "size",
    "depth",
    "duplicate-keys",
    "nan-infinity",
    "big-int",
    "invalid-utf8",
    "surrogates",
    "bom",
    "content-type",
    "content-encoding",
    "multipart",
    "empty",
    "path",
    "upstream-non-json",
    "upstream-sse",
}


@pytest.fixture(scope="module")
def hostile_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("hostile-upstream") / "upstream.log"
    child = Child("hostile-upstream", [sys.executable, str(HERE / "upstream.py"), "--port", "0"], log)
    try:

        def ready() -> str | None:
            assert child.process.poll() is None, child.tail()
            found = re.search(re.escape(READY) + r"(http://\S+)", child.output())
            return found.group(1) if found else None

        yield wait_for(ready, "the hostile upstream")
    finally:
        child.signal(signal.SIGTERM)
        child.stop(time.monotonic() + 5)


@pytest.fixture(scope="module")
def stack(hostile_upstream, e2e_stack):
    return e2e_stack(CONFIG, {"hostile_hooks.py": HOOKS}, upstream=hostile_upstream)


def request_id(case: Case) -> str:
    return f"hostile-{case.name}"


def pieces(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 1000):
        yield body[start : start + 1000]


def send(stack, case: Case, key: str = KEY) -> tuple[httpx.Response, bytes, Exception | None, float]:
    headers: dict[str, str] = {
        "content-type": "application/json",
        "authorization": f"Bearer {key}",
        "x-request-id": request_id(case),
    }
    for name, value in case.headers.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    if case.answer is not None:
        headers[HEADER] = case.answer
    url = httpx.URL(stack.url).copy_with(raw_path=case.path.encode())
    content = pieces(case.body) if case.chunked else case.body
    request = stack.http.build_request(case.method, url, content=content, headers=headers)
    started = time.monotonic()
    request.extensions["timeout"] = httpx.Timeout(case.timeout_s).as_dict()
    response = stack.http.send(request, stream=True)
    received = bytearray()
    failure: Exception | None = None
    try:
        for data in response.iter_raw():
            received += data
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        failure = exc
    finally:
        response.close()
    return response, bytes(received), failure, time.monotonic() - started


def check_envelope(response: httpx.Response, body: bytes, case: Case) -> None:
    assert case.error is not None
    assert response.headers.get("content-type", "").startswith("application/json"), (response.headers, body)
    document = json.loads(body)
    if case.path in ANTHROPIC_PATHS:  # Anthropic's shape, with Anthropic's type for the status
        assert document["type"] == "error" and set(document) == {"type", "error"}, document
        assert document["error"]["type"] == anthropic_error_type(case.status), document
        assert case.error.fragment in document["error"]["message"], document
        return
    assert set(document) == {"error"}, document
    error = document["error"]
    assert ENVELOPE_KEYS <= set(error) <= {*ENVELOPE_KEYS, "provider_specific_fields"}, error
    assert isinstance(error["message"], str), error
    assert error["code"] == str(case.status), error
    assert error["type"] == case.error.type, error
    assert error["param"] == case.error.param, error
    assert case.error.fragment in error["message"], error


def sse_events(body: bytes) -> list[str]:
    """The `data` of each event, as an SSE client reads them (LF, CRLF or CR line endings)."""
    events, data = [], []
    for line in re.split(rb"\r\n|\r|\n", body):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" ").decode())
    if data:
        events.append("\n".join(data))
    return events


def check_sse(body: bytes) -> None:
    events = sse_events(body)
    assert events and events[-1] == "[DONE]", body[-300:]
    assert events.count("[DONE]") == 1, body[-300:]
    for data in events[:-1]:
        assert isinstance(json.loads(data), dict), data


def check_upstream(stack, case: Case) -> None:
    records = stack.mock_requests()
    if case.upstream == "never":
        assert records == [], [r["path"] for r in records]
        return
    assert len(records) == 1, [r["path"] for r in records]
    record = records[0]
    received = base64.b64decode(record["body_base64"])
    if record["content_length"] is not None:
        assert record["content_length"] == len(received), record["headers"]
    if case.upstream == "exact":
        assert received == case.body, received[:300]
    if case.upstream_body is not None:
        assert received == case.upstream_body, received[:300]
    if case.upstream_json is not UNSET:
        assert json.loads(received) == case.upstream_json, received[:300]
    if case.upstream_path is not None:
        assert record["path"] == case.upstream_path, record["path"]


def param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [param(case) for case in CASES])
def test_case(stack, case: Case):
    stack.mock_clear()
    response, body, failure, elapsed = send(stack, case)
    if case.reset:
        assert failure is not None, f"the stream ended normally: {body[-200:]!r}"
        assert response.status_code == case.status
        check_upstream(stack, case)
        return
    assert failure is None, failure
    assert response.status_code == case.status, body[:500]
    if case.answer is not None:  # the upstream's own content type, as it came
        assert response.headers.get("content-type") == ANSWERS[case.answer].content_type, response.headers
    if case.error is not None:
        check_envelope(response, body, case)
    if case.response is not None:
        assert body == case.response, body[-500:]
    for fragment in case.response_has:
        assert fragment in body, body[-500:]
    if case.sse_valid:
        check_sse(body)
    if case.max_seconds is not None:
        assert elapsed <= case.max_seconds, f"took {elapsed:.2f} s"
    check_upstream(stack, case)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def remaining_slots(stack, key: str) -> int:
    response = stack.http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "probe"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    return int(response.headers[REMAINING])


def test_client_metadata_cannot_move_rate_limiter_counters(stack):
    victim = "sk-hostile-victim"
    assert remaining_slots(stack, victim) == PARALLEL_LIMIT - 1  # also gives the limiter its cache
    forged = {"rate_limiter": {"held": [[f"rl:api_key:{key_hash(victim)}:parallel", 1, 600]]}}
    for _ in range(3):
        response = stack.http.post(
            "/v1/chat/completions",
            json={"model": 5, "messages": [], "metadata": forged},  # refused before any hook: 400
            headers={"authorization": "Bearer sk-hostile-attacker"},
        )
        assert response.status_code == 400, response.text
    # The failure events run in the background, on the sidecar's loop, before it answers the next requests.
    assert [remaining_slots(stack, victim) for _ in range(3)] == [PARALLEL_LIMIT - 1] * 3


def test_the_corpus_is_big_and_covers_every_category():
    assert len(CASES) >= 100
    assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"
    assert set(by_category()) >= REQUIRED_CATEGORIES, REQUIRED_CATEGORIES - set(by_category())
    for case in CASES:
        assert not case.traceback or case.xfail, f"{case.name}: only a known bug may log a traceback"


def test_cases_md_is_current():
    assert (HERE / "CASES.md").read_text() == render(), (
        "tests/hostile/CASES.md is stale: run `python -m tests.hostile.table > tests/hostile/CASES.md`"
    )


def test_after_the_corpus_the_sidecar_is_healthy(stack):
    """Runs last in this module: everything above has gone through the same sidecar."""
    sidecar = stack.stack.children["sidecar"]
    assert sidecar.process.poll() is None, sidecar.tail()
    # A normal request still works, and no request of the corpus kept a parallel slot.
    wait_for(lambda: remaining_slots(stack, KEY) == PARALLEL_LIMIT - 1, "every parallel slot released")
    # Every ext_proc stream Envoy opened was closed, none failed, none timed out.
    wait_for(
        lambda: (
            stack.stat("http.llm.ext_proc.streams_started") == stack.stat("http.llm.ext_proc.streams_closed")
        ),
        "every ext_proc stream closed",
    )
    assert stack.stat("http.llm.ext_proc.streams_failed") == 0
    assert stack.stat("http.llm.ext_proc.message_timeouts") == 0
    # Tracebacks: only the known bugs' requests may have logged one (an exact allow-list, by request id).
    # The sidecar logs Envoy's own request id, found from the client's in the access log.
    allowed = {stack.request_id_of(request_id(case)) for case in CASES if case.traceback}
    unexpected = [
        line
        for line in sidecar.output().splitlines()
        if "Traceback" in line and not any(f"request {rid}:" in line for rid in allowed)
    ]
    assert unexpected == [], "\n".join(unexpected)[:3000]

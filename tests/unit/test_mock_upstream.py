"""Tests for the deterministic mock OpenAI upstream."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from extproc.devtools.mock_upstream import build_app, start

REPO_ROOT = Path(__file__).resolve().parent.parent


class BackgroundServer:
    """The mock upstream running on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(start("127.0.0.1", 0), self.loop)
        self.runner, self.port = future.result(timeout=10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    srv = BackgroundServer()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture()
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.delete("/__mock/requests").status_code == 200
        yield c


def chat_body(text: str = "hello there world", **extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": text},
    ]
    return {"model": "gpt-4o", "messages": messages, **extra}


def sse_events(client: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> list[Any]:
    """POST a streaming request and return the decoded `data:` payloads (DONE kept as a string)."""
    events: list[Any] = []
    with client.stream("POST", path, json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def test_build_app_returns_application() -> None:
    from aiohttp import web

    assert isinstance(build_app(), web.Application)


def test_chat_non_stream(client: httpx.Client) -> None:
    resp = client.post("/v1/chat/completions", json=chat_body())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-mock-")
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-4o"
    choice = data["choices"][0]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "[mock:gpt-4o] hello there world"}
    usage = data["usage"]
    assert usage["completion_tokens"] == 4
    assert usage["prompt_tokens"] == 8  # "be brief first question ok hello there world"
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_without_v1_prefix_and_content_parts(client: httpx.Client) -> None:
    parts = [{"type": "text", "text": "look at "}, {"type": "image_url"}, {"type": "text", "text": "this"}]
    body = {"model": "m1", "messages": [{"role": "user", "content": parts}]}
    resp = client.post("/chat/completions?x=1", json=body)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "[mock:m1] look at this"
    last = client.get("/__mock/last").json()
    assert last["path"] == "/chat/completions"
    assert last["query"] == "x=1"


def test_chat_missing_model_is_null(client: httpx.Client) -> None:
    data = client.post("/v1/chat/completions", json={"messages": []}).json()
    assert data["model"] is None
    assert data["choices"][0]["message"]["content"] == "[mock:None] "


def test_chat_stream_five_chunks(client: httpx.Client) -> None:
    events = sse_events(client, "/v1/chat/completions", chat_body(stream=True), **{"x-mock-chunks": "5"})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 6
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o" for c in chunks)
    content_chunks = chunks[:5]
    assert content_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in content_chunks[1:])
    pieces = [c["choices"][0]["delta"]["content"] for c in content_chunks]
    assert all(pieces)
    assert "".join(pieces) == "[mock:gpt-4o] hello there world"
    final = chunks[-1]["choices"][0]
    assert final["delta"] == {}
    assert final["finish_reason"] == "stop"


def test_chat_stream_default_chunks_and_include_usage(client: httpx.Client) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_events(client, "/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 3 + 1 + 1
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "[mock:gpt-4o] hello there world"


def test_chat_stream_chunk_delay_spaces_events(client: httpx.Client) -> None:
    arrivals: list[float] = []
    headers = {"x-mock-chunks": "3", "x-mock-chunk-delay-ms": "100"}
    with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True), headers=headers) as r:
        for line in r.iter_lines():
            if line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.35


def test_completions_non_stream(client: httpx.Client) -> None:
    resp = client.post("/v1/completions", json={"model": "davinci", "prompt": ["a", "say this"]})
    data = resp.json()
    assert data["object"] == "text_completion"
    assert data["model"] == "davinci"
    choice = data["choices"][0]
    assert choice["text"] == "[mock:davinci] say this"
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_completions_stream(client: httpx.Client) -> None:
    body = {
        "model": "davinci",
        "prompt": "tell me",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse_events(client, "/completions", body, **{"x-mock-chunks": "2"})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["model"] == "davinci" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 2
    text_chunks = [c for c in chunks if c["choices"]]
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == "[mock:davinci] tell me"
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_list_input(client: httpx.Client) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha beta", "gamma"]}
    data = client.post("/v1/embeddings", json=body).json()
    assert data["object"] == "list"
    assert data["model"] == "text-embedding-3-small"
    assert [d["index"] for d in data["data"]] == [0, 1]
    vectors = [d["embedding"] for d in data["data"]]
    assert all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors)
    assert vectors[0] != vectors[1]
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    again = client.post("/embeddings", json={"model": "x", "input": "alpha beta"}).json()
    assert again["data"][0]["embedding"] == vectors[0]
    tokens = client.post("/embeddings", json={"model": "x", "input": [[1, 2], [3]]}).json()
    assert len(tokens["data"]) == 2


def test_images_n2(client: httpx.Client) -> None:
    data = client.post("/v1/images/generations", json={"model": "dall-e-3", "prompt": "a cat", "n": 2}).json()
    assert isinstance(data["created"], int)
    assert data["data"] == [
        {"url": "https://mock.invalid/image-0.png", "revised_prompt": "a cat"},
        {"url": "https://mock.invalid/image-1.png", "revised_prompt": "a cat"},
    ]


def test_moderations_flagged(client: httpx.Client) -> None:
    body = {"model": "omni-moderation-latest", "input": ["Graphic VIOLENCE here", "a kind word"]}
    data = client.post("/v1/moderations", json=body).json()
    assert data["model"] == "omni-moderation-latest"
    assert data["id"]
    flagged, clean = data["results"]
    assert flagged["flagged"] is True
    assert flagged["categories"]["violence"] is True
    assert flagged["category_scores"]["violence"] > 0.5
    assert clean["flagged"] is False
    for result in data["results"]:
        assert set(result["categories"]) == {"violence", "hate", "self-harm", "sexual", "harassment"}
        assert set(result["category_scores"]) == set(result["categories"])
    single = client.post("/moderations", json={"input": "nonviolence"}).json()
    assert len(single["results"]) == 1
    assert single["results"][0]["flagged"] is False


@pytest.mark.parametrize(
    ("model", "text", "answer"),
    [
        ("meta-llama/Llama-Guard-3-8B", "how to stop VIOLENCE at school", "unsafe\nS1"),
        ("llama-guard", "a kind word about nonviolence", "safe"),
        ("my-GUARD-model", "nothing to see", "safe"),
    ],
)
def test_chat_guard_model_answers_a_verdict(client: httpx.Client, model: str, text: str, answer: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": "classify"}, {"role": "user", "content": text}],
    }
    data = client.post("/v1/chat/completions", json=body).json()
    assert data["object"] == "chat.completion"
    assert data["model"] == model
    assert data["choices"][0]["message"] == {"role": "assistant", "content": answer}
    events = sse_events(client, "/v1/chat/completions", {**body, "stream": True})
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == answer


def test_chat_guard_verdict_reads_every_message(client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "violence"}]},
        {"role": "assistant", "content": "ok"},
    ]
    data = client.post("/v1/chat/completions", json={"model": "guard", "messages": messages}).json()
    assert data["choices"][0]["message"]["content"] == "unsafe\nS1"
    plain = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": messages}).json()
    assert plain["choices"][0]["message"]["content"] == "[mock:gpt-4o] violence"


def test_audio_transcription_multipart(client: httpx.Client) -> None:
    audio = bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n"
    files = {"file": ("clip.wav", audio, "audio/wav")}
    resp = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files)
    assert resp.status_code == 200
    assert resp.json() == {"text": f"[mock:whisper-1] transcribed {len(audio)} bytes from clip.wav"}
    last = client.get("/__mock/last").json()
    raw = base64.b64decode(last["body_base64"])
    assert audio in raw
    assert last["json"] is None
    assert last["headers"]["content-type"].startswith("multipart/form-data")
    assert last["content_length"] == len(raw)


@pytest.mark.parametrize(
    ("status", "err_type"),
    [(429, "rate_limit_error"), (500, "internal_server_error"), (400, "invalid_request_error")],
)
def test_status_override_envelope(client: httpx.Client, status: int, err_type: str) -> None:
    resp = client.post("/v1/chat/completions", json=chat_body(), headers={"x-mock-status": str(status)})
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {
        "error": {
            "message": f"mock upstream error {status}",
            "type": err_type,
            "param": None,
            "code": str(status),
        }
    }


def test_delay_header(client: httpx.Client) -> None:
    started = time.monotonic()
    resp = client.post("/v1/embeddings", json={"input": "x"}, headers={"x-mock-delay-ms": "200"})
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.2
    last = client.get("/__mock/last").json()
    assert last["answered_at"] - last["received_at"] >= 0.2


def test_recording_endpoints(client: httpx.Client) -> None:
    assert client.get("/__mock/last").status_code == 404
    assert client.get("/__mock/requests").json() == []
    raw = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi \xc3\xa9"}]}'
    headers = {"content-type": "application/json", "X-Custom": "Value"}
    client.post("/v1/chat/completions?a=b", content=raw, headers=headers)
    client.get("/v1/models")
    records = client.get("/__mock/requests").json()
    assert [r["path"] for r in records] == ["/v1/chat/completions", "/v1/models"]
    first = records[0]
    assert first["method"] == "POST"
    assert first["query"] == "a=b"
    assert first["headers"]["x-custom"] == "Value"
    assert first["body"] == raw.decode()
    assert base64.b64decode(first["body_base64"]) == raw
    assert first["json"]["messages"][0]["content"] == "hi é"
    assert first["content_length"] == len(raw)
    assert first["chunked"] is False
    assert first["received_at"] <= first["answered_at"]
    assert client.get("/__mock/last").json() == records[-1]
    assert client.delete("/__mock/requests").status_code == 200
    assert client.get("/__mock/requests").json() == []


def test_chunked_request_recorded(client: httpx.Client) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"model": "m", '
        yield b'"input": "chunked"}'

    resp = client.post("/v1/embeddings", content=parts(), headers={"content-type": "application/json"})
    assert resp.status_code == 200
    last = client.get("/__mock/last").json()
    assert last["chunked"] is True
    assert last["content_length"] is None
    assert last["json"] == {"model": "m", "input": "chunked"}


def test_models_list(client: httpx.Client) -> None:
    for path in ("/v1/models", "/models"):
        ids = [m["id"] for m in client.get(path).json()["data"]]
        assert ids == ["gpt-3.5-turbo", "gpt-4o"]


def test_unknown_path_echo(client: httpx.Client) -> None:
    resp = client.put("/v1/some/thing?q=1&r=2", content=b"payload")
    assert resp.status_code == 200
    assert resp.json() == {"mock": "echo", "method": "PUT", "path": "/v1/some/thing", "query": "q=1&r=2"}
    last = client.get("/__mock/last").json()
    assert last["method"] == "PUT"
    assert last["body"] == "payload"


def test_malformed_json_400(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    resp = client.post("/v1/chat/completions", content=b"{not json", headers=headers)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert client.get("/__mock/last").json()["json"] is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_main_prints_ready_line_and_exits_cleanly(sig: signal.Signals) -> None:
    code = "from extproc.devtools.mock_upstream import main; main(port=0)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"mock-upstream listening on http://127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        port = int(match.group(1))
        assert port > 0
        with httpx.Client(timeout=10) as c:
            assert c.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err

"""The seed's example (examples/config.yaml + examples/custom_callbacks.py) through a real Envoy."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(EXAMPLES / "config.yaml")
    stack.mock_clear()
    return stack


def test_model_rewrite_reaches_upstream(stack):
    sent = {
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": "what's the weather"}],
        "temperature": 0.7,
        "max_tokens": 20,
        "user": "seed-user",
    }
    response = stack.http.post("/v1/chat/completions", json=sent)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "[mock:my-new-model] what's the weather"
    record = stack.mock_last()
    assert record["path"] == "/v1/chat/completions"
    assert record["json"] == {**sent, "model": "my-new-model"}
    body = base64.b64decode(record["body_base64"])
    assert int(record["headers"]["content-length"]) == len(body)
    assert record["headers"]["content-type"] == "application/json"
    assert len(stack.mock_requests()) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ("/v1/images/generations", {"model": "dall-e-3", "prompt": "a cat", "n": 2}),
        ("/v1/moderations", {"model": "omni-moderation-latest", "input": "hello"}),
    ],
)
def test_model_rewrite_on_every_json_endpoint(stack, path, body):
    sent = {**body, "user": "seed-user"}
    response = stack.http.post(path, json=sent)
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    assert record["path"] == path
    assert record["json"] == {**sent, "model": "my-new-model"}
    assert int(record["headers"]["content-length"]) == len(base64.b64decode(record["body_base64"]))


def test_seed_config_enforces_user(stack, assert_error):
    sent = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    response = stack.http.post("/v1/chat/completions", json=sent)
    assert_error(response, 401, kind="auth_error")
    assert stack.mock_requests() == []


def test_model_rewrite_on_audio(stack):
    boundary = "seedBoundary"
    audio = bytes(range(256)) * 8
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="a.mp3"\r\nContent-Type: audio/mpeg\r\n\r\n'
        + audio
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        + f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="user"\r\n\r\nseed-user\r\n'
        + f"--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = stack.http.post("/v1/audio/transcriptions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": f"[mock:my-new-model] transcribed {len(audio)} bytes from a.mp3"}

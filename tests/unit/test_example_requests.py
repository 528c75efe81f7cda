"""The sample requests of `examples/requests/` go through `llm-extproc try` against examples/config.yaml.

Each is run as the README shows it (the real command), and must reach the upstream with the example
handler's change (the model rewritten), so a sample that rots or a family that stops being hooked fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
REQUESTS = EXAMPLES / "requests"
# file -> the path it is sent on (the README's table lists the same)
SAMPLES = {
    "chat.json": "/v1/chat/completions",
    "chat-stream.json": "/v1/chat/completions",
    "completions.json": "/v1/completions",
    "embeddings.json": "/v1/embeddings",
    "responses.json": "/v1/responses",
    "messages.json": "/v1/messages",
}
ANSWERS = {"chat.json": "chat-answer.json", "chat-stream.json": "chat-stream.sse"}


def run_try(*args: str) -> dict:
    command = [sys.executable, "-m", "extproc", "try", "--config", str(EXAMPLES / "config.yaml"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict = json.loads(done.stdout)
    return report


def test_every_sample_is_listed():
    requests = {p.name for p in REQUESTS.glob("*.json")} - set(ANSWERS.values())
    assert requests == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_request_goes_through_the_example_hook(name):
    report = run_try(str(REQUESTS / name), "--path", SAMPLES[name], "--json")
    assert report["hooked"] is True
    assert report["refusal"] is None
    assert [call["hook"] for call in report["hooks"]] == [
        "custom_callbacks.proxy_handler_instance.async_pre_call_hook"
    ]
    upstream = report["upstream_request"]
    assert upstream["changed"] is True
    assert upstream["body"]["model"] == "my-new-model"


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_sample_answers_reach_the_client(name):
    report = run_try(str(REQUESTS / name), "--response", str(REQUESTS / ANSWERS[name]), "--json")
    response = report["response"]
    assert response["status"] == 200
    assert response["stream_error"] is False
    assert response["changed"] is False  # the example has no response hook: the answer passes as is
    answer = (REQUESTS / ANSWERS[name]).read_text()
    assert response["body"] == (json.loads(answer) if name == "chat.json" else answer)

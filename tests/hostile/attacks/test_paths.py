"""Attacks on what decides whether a request is hooked: path spellings, methods, the model name hooks
see after routing, and where callback code may come from."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e

REWRITE = """
from extproc import CustomLogger

class Rewrite(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "hooked"
        return data

handler = Rewrite()
"""
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def hooked(e2e_stack):
    return e2e_stack("litellm_settings:\n  callbacks: rewrite.handler\n", {"rewrite.py": REWRITE})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/Responses"),
        ("POST", "/v1/messages;x=1"),
        ("POST", "/Anthropic/v1/messages"),
        ("PUT", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("POST", "/v1/Chat/Completions"),
        ("POST", "/V1/CHAT/COMPLETIONS"),
        ("POST", "/v1/chat/completions;x=1"),
        ("POST", "/v1/chat/completions%20"),
        ("POST", "/v1/embeddings;v=2"),
        ("PUT", "/v1/chat/completions"),
        ("PATCH", "/v1/chat/completions"),
    ],
)
def test_near_variants_of_llm_endpoints_are_refused(hooked, assert_error, method, path):
    """M4. A near-variant of an LLM endpoint (another case, `;params`, `%20`, another method, a Messages
    path the hooks do not cover) is refused with an error and never reaches the upstream unhooked."""
    hooked.mock_clear()
    with httpx.Client(base_url=hooked.url, trust_env=False, timeout=10) as client:
        response = client.request(method, path, json=CHAT)
    assert_error(response, 404, kind="invalid_request_error")
    assert hooked.mock_requests() == []


def test_the_hooked_endpoint_and_bodyless_reads_still_pass(hooked):
    """M4. What the hooks cover still goes through them, and reads without a request body (a stored
    completion's GET) still reach the upstream."""
    hooked.mock_clear()
    assert hooked.http.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert hooked.mock_last()["json"]["model"] == "hooked"
    hooked.http.get("/v1/chat/completions/chatcmpl-123")
    assert any(r["path"].startswith("/v1/chat/completions/") for r in hooked.mock_requests())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "m", "input": "hi"}),
        ("/responses", {"model": "m", "input": "hi"}),
        ("/v1/messages", {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        (
            "/anthropic/v1/messages",
            {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
def test_agent_endpoints_go_through_the_hooks(hooked, path, body):
    """M4. The Responses and Messages endpoints, on every mount, reach the upstream only through the hooks."""
    hooked.mock_clear()
    response = hooked.http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert hooked.mock_last()["json"]["model"] == "hooked"


ROUTED = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o-2024-08-06}
litellm_settings:
  callbacks: [handlers.keyword_moderation]
extproc:
  routing: true
  handlers:
    handlers.keyword_moderation: {options: {models: {gpt-4o: {block: [internal]}}}}
"""


def test_per_model_moderation_rules_use_the_public_model_name(e2e_stack, assert_error):
    """M2. With routing renaming gpt-4o upstream, a per-model keyword rule for gpt-4o still refuses:
    hooks see the model_name the client asked for, only the upstream gets the deployment's model."""
    stack = e2e_stack(ROUTED, {})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "share the internal plan"}]}
    refused = stack.http.post("/v1/chat/completions", json=body)
    error = assert_error(refused, 400)
    assert "Violated content policy" in error["message"]
    stack.mock_clear()
    fine = stack.http.post(
        "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert fine.status_code == 200 and fine.json()["model"] == "gpt-4o"
    assert stack.mock_last()["json"]["model"] == "gpt-4o-2024-08-06"


def test_callbacks_cannot_load_code_from_outside_the_allowed_folders(tmp_path):
    """L9. `callbacks: ["/some/where/evil.h"]` is refused at load, naming the callback, and the file is
    never imported."""
    outside = tmp_path / "some" / "where"
    outside.mkdir(parents=True)
    marker = tmp_path / "imported"
    (outside / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nh = 1\n"
    )
    config = tmp_path / "config" / "config.yaml"
    config.parent.mkdir()
    config.write_text(f'litellm_settings:\n  callbacks: ["{outside}/evil.h"]\n')
    checked = subprocess.run(
        [sys.executable, "-m", "extproc", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert f"{outside}/evil.h" in checked.stderr + checked.stdout
    assert "Traceback" not in checked.stderr
    assert not marker.exists()

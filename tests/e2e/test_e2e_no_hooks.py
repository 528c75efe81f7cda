"""A config with no callbacks and no enforce_user_param: LLM routes bypass the sidecar entirely."""

from __future__ import annotations

import base64

import pytest

pytestmark = pytest.mark.e2e

CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: gpt-4o
"""


@pytest.fixture()
def stack(e2e_stack):
    stack = e2e_stack(CONFIG)
    stack.mock_clear()
    return stack


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'),
        ("/v1/embeddings", b'{"model": "e", "input": "hi"}'),
        # Not even validated: the mock, not the sidecar, answers the broken body.
        ("/v1/chat/completions", b'{"model": '),
    ],
)
def test_requests_pass_through_without_ext_proc(stack, request_id, path, body):
    response = stack.http.post(
        path, content=body, headers={"content-type": "application/json", "x-request-id": request_id}
    )
    record = stack.mock_last()
    assert base64.b64decode(record["body_base64"]) == body
    assert record["path"] == path
    if body.endswith(b"}"):
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "request body is not a JSON object"  # the mock's words
    entry = stack.access_entry(request_id)
    assert "rh:" not in entry["ext_proc_timing"], entry
    assert stack.stat("http.llm.ext_proc.streams_started") == 0
    assert "llm-extproc serving on" in stack.sidecar_log()


def test_external_upstream(e2e_stack, stack, request_id):
    """`upstream=` (`dev --upstream`): no mock of its own; traffic goes to the URL given, Host rewritten."""
    other = e2e_stack(CONFIG, upstream=stack.mock_url)
    assert "mock" not in other.stack.children
    assert other.mock_url == stack.mock_url
    response = other.http.get("/v1/models", headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    record = stack.mock_last()
    assert record["headers"]["x-client-request-id"] == request_id  # Envoy makes its own x-request-id
    assert record["headers"]["host"] == stack.mock_url.removeprefix("http://")

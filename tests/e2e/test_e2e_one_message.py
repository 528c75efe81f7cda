"""One message per request (the default): no request-headers message, through a real Envoy. Envoy copies
the request headers (all, or those of `extproc.forward_headers`) into metadata sent with the body."""

import hashlib

import httpx
import pytest
from helpers import EagerUpstream, json_lines, poll

pytestmark = pytest.mark.e2e

DEFAULT = """
litellm_settings: {callbacks: [h.h]}
general_settings: {enforce_user_param: true}
"""
CONFIG = """
litellm_settings: {callbacks: [h.h]}
general_settings: {enforce_user_param: true}
extproc:
  forward_headers: [authorization, x-team-id]
  # As if an earlier filter set x-team-id (e.g. from a verified JWT): Envoy keeps it.
  auth: {headers: {team_id: x-team-id}, trusted_headers: [x-team-id]}
"""
HANDLER = """
import json, pathlib
from extproc import CustomLogger

SEEN = pathlib.Path(__file__).with_name("seen.jsonl")

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        with SEEN.open("a") as out:
            out.write(json.dumps({"call_type": call_type, "key": user_api_key_dict.api_key,
                                  "team": user_api_key_dict.team_id, "call_id": data["litellm_call_id"],
                                  "headers": data["metadata"]["headers"]}) + "\\n")
        data["model"] = "my-new-model"
        return data

h = H()
"""


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack(CONFIG, {"h.py": HANDLER})


def seen(stack):
    return json_lines(stack.stack.config_path.with_name("seen.jsonl"))


def test_one_message_carries_endpoint_and_forwarded_headers(stack, request_id):
    headers = {
        "authorization": "Bearer sk-one",
        "x-team-id": "team-7",
        "x-request-id": request_id,
        "x-other": "o",
    }
    for path, body, call_type in (
        (
            "/v1/chat/completions",
            {"model": "m", "user": "u", "messages": [{"role": "user", "content": "hi"}]},
            "acompletion",
        ),
        ("/embeddings", {"model": "m", "user": "u", "input": "x"}, "aembedding"),
    ):
        response = stack.http.post(path, json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert stack.mock_last()["json"]["model"] == "my-new-model"
        last = seen(stack)[-1]
        assert last["call_type"] == call_type
        assert last["key"] == hashlib.sha256(b"sk-one").hexdigest() and last["team"] == "team-7"
        assert last["call_id"] == last["headers"]["x-request-id"] != request_id  # Envoy's own id
        assert "x-other" not in last["headers"]  # only forwarded headers reach hooks in this mode
        assert "authorization" not in last["headers"]
    entry = stack.access_entry(request_id)
    assert entry["ext_proc_timing"].startswith("rb:") and "rh:" not in entry["ext_proc_timing"]


def test_by_default_hooks_see_every_header_but_the_credentials(e2e_stack, request_id):
    stack = e2e_stack(DEFAULT, {"h.py": HANDLER})
    headers = {
        "authorization": "Bearer sk-all",
        "x-other": "o",
        "x-request-id": request_id,
        "x-twice": "a",
    }
    body = {"model": "m", "user": "u", "messages": [{"role": "user", "content": "hi"}]}
    # A repeated header reaches hooks joined with a comma, as in the two-message mode.
    raw_headers = [*headers.items(), ("x-twice", "b")]
    response = stack.http.post("/v1/chat/completions", json=body, headers=raw_headers)
    assert response.status_code == 200, response.text
    last = seen(stack)[-1]
    assert last["key"] == hashlib.sha256(b"sk-all").hexdigest()
    assert last["headers"]["x-other"] == "o" and last["headers"]["x-twice"] == "a,b"
    assert "authorization" not in last["headers"]
    assert not any(name.startswith(":") for name in last["headers"])
    assert stack.mock_last()["json"]["model"] == "my-new-model"
    entry = stack.access_entry(request_id)
    assert entry["ext_proc_timing"].startswith("rb:") and "rh:" not in entry["ext_proc_timing"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_request_without_a_body_is_refused_before_the_upstream(e2e_stack, assert_error, path):
    """No ext_proc message would be sent for it: Envoy refuses it instead of letting it through unhooked."""
    stack = e2e_stack(DEFAULT, {"h.py": HANDLER})
    stack.mock_clear()
    for content in (None, b""):
        response = stack.http.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        if path.endswith("/messages"):
            assert response.json()["type"] == "error", response.text
            assert response.json()["error"]["type"] == "invalid_request_error"
        else:
            assert_error(response, 400, kind="invalid_request_error")
    assert stack.mock_requests() == []


def test_checks_still_apply_without_the_headers_message(stack):
    response = stack.http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 401  # enforce_user_param
    response = stack.http.post("/v1/chat/completions", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


def test_other_methods_and_paths_never_reach_the_sidecar(stack):
    before = stack.stat("http.llm.ext_proc.streams_started")
    assert stack.http.get("/v1/chat/completions").status_code == 200  # the mock's echo
    assert stack.http.get("/v1/models").status_code == 200
    assert stack.stat("http.llm.ext_proc.streams_started") == before


def _json_formats(node):
    """Every access log `json_format` dict in a bootstrap."""
    if isinstance(node, dict):
        if "json_format" in node and isinstance(node["json_format"], dict):
            yield node["json_format"]
        for value in node.values():
            yield from _json_formats(value)
    elif isinstance(node, list):
        for value in node:
            yield from _json_formats(value)


def test_forwarded_credentials_leave_envoys_metadata_hashed(tmp_path, request_id):
    """What the header-to-metadata filter copied for the sidecar stays in Envoy's dynamic metadata, where
    access logs and later filters read it: the sidecar's answer overwrites the key with its hash."""
    from extproc.devtools.dev import DevStack

    class LoggingForwarded(DevStack):  # an access log field that prints the whole namespace
        def bootstrap(self, pipeline):
            config = super().bootstrap(pipeline)
            for fields in _json_formats(config):
                fields["forwarded"] = "%DYNAMIC_METADATA(llm_extproc.request)%"
            return config

    (tmp_path / "h.py").write_text(HANDLER)
    (tmp_path / "config.yaml").write_text(CONFIG)
    stack = LoggingForwarded(tmp_path / "config.yaml").start()
    try:
        body = {"model": "m", "user": "u", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": "Bearer sk-secret-one", "x-team-id": "t", "x-request-id": request_id}
        for path in ("/v1/chat/completions", "/v1/models-not-hooked"):
            response = httpx.post(stack.url + path, json=body, headers=headers, timeout=10, trust_env=False)
            assert response.status_code in (200, 404), response.text
        refused = httpx.post(  # an error answer scrubs too
            stack.url + "/v1/chat/completions",
            json={"model": "m", "messages": []},
            headers={**headers, "x-request-id": request_id + "-refused"},
            timeout=10,
            trust_env=False,
        )
        assert refused.status_code == 401

        def logged() -> list[dict[str, object]]:
            found = [entry for entry in json_lines(stack.access_log_path) if request_id in str(entry)]
            return found if len(found) >= 2 else []

        lines = poll(logged, "both requests in the access log")
        assert "sk-secret-one" not in stack.access_log_path.read_text()
        hashed = hashlib.sha256(b"sk-secret-one").hexdigest()
        for line in lines:
            if line["path"] == "/v1/chat/completions":
                # After the answer only the key's hash is left of what Envoy copied for the sidecar.
                assert line["forwarded"] == {"headers": {"authorization": hashed}}, line
    finally:
        stack.stop()


# ---- the upstream sees nothing before the hooks decide ----
EAGER_HANDLER = """
import asyncio
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        await asyncio.sleep(0.2)  # the upstream would have answered by now, had it seen the request
        if data.get("user") == "blocked":
            return "blocked by policy"
        data["model"] = "rewritten-by-the-hook"
        return data

h = H()
"""
@pytest.mark.parametrize("messages", ["one", "two"])
def test_the_upstream_gets_nothing_until_the_hooks_have_decided(tmp_path, messages):
    """In one-message mode Envoy does not hold the request headers for ext_proc (it skips them): a filter
    after ext_proc holds them until the sidecar has answered, so an upstream that answers on the headers
    never answers for a request the hooks refuse or have not finished with, and a rewritten body goes with
    its own content-length."""
    from extproc.devtools.dev import DevStack

    upstream = EagerUpstream()
    (tmp_path / "h.py").write_text(EAGER_HANDLER)
    (tmp_path / "config.yaml").write_text(
        f"litellm_settings: {{callbacks: [h.h]}}\nextproc: {{messages: {messages}}}\n"
    )
    stack = DevStack(tmp_path / "config.yaml", upstream=upstream.url).start()
    try:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        refused = httpx.post(stack.url + "/v1/chat/completions", json={**chat, "user": "blocked"}, timeout=10)
        assert refused.status_code == 200 and "blocked by policy" in refused.text, refused.text
        assert upstream.accepted == 0  # not even the headers
        passed = httpx.post(stack.url + "/v1/chat/completions", json={**chat, "user": "ok"}, timeout=10)
        assert passed.status_code == 200 and passed.json()["model"] == "eager", passed.text
        poll(lambda: upstream.seen, "the upstream to record the request", deadline_s=5)
        head, _, body = upstream.seen[0].partition(b"\r\n\r\n")
        assert b"rewritten-by-the-hook" in body
        assert f"content-length: {len(body)}".encode() in head.lower(), head
        assert b"transfer-encoding" not in head.lower()
    finally:
        stack.stop()
        upstream.close()

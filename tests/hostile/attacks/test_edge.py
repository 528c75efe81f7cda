"""Attacks on the Envoy edge through the generated config: headers a client sends to pick a deployment,
an identity, a key or a request id; credentials in odd places; slow uploads that hold the sidecar's
streams; deployment routes and api_bases that a config gets wrong.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import poll

pytestmark = pytest.mark.e2e

RECORDER = """
import json
import logging
from pathlib import Path

from extproc import CustomLogger, HTTPException

CALLS = Path(__file__).with_name("calls.jsonl")
IDENTITY = (
    "user_api_key_team_id", "user_api_key_user_id", "user_api_key_alias", "requester_ip_address",
    "user_api_key_hash", "user_api_key_end_user_id", "user_api_key_spend", "endpoint", "applied_guardrails",
    "standard_logging_guardrail_information", "requester_metadata",
)
log = logging.getLogger("edge.recorder")


class Recorder(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        metadata = data["metadata"]
        # A careless hook: it logs every header it is given.
        log.warning("headers seen: %s", metadata["headers"])
        record = {
            "tag": data["messages"][0]["content"],
            "litellm_call_id": data["litellm_call_id"],
            "request_id": metadata["request_id"],
            "headers": metadata["headers"],
            "team_id": user_api_key_dict.team_id,
            "rpm_limit": user_api_key_dict.rpm_limit,
            "models": user_api_key_dict.models,
            "identity": {key: metadata.get(key) for key in IDENTITY},
        }
        with CALLS.open("a") as calls:
            calls.write(json.dumps(record) + "\\n")
        if data["messages"][0]["content"] == "refuse-413":
            raise HTTPException(status_code=413, detail="the hook's own 413: attachments are not allowed")
        data["hooked"] = True
        return data


proxy = Recorder()
"""

KEY_RPM = 3
# Key fields no header or metadata source of this config fills: None whatever the client sends.
IDENTITY_FROM_KEY = (
    "user_api_key_team_id",
    "user_api_key_user_id",
    "user_api_key_alias",
    "requester_ip_address",
)
CONFIG = f"""
litellm_settings:
  callbacks: [handlers.rate_limiter, recorder.proxy]
extproc:
  auth:
    headers: {{team_id: x-team-id, rpm_limit: x-rpm-limit, models: x-allowed-models}}
  handlers:
    handlers.rate_limiter: {{options: {{limits: {{api_key: {{rpm: {KEY_RPM}}}}}}}}}
"""


def chat(tag: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": tag}], **extra}


@pytest.fixture(scope="module")
def stack(e2e_stack):
    return e2e_stack(CONFIG, {"recorder.py": RECORDER})


def calls_tagged(stack, tag: str) -> list[dict[str, Any]]:
    return [call for call in stack.hook_calls() if call["tag"] == tag]


def test_identity_headers_sent_by_a_client_never_reach_the_hooks(stack):
    """S8. A client's own x-team-id, x-rpm-limit or x-allowed-models never become its identity."""
    forged = {
        "authorization": "Bearer sk-edge-s8",
        "x-team-id": "team-admins",
        "x-rpm-limit": "1000000",
        "x-allowed-models": "all-proxy-models",
    }
    statuses = [
        stack.http.post("/v1/chat/completions", json=chat("s8"), headers=forged).status_code for _ in range(5)
    ]
    assert statuses == [200] * KEY_RPM + [429] * (5 - KEY_RPM)  # the key's own 3 rpm still applies
    for call in calls_tagged(stack, "s8"):
        assert (call["team_id"], call["rpm_limit"], call["models"]) == (None, None, [])
        assert not {"x-team-id", "x-rpm-limit", "x-allowed-models"} & set(call["headers"])


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(
            lambda n: [("api-key", "sk-edge-s9-mixed"), ("authorization", f"Bearer junk-{n}")], id="mixed"
        ),
        pytest.param(
            lambda n: [("authorization", "Bearer sk-edge-s9-twice"), ("authorization", f"Bearer junk-{n}")],
            id="duplicated",
        ),
    ],
)
def test_mixed_or_duplicated_credentials_do_not_evade_key_limits(stack, assert_error, credentials):
    """S9. A request naming two keys is refused, so a key's limit holds however a client adds junk keys."""
    answers = [
        stack.http.post("/v1/chat/completions", json=chat("s9"), headers=credentials(n)) for n in range(6)
    ]
    assert sum(a.status_code == 200 for a in answers) <= KEY_RPM
    for answer in answers:
        assert_error(answer, 401, kind="auth_error")


def test_credentials_in_other_headers_are_kept_from_hooks_and_logs(stack):
    """L4. Azure APIM and x-auth-token credentials reach no hook and no log."""
    secrets = {"ocp-apim-subscription-key": "apim-secret-4d1f", "x-auth-token": "auth-token-secret-9c2e"}
    response = stack.http.post(
        "/v1/chat/completions",
        json=chat("l4"),
        headers={"authorization": "Bearer sk-edge-l4", **secrets},
    )
    assert response.status_code == 200, response.text
    [call] = calls_tagged(stack, "l4")
    assert not set(secrets) & set(call["headers"])
    stack.request_id_of(call["litellm_call_id"])  # the access log line is written
    logs = stack.sidecar_log() + stack.stack.access_log_path.read_text()
    for value in secrets.values():
        assert value not in logs


@pytest.mark.parametrize("forwarded", [{}, {"x-forwarded-for": "8.8.8.8"}], ids=["direct", "forwarded-for"])
def test_clients_cannot_choose_the_request_id(stack, forwarded):
    """L5. litellm_call_id and metadata.request_id are never the id a client sent."""
    chosen = f"chosen-{len(forwarded)}-by-the-client"
    tag = f"l5-{len(forwarded)}"
    response = stack.http.post(
        "/v1/chat/completions",
        json=chat(tag),
        headers={"authorization": f"Bearer sk-edge-{tag}", "x-request-id": chosen, **forwarded},
    )
    assert response.status_code == 200, response.text
    [call] = calls_tagged(stack, tag)
    assert call["litellm_call_id"] != chosen and call["request_id"] != chosen
    assert call["litellm_call_id"] == call["request_id"] == stack.request_id_of(chosen)


def test_a_key_in_the_query_string_is_not_logged(stack):
    """L6. A key a client puts in the query string appears in no log."""
    response = stack.http.post(
        "/v1/chat/completions?key=sk-query-secret-77aa",
        json=chat("l6"),
        headers={"authorization": "Bearer sk-edge-l6", "x-request-id": "edge-l6"},
    )
    assert response.status_code == 200, response.text
    assert stack.access_entry("edge-l6")["path"] == "/v1/chat/completions"
    assert "sk-query-secret-77aa" not in stack.stack.access_log_path.read_text() + stack.sidecar_log()


def test_a_hooks_413_keeps_its_message(stack, assert_error):
    """L2. A hook's 413 reaches the client with the hook's message, not Envoy's body-size text."""
    response = stack.http.post(
        "/v1/chat/completions", json=chat("refuse-413"), headers={"authorization": "Bearer sk-edge-l2"}
    )
    error = assert_error(response, 413)
    assert "the hook's own 413: attachments are not allowed" in error["message"], error


def test_client_metadata_cannot_supply_litellm_identity_keys(stack):
    """M14. Hooks never see a client's own values under the metadata names the sidecar sets (every
    user_api_key_* field, headers, endpoint, request id, requester address, applied guardrails)."""
    forged = {
        "user_api_key_team_id": "team-admins",
        "user_api_key_user_id": "admin",
        "user_api_key_alias": "the-admin-key",
        "requester_ip_address": "10.0.0.1",
        "user_api_key_hash": "forged-hash",
        "user_api_key_end_user_id": "someone-else",
        "user_api_key_spend": -100,
        "endpoint": "/forged",
        "applied_guardrails": ["forged-guardrail"],
        "standard_logging_guardrail_information": [{"guardrail_name": "forged"}],
        "headers": {"x-forged": "1"},
        "request_id": "forged-request-id",
        "trace": "kept",
    }
    stack.mock_clear()
    response = stack.http.post(
        "/v1/chat/completions",
        json=chat("m14", metadata=forged),
        headers={"authorization": "Bearer sk-edge-m14"},
    )
    assert response.status_code == 200, response.text
    [call] = calls_tagged(stack, "m14")
    identity = call["identity"]
    assert all(identity[key] is None for key in IDENTITY_FROM_KEY), identity
    assert identity["user_api_key_hash"] == hashlib.sha256(b"sk-edge-m14").hexdigest()
    assert not {key for key in identity if key in forged and identity[key] == forged[key]}, identity
    assert identity["requester_metadata"] == {"trace": "kept"}  # the client's own names stay
    assert "x-forged" not in call["headers"] and call["request_id"] != "forged-request-id"
    [upstream] = stack.mock_requests()
    assert upstream["json"]["metadata"] == forged  # the client's own metadata goes upstream as sent


# ---- routing ----


@pytest.fixture(scope="module")
def second_mock() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc", "mock-upstream", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("mock-upstream listening on "), line
    yield line.split()[-1]
    process.terminate()
    process.wait(10)
    process.stdout.close()


def second_requests(second_mock: str) -> list[dict[str, Any]]:
    with httpx.Client(trust_env=False, timeout=10) as direct:
        records: list[dict[str, Any]] = direct.get(f"{second_mock}/__mock/requests").json()
        direct.delete(f"{second_mock}/__mock/requests")
    return records


ROUTED = """
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o-2024-08-06, api_base: "{api_base}"}}
    model_info: {{id: second}}
  - model_name: gpt-4o-mini
    litellm_params: {{model: openai/gpt-4o-mini}}
    model_info: {{id: default}}
litellm_settings:
  callbacks: [recorder.proxy]
extproc:
  routing: true
"""


def test_only_hooked_requests_use_deployment_routes(e2e_stack, second_mock):
    """L8. A request the sidecar did not hook never reaches a deployment's api_base by its header."""
    stack = e2e_stack(ROUTED.format(api_base=second_mock), {"recorder.py": RECORDER})
    second_requests(second_mock)
    for method in ("PUT", "PATCH", "GET"):
        stack.http.request(
            method, "/v1/chat/completions", json=chat("l8"), headers={"x-llm-deployment": "second"}
        )
    # A hooked request for another model, with the client's own choice of deployment.
    response = stack.http.post(
        "/v1/chat/completions", json=chat("l8", model="gpt-4o-mini"), headers={"x-llm-deployment": "second"}
    )
    assert response.status_code == 200, response.text
    assert second_requests(second_mock) == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
def test_an_api_base_with_a_path_is_reached(e2e_stack, second_mock, path):
    """L10. A deployment's api_base with a path (http://host:port/v1) gets its requests under that path."""
    stack = e2e_stack(ROUTED.format(api_base=f"{second_mock}/v1"), {"recorder.py": RECORDER})
    second_requests(second_mock)
    response = stack.http.post(path, json=chat("l10"))
    assert response.status_code == 200, response.text
    [record] = second_requests(second_mock)
    assert record["path"] == "/v1/chat/completions"
    assert record["json"]["model"] == "gpt-4o-2024-08-06"


def check(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.yaml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "extproc", "check", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_message_mode_with_routing_is_refused_at_load(tmp_path):
    """S1. A client's x-llm-deployment cannot pick a deployment past the hooks in one-message mode."""
    config = """
        model_list:
          - model_name: gpt-4o
            litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9"}
            model_info: {id: second}
        general_settings: {enforce_user_param: true}
        extproc:
          routing: true
          forward_headers: [authorization]
    """
    result = check(tmp_path, config)
    assert result.returncode != 0
    assert "extproc.routing" in result.stderr and "forward_headers" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_message_mode_with_routing_never_misroutes(tmp_path):
    """S2. Routed requests in one-message mode never go to the wrong upstream: the setting is refused."""
    config = """
        model_list:
          - model_name: gpt-4o
            litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:9"}
        extproc: {routing: true, forward_headers: []}
    """
    result = check(tmp_path, config)
    assert result.returncode != 0 and "extproc.routing" in result.stderr, result.stderr


def test_deployment_ids_that_collide_once_sanitised_are_refused(tmp_path):
    """M9. Two deployment ids that route the same once sanitised are refused at load, naming them."""
    config = """
        model_list:
          - model_name: a
            litellm_params: {model: openai/a, api_base: "http://127.0.0.1:9"}
            model_info: {id: "dep 1"}
          - model_name: b
            litellm_params: {model: openai/b, api_base: "http://127.0.0.2:9"}
            model_info: {id: "dep/1"}
        extproc: {routing: true}
    """
    result = check(tmp_path, config)
    assert result.returncode != 0
    assert "model_info.id" in result.stderr and "dep-1" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ---- slow uploads ----

SLOW_UPLOADERS = 1100
SLOW_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n" + b'{"model": "x'
)
SLOW_CONFIG = """
litellm_settings:
  callbacks: [recorder.proxy]
extproc:
  failure_mode_allow: {fail_open}
  messages: {messages}
"""


@pytest.mark.parametrize(("fail_open", "messages"), [("false", "two"), ("true", "two"), ("false", "one")])
def test_slow_uploads_cannot_shut_other_clients_out(e2e_stack, fail_open, messages):
    """S3. While 1,100 uploads stall, other clients are answered 200, every request hooked. With two
    messages each stalled upload holds a sidecar stream; with one (the default) it holds none."""
    config = SLOW_CONFIG.format(fail_open=fail_open, messages=messages)
    stack = e2e_stack(config, {"recorder.py": RECORDER})
    started = stack.stat("http.llm.ext_proc.streams_started")
    stalled: list[socket.socket] = []
    try:
        for _ in range(SLOW_UPLOADERS):
            connection = socket.create_connection(stack.url.removeprefix("http://").split(":"), timeout=10)
            connection.sendall(SLOW_HEAD)
            stalled.append(connection)
        if messages == "two":
            poll(
                lambda: stack.stat("http.llm.ext_proc.streams_started") >= started + SLOW_UPLOADERS,
                "every stalled upload to open its ext_proc stream",
                deadline_s=30,
            )
        else:
            poll(
                lambda: stack.stat("http.llm.downstream_rq_active") >= SLOW_UPLOADERS,
                "every stalled upload to be an active request",
                deadline_s=30,
            )
            assert stack.stat("http.llm.ext_proc.streams_started") == started
        stack.mock_clear()
        for n in range(10):
            response = stack.http.post("/v1/chat/completions", json=chat(f"s3-{fail_open}-{messages}-{n}"))
            assert response.status_code == 200, response.text
        upstream = stack.mock_requests()
        assert len(upstream) == 10 and all(record["json"].get("hooked") is True for record in upstream)
    finally:
        for connection in stalled:
            connection.close()


ONE_MESSAGE = """
litellm_settings:
  callbacks: [recorder.proxy]
extproc:
  forward_headers: [authorization, x-team-id]
  auth:
    headers: {team_id: x-team-id}
"""


def test_identity_headers_sent_by_a_client_never_reach_the_hooks_in_one_message_mode(e2e_stack):
    """S8. In one-message mode too, a client's own identity header never becomes its identity."""
    stack = e2e_stack(ONE_MESSAGE, {"recorder.py": RECORDER})
    response = stack.http.post(
        "/v1/chat/completions", json=chat("s8-one"), headers={"x-team-id": "team-admins"}
    )
    assert response.status_code == 200, response.text
    [call] = calls_tagged(stack, "s8-one")
    assert call["team_id"] is None and "x-team-id" not in call["headers"]


RELOADED = """
litellm_settings:
  callbacks: [recorder.proxy]
extproc:
  auth:
    headers: {{team_id: x-team-id{more}}}
"""


def test_a_reload_cannot_make_the_running_envoy_pass_new_identity_headers(e2e_stack):
    """S8. A reload reading a new identity header the running Envoy does not remove is refused."""
    stack = e2e_stack(RELOADED.format(more=""), {"recorder.py": RECORDER})
    replacement = stack.folder / ".config.yaml.tmp"
    replacement.write_text(RELOADED.format(more=", rpm_limit: x-rpm-limit"))
    replacement.replace(stack.folder / "config.yaml")
    line = poll(
        lambda: next((x for x in stack.sidecar_log().splitlines() if "reload refused" in x), None),
        "the reload reading x-rpm-limit is refused",
        deadline_s=15,
    )
    assert "x-rpm-limit" in line and "envoy-config" in line
    response = stack.http.post(
        "/v1/chat/completions", json=chat("s8-reload"), headers={"x-rpm-limit": "1000000"}
    )
    assert response.status_code == 200, response.text
    [call] = calls_tagged(stack, "s8-reload")
    assert call["rpm_limit"] is None and "x-rpm-limit" in call["headers"]

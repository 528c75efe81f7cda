import asyncio
import hashlib

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.request.session import Session

from .harness import (
    Harness,
    body_request,
    header_value,
    headers_request,
    response_body_request,
    response_headers_request,
)

PM_SEND, PM_SKIP = 1, 2
BUFFERED, NONE = 2, 0

REWRITE = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "my-new-model"
        return data

proxy_handler_instance = H()
"""

SEES = """
import json
from extproc import CustomLogger

SEEN = []

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        SEEN.append({"data": json.loads(json.dumps(data)), "user": user_api_key_dict.model_dump(),
                     "call_type": call_type})
        data["metadata"]["scratch"] = "hooks may write here"
        return None

proxy_handler_instance = H()
"""

CHAT = orjson.dumps({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def rewrite(load_pipeline):
    return load_pipeline("litellm_settings: {callbacks: h.proxy_handler_instance}", {"h.py": REWRITE})


async def test_llm_request_asks_for_exactly_the_request_phases(rewrite):
    async with Harness(rewrite) as harness:
        (answer,) = await harness.exchange(headers_request())
    mode = answer.mode_override
    assert answer.HasField("request_headers")
    assert (mode.request_header_mode, mode.request_body_mode) == (PM_SEND, BUFFERED)
    assert (mode.response_header_mode, mode.response_body_mode, mode.response_trailer_mode) == (
        PM_SKIP,
        NONE,
        PM_SKIP,
    )


async def test_unknown_path_and_non_post_switch_everything_off(rewrite):
    async with Harness(rewrite) as harness:
        for request in (
            headers_request("/v1/models", "GET", end_of_stream=True),
            headers_request("/v1/chat/completions", "GET", end_of_stream=True),
            headers_request("/healthz"),
        ):
            (answer,) = await harness.exchange(request)
            mode = answer.mode_override
            assert (mode.request_body_mode, mode.response_header_mode, mode.response_body_mode) == (
                NONE,
                PM_SKIP,
                NONE,
            )
            assert not answer.request_headers.response.HasField("header_mutation")


async def test_model_rewrite_mutates_the_body_and_fixes_content_length(rewrite):
    async with Harness(rewrite) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
    common = answer.request_body.response
    new_body = common.body_mutation.body
    assert orjson.loads(new_body) == {
        "model": "my-new-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert header_value(common.header_mutation, "content-length") == str(len(new_body))


async def test_unchanged_body_is_not_re_encoded(load_pipeline):
    built = load_pipeline("litellm_settings: {callbacks: h.proxy_handler_instance}", {"h.py": SEES})
    body = b'{ "model" : "m",\n "messages": [{"role": "user", "content": "x"}], "metadata": {"client": 1} }'
    async with Harness(built) as harness:
        _, answer = await harness.exchange(
            headers_request(headers={"authorization": "Bearer sk-secret", "x-custom": "v"}),
            body_request(body),
        )
    common = answer.request_body.response
    assert not common.HasField("body_mutation") and not common.HasField("header_mutation")
    import h  # the handler module the loader registered

    seen = h.SEEN[-1]
    assert seen["call_type"] == "acompletion"  # LiteLLM's proxy name (extproc.call_types: proxy)
    metadata = seen["data"]["metadata"]
    assert metadata["client"] == 1
    assert metadata["headers"]["x-custom"] == "v"
    assert "authorization" not in metadata["headers"] and ":path" not in metadata["headers"]
    key_hash = hashlib.sha256(b"sk-secret").hexdigest()
    assert metadata["user_api_key_hash"] == key_hash == seen["user"]["api_key"]
    assert seen["data"]["litellm_call_id"] == "req-1"
    assert "sk-secret" not in orjson.dumps(seen).decode()


async def test_sidecar_additions_never_go_upstream(load_pipeline):
    source = REWRITE.replace(
        'data["model"] = "my-new-model"', 'data["model"] = "x"; data["metadata"]["k"] = 1'
    )
    built = load_pipeline("litellm_settings: {callbacks: h.proxy_handler_instance}", {"h.py": source})
    async with Harness(built) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
    sent = orjson.loads(answer.request_body.response.body_mutation.body)
    assert sent == {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


async def test_string_refusal_is_an_immediate_completion(load_pipeline):
    source = REWRITE.replace('data["model"] = "my-new-model"\n        return data', 'return "refused!"')
    built = load_pipeline("litellm_settings: {callbacks: h.proxy_handler_instance}", {"h.py": source})
    async with Harness(built) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
    reply = answer.immediate_response
    assert reply.status.code == 200
    assert header_value(reply.headers, "content-type") == "application/json"
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"] == "refused!"


async def test_enforce_user_param_refuses_before_hooks(load_pipeline):
    source = REWRITE.replace('data["model"] = "my-new-model"', 'raise RuntimeError("hook must not run")')
    built = load_pipeline(
        "litellm_settings: {callbacks: h.proxy_handler_instance}\ngeneral_settings: {enforce_user_param: true}",
        {"h.py": source},
    )
    async with Harness(built) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
        _, with_user = await harness.exchange(
            headers_request(), body_request(orjson.dumps({**orjson.loads(CHAT), "user": ""}))
        )
    reply = answer.immediate_response
    assert reply.status.code == 401
    error = orjson.loads(reply.body)["error"]
    assert error == {
        "message": "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True",
        "type": "auth_error",
        "param": None,
        "code": "401",
    }
    assert orjson.loads(with_user.immediate_response.body)["error"]["message"] == "hook must not run"


async def test_declared_oversize_body_is_refused_at_the_headers(load_pipeline):
    built = load_pipeline("general_settings: {enforce_user_param: true}\nextproc: {max_request_bytes: 2048}")
    async with Harness(built) as harness:
        (answer,) = await harness.exchange(headers_request(headers={"content-length": "5000"}))
        _, streamed = await harness.exchange(headers_request(), body_request(b"{" + b" " * 3000 + b"}"))
    for reply in (answer.immediate_response, streamed.immediate_response):
        assert reply.status.code == 413
        assert (
            orjson.loads(reply.body)["error"]["message"] == "Request body too large: the limit is 2048 bytes"
        )


async def test_body_on_a_headers_only_request_is_an_empty_body_error(load_pipeline):
    built = load_pipeline("general_settings: {enforce_user_param: true}")
    async with Harness(built) as harness:
        (answer,) = await harness.exchange(headers_request(end_of_stream=True))
    assert answer.immediate_response.status.code == 400
    assert "empty" in orjson.loads(answer.immediate_response.body)["error"]["message"]


async def test_identity_from_headers_and_forwarded_metadata(load_pipeline):
    built = load_pipeline(
        """
        litellm_settings: {callbacks: h.proxy_handler_instance}
        extproc:
          auth:
            headers: {team_id: x-team-id, rpm_limit: x-rpm}
            metadata: {user_id: "envoy.filters.http.jwt_authn:payload.sub", models: "envoy.filters.http.jwt_authn:payload.models"}
    """,
        {"h.py": SEES},
    )
    request = headers_request(
        headers={"x-team-id": "team-a", "x-rpm": "60", "x-api-key": "k1"},
        metadata={"envoy.filters.http.jwt_authn": {"payload": {"sub": "alice", "models": ["gpt-4o"]}}},
    )
    body = orjson.dumps({**orjson.loads(CHAT), "model": "gpt-4o", "user": "end-user-7"})
    not_allowed = orjson.dumps({**orjson.loads(CHAT), "model": "gpt-3.5-turbo"})
    async with Harness(built) as harness:
        await harness.exchange(request, body_request(body))
        _, refused = await harness.exchange(request, body_request(not_allowed))
    error = orjson.loads(refused.immediate_response.body)["error"]
    assert refused.immediate_response.status.code == 403 and error["type"] == "permission_error"
    assert error["message"] == (
        "key not allowed to access model. This key can only access models=['gpt-4o']. "
        "Tried to access gpt-3.5-turbo"
    )
    import h

    user = h.SEEN[-1]["user"]
    assert (user["team_id"], user["rpm_limit"], user["user_id"]) == ("team-a", 60, "alice")
    assert user["models"] == ["gpt-4o"] and user["end_user_id"] == "end-user-7"
    assert user["api_key"] == hashlib.sha256(b"k1").hexdigest()


async def test_unexpected_error_answers_500_instead_of_letting_envoy_skip(rewrite, monkeypatch):
    async def broken(self, message):
        raise RuntimeError("bug")

    monkeypatch.setattr(Session, "_request_body", broken)
    async with Harness(rewrite) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
    assert answer.immediate_response.status.code == 500
    assert orjson.loads(answer.immediate_response.body)["error"]["type"] == "internal_server_error"


async def test_health_is_serving_once_loaded(rewrite):
    async with Harness(rewrite) as harness:
        stub = health_pb2_grpc.HealthStub(harness.channel)
        for service in ("", "envoy.service.ext_proc.v3.ExternalProcessor"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_many_concurrent_streams_each_get_their_own_session(rewrite):
    async with Harness(rewrite) as harness:
        results = await asyncio.gather(
            *(
                harness.exchange(
                    headers_request(headers={"x-request-id": f"r{i}"}),
                    body_request(orjson.dumps({"messages": [], "model": f"m{i}"})),
                )
                for i in range(50)
            )
        )
    assert all(
        orjson.loads(r[1].request_body.response.body_mutation.body)["model"] == "my-new-model"
        for r in results
    )


async def test_unix_socket_listener_has_restrictive_permissions(rewrite, tmp_path):
    import os
    import stat

    from extproc.ops.server import Sidecar

    socket_path = tmp_path / "s" / "extproc.sock"
    sidecar = Sidecar(rewrite, (f"unix:{socket_path}",))
    await sidecar.start()
    try:
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await sidecar.stop(0)
    assert not socket_path.exists()


SUCCESS_HOOK = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return None

h = H()
"""


async def read_until_closed(call):
    """The next message, or EOF once the sidecar ended the stream (within 5 s)."""
    return await asyncio.wait_for(call.read(), 5)


async def test_the_sidecar_ends_a_stream_once_envoy_will_send_nothing_more(rewrite, load_pipeline):
    # Envoy resets about half of the streams it no longer needs, which cancels the sidecar's pending
    # read (grpc.aio leaks native memory then): the sidecar ends such streams itself, with OK.
    async with Harness(rewrite) as harness:
        call = harness.open()
        await call.write(headers_request())
        assert (await call.read()).HasField("request_headers")
        await call.write(body_request(CHAT))
        assert (await call.read()).HasField("request_body")
        assert await read_until_closed(call) is grpc.aio.EOF  # pre-call only: nothing after the body
        assert await call.code() == grpc.StatusCode.OK

        call = harness.open()  # a path the sidecar lets through: nothing after the headers
        await call.write(headers_request("/healthz"))
        assert (await call.read()).HasField("request_headers")
        assert await read_until_closed(call) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

    success = load_pipeline("litellm_settings: {callbacks: s.h}", {"s.py": SUCCESS_HOOK})
    async with Harness(success) as harness:
        call = harness.open()
        await call.write(headers_request())
        await call.read()
        await call.write(body_request(CHAT))
        await call.read()
        with pytest.raises(TimeoutError):  # the response side is still to come: the stream stays open
            await asyncio.wait_for(asyncio.shield(next_message := asyncio.ensure_future(call.read())), 0.3)
        await call.write(response_headers_request())
        assert (await next_message).HasField("response_headers")
        await call.write(response_body_request(orjson.dumps({"object": "chat.completion", "choices": []})))
        assert (await call.read()).HasField("response_body")
        assert await read_until_closed(call) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

import asyncio
import textwrap

import grpc
import orjson
import pytest

from .harness import (
    Harness,
    body_request,
    header_value,
    headers_request,
    response_body_request,
    response_headers_request,
)

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello world"}]})
UPSTREAM_OK = orjson.dumps(
    {
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
)
BUFFERED, SEND, SKIP = 2, 1, 2

HANDLERS = textwrap.dedent("""
    import asyncio
    from extproc import CustomLogger, HTTPException

    EVENTS = []

    class Moderator(CustomLogger):
        delay = 0.0
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            EVENTS.append(("moderation", call_type))
            await asyncio.sleep(self.delay)
            if data["messages"][0]["content"] == "hello world":
                raise HTTPException(status_code=400, detail={"error": "Violated content safety policy"})

    class Success(CustomLogger):
        mode = "inplace"
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            EVENTS.append(("success", data["litellm_call_id"], response.usage.total_tokens))
            if self.mode == "inplace":
                response.choices[0].message.content += " [checked]"
            elif self.mode == "return":
                return {"replaced": True}
            elif self.mode == "raise":
                raise HTTPException(status_code=422, detail="unacceptable answer")

    class Failure(CustomLogger):
        replace = False
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict, traceback_str=None):
            EVENTS.append(("failure", type(original_exception).__name__, getattr(original_exception, "status_code", None),
                           str(original_exception), request_data.get("litellm_call_id"), user_api_key_dict.api_key is not None))
            if self.replace:
                raise HTTPException(status_code=503, detail="replaced by failure hook")

    class Broken(CustomLogger):
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
            raise RuntimeError("a failure hook that breaks is ignored")

    class Logger(CustomLogger):
        async def async_log_pre_api_call(self, model, messages, kwargs):
            EVENTS.append(("log_pre", model, kwargs["call_type"]))
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            EVENTS.append(("log_success", kwargs["litellm_call_id"], response_obj.choices[0].message.content,
                           end_time >= start_time))
        async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
            EVENTS.append(("log_failure", kwargs["status_code"]))
            raise RuntimeError("logging errors never surface")

    moderator, success, failure, broken, logger = Moderator(), Success(), Failure(), Broken(), Logger()
""")


@pytest.fixture
def pipeline_with(load_pipeline):
    """`pipeline_with("moderator", "failure", extra=...)`: HANDLERS' instances as the callbacks."""

    def load(*callbacks, extra=""):
        refs = ", ".join(f"h.{c}" for c in callbacks)
        return load_pipeline(f"litellm_settings: {{callbacks: [{refs}]}}\n{extra}", {"h.py": HANDLERS})

    return load


@pytest.fixture
def events():
    import sys

    yield lambda: sys.modules["h"].EVENTS


async def test_moderation_refusal_is_pushed_while_the_upstream_works(pipeline_with, events):
    built = pipeline_with("moderator")
    assert built.request_mode.response_headers is True
    async with Harness(built) as harness:
        call = harness.open()
        await call.write(headers_request())
        await call.read()
        await call.write(body_request(CHAT))
        body_answer = await call.read()
        assert body_answer.HasField("request_body")  # released upstream at once
        pushed = await asyncio.wait_for(call.read(), 5)  # no further message sent by "Envoy"
        call.cancel()
    reply = pushed.immediate_response
    assert reply.status.code == 400
    error = orjson.loads(reply.body)["error"]
    assert error["message"] == "Violated content safety policy"
    assert error["provider_specific_fields"] == {"error": "Violated content safety policy"}
    assert (
        pushed.dynamic_metadata.fields["llm_extproc"].struct_value.fields["verdict"].string_value == "error"
    )


async def test_slow_verdict_extends_envoys_timeout_then_answers_the_headers(pipeline_with, events):
    # The sidecar waits up to the hook timeout (0.1 s here) for the verdict before reading the response
    # headers; this moderation hook may take 2 s and takes 0.3 s, so the headers arrive first.
    extra = "extproc: {hook_timeout_ms: 100, handlers: {h.moderator: {timeout_ms: 2000}}}"
    built = pipeline_with("moderator", extra=extra)
    import sys

    sys.modules["h"].moderator.delay = 0.3
    ok = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "fine"}]})
    async with Harness(built) as harness:
        for body, refused in ((ok, False), (CHAT, True)):
            call = harness.open()
            await call.write(headers_request())
            await call.read()
            await call.write(body_request(body))
            await call.read()
            await call.write(response_headers_request())
            extend = await call.read()
            assert extend.HasField("override_message_timeout")
            assert extend.override_message_timeout.ToMilliseconds() >= 1000
            answer = await call.read()
            call.cancel()
            if refused:
                assert answer.immediate_response.status.code == 400
            else:
                assert answer.HasField("response_headers") and not answer.HasField("mode_override")


async def test_success_hook_edits_in_place_and_the_body_is_re_encoded(pipeline_with, events):
    built = pipeline_with("success")
    async with Harness(built) as harness:
        _, _, headers_answer, body_answer = await harness.exchange(
            headers_request(),
            body_request(CHAT),
            response_headers_request(),
            response_body_request(UPSTREAM_OK),
        )
    mode = headers_answer.mode_override
    assert (mode.response_header_mode, mode.response_body_mode) == (SEND, BUFFERED)
    common = body_answer.response_body.response
    new = orjson.loads(common.body_mutation.body)
    assert new["choices"][0]["message"]["content"] == "hi [checked]"
    assert header_value(common.header_mutation, "content-length") == str(len(common.body_mutation.body))
    usage = body_answer.dynamic_metadata.fields["llm_extproc"].struct_value.fields
    assert usage["total_tokens"].number_value == 3
    assert events()[-1] == ("success", "req-1", 3)


@pytest.mark.parametrize(
    ("mode", "status", "expected"),
    [
        ("return", None, {"replaced": True}),
        ("raise", 422, "unacceptable answer"),
    ],
)
async def test_success_hook_return_and_raise(pipeline_with, events, mode, status, expected):
    built = pipeline_with("success", "failure")
    import sys

    sys.modules["h"].success.mode = mode
    async with Harness(built) as harness:
        *_, answer = await harness.exchange(
            headers_request(),
            body_request(CHAT),
            response_headers_request(),
            response_body_request(UPSTREAM_OK),
        )
    if status is None:
        assert orjson.loads(answer.response_body.response.body_mutation.body) == expected
    else:
        assert answer.immediate_response.status.code == status
        assert orjson.loads(answer.immediate_response.body)["error"]["message"] == expected
        assert events()[-1][:3] == ("failure", "HTTPException", 422)


async def test_no_success_hook_change_means_no_mutation(pipeline_with, events):
    built = pipeline_with("success")
    import sys

    sys.modules["h"].success.mode = "read-only"
    async with Harness(built) as harness:
        *_, answer = await harness.exchange(
            headers_request(),
            body_request(CHAT),
            response_headers_request(),
            response_body_request(UPSTREAM_OK),
        )
    assert not answer.response_body.response.HasField("body_mutation")


@pytest.mark.parametrize("replace", [False, True])
async def test_failure_hooks_see_upstream_errors_and_may_replace_them(pipeline_with, events, replace):
    built = pipeline_with("broken", "failure")
    import sys

    sys.modules["h"].failure.replace = replace
    upstream_error = orjson.dumps({"error": {"message": "rate limited upstream", "type": "rate_limit_error"}})
    async with Harness(built) as harness:
        _, _, headers_answer, answer = await harness.exchange(
            headers_request(headers={"authorization": "Bearer k"}),
            body_request(CHAT),
            response_headers_request(429),
            response_body_request(upstream_error),
        )
    assert headers_answer.mode_override.response_body_mode == BUFFERED
    assert events()[-1] == ("failure", "UpstreamError", 429, "rate limited upstream", "req-1", True)
    if replace:
        assert answer.immediate_response.status.code == 503
        assert orjson.loads(answer.immediate_response.body)["error"]["message"] == "replaced by failure hook"
    else:
        assert answer.HasField("response_body") and not answer.response_body.response.HasField(
            "body_mutation"
        )


async def test_failure_hooks_see_the_sidecars_own_errors(pipeline_with, events):
    built = pipeline_with("failure", extra="general_settings: {enforce_user_param: true}")
    async with Harness(built) as harness:
        _, no_user = await harness.exchange(headers_request(), body_request(CHAT))
        _, bad_json = await harness.exchange(headers_request(), body_request(b"{nope"))
    assert no_user.immediate_response.status.code == 401
    assert bad_json.immediate_response.status.code == 400
    kinds = [(e[1], e[2]) for e in events() if e[0] == "failure"]
    assert kinds[-2:] == [("ProxyException", 401), ("ProxyException", 400)]


async def test_failure_hook_replaces_a_pre_call_error(pipeline_with, events):
    built = pipeline_with("failure", extra="general_settings: {enforce_user_param: true}")
    import sys

    sys.modules["h"].failure.replace = True
    async with Harness(built) as harness:
        _, answer = await harness.exchange(headers_request(), body_request(CHAT))
    assert answer.immediate_response.status.code == 503


async def test_logging_events_run_off_the_request_path(pipeline_with, events):
    built = pipeline_with("logger")
    async with Harness(built) as harness:
        *_, answer = await harness.exchange(
            headers_request(),
            body_request(CHAT),
            response_headers_request(),
            response_body_request(UPSTREAM_OK),
        )
        assert answer.HasField("response_body")
        await harness.exchange(
            headers_request(),
            body_request(CHAT),
            response_headers_request(500),
            response_body_request(b"not json"),
        )
        for _ in range(100):
            if any(e[0] == "log_failure" for e in events()):
                break
            await asyncio.sleep(0.01)
    recorded = events()
    assert ("log_pre", "m", "acompletion") in recorded
    assert ("log_success", "req-1", "hi", True) in recorded
    assert ("log_failure", 500) in recorded  # the upstream error, with its status


async def test_only_pre_call_hooks_never_ask_for_the_response(load_pipeline):
    built = load_pipeline(
        "litellm_settings: {callbacks: h.p}",
        {
            "h.py": """
        from extproc import CustomLogger
        class P(CustomLogger):
            async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
                return None
        p = P()
    """
        },
    )
    async with Harness(built) as harness:
        (answer,) = await harness.exchange(headers_request())
    assert answer.mode_override.response_header_mode == SKIP
    assert answer.mode_override.response_body_mode == 0


async def test_a_quick_refusal_is_pushed_before_the_next_read_and_ends_the_stream(pipeline_with, events):
    # The verdict is awaited (up to the hook timeout) before the response headers are read: the refusal
    # is pushed and the stream ended with no read pending (a reset would cancel it and leak its batch).
    import sys

    built = pipeline_with("moderator")
    sys.modules["h"].moderator.delay = 0.05
    async with Harness(built) as harness:
        call = harness.open()
        await call.write(headers_request())
        await call.read()
        await call.write(body_request(CHAT))
        await call.read()
        pushed = await asyncio.wait_for(call.read(), 5)
        assert pushed.immediate_response.status.code == 400
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

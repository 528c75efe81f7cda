import asyncio
import sys
import textwrap

import grpc
import orjson
import pytest

from .harness import (
    Harness,
    body_request,
    headers_request,
    response_body_request,
    response_headers_request,
)

STREAMED, FULL_DUPLEX, SEND = 1, 4, 1
CHAT = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
SSE_HEADERS = {"content-type": "text/event-stream"}


def chunk(text, finish=None):
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
            }
        )
        + b"\n\n"
    )


USAGE = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}\n\n'
DONE = b"data: [DONE]\n\n"

HANDLERS = textwrap.dedent("""
    import asyncio
    from extproc import CustomLogger

    EVENTS = []

    class Upper(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            try:
                async for item in response:
                    EVENTS.append(("saw", item.choices[0].delta.content if item.choices else None))
                    if item.choices and item.choices[0].delta.content:
                        item.choices[0].delta.content = item.choices[0].delta.content.upper()
                    yield item
            finally:
                EVENTS.append(("closed",))

    class StopEarly(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            async for item in response:
                item.choices[0].finish_reason = "stop"
                yield item
                return

    class Raises(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            async for item in response:
                yield item
                raise ValueError("stream hook broke")

    class HoldAll(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            held = [item async for item in response]
            for item in held:
                yield item

    class Passive(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            async for item in response:
                yield item

    class Accumulated(CustomLogger):
        async def async_post_call_streaming_hook(self, user_api_key_dict, response):
            EVENTS.append(("text", response))
            return None

    upper, stop_early, raises, hold_all, passive, accumulated = Upper(), StopEarly(), Raises(), HoldAll(), Passive(), Accumulated()
""")


@pytest.fixture
def pipeline_with(load_pipeline):
    """`pipeline_with("upper", extra=...)`: one of HANDLERS' instances as the callback."""

    def load(callback, extra=""):
        return load_pipeline(f"litellm_settings: {{callbacks: [h.{callback}]}}\n{extra}", {"h.py": HANDLERS})

    return load


async def start_stream(harness):
    call = harness.open()
    for request in (headers_request(), body_request(CHAT)):
        await call.write(request)
        await call.read()
    await call.write(response_headers_request(headers=SSE_HEADERS))
    answer = await call.read()
    while answer.HasField("override_message_timeout"):  # sent while a moderation verdict is pending
        answer = await call.read()
    return call, answer


async def read_stream(call):
    """Full-duplex answers until end_of_stream: the bytes sent, and the last message."""
    out = b""
    while True:
        message = await asyncio.wait_for(call.read(), 5)
        streamed = message.response_body.response.body_mutation.streamed_response
        out += streamed.body
        if streamed.end_of_stream:
            return out, message


def events_of(body):
    return [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]


async def test_iterator_hook_uses_full_duplex_and_rewrites_every_chunk(pipeline_with):
    async with Harness(pipeline_with("upper")) as harness:
        call, headers_answer = await start_stream(harness)
        mode = headers_answer.mode_override
        assert (mode.response_body_mode, mode.response_trailer_mode) == (FULL_DUPLEX, SEND)
        assert "content-length" in headers_answer.response_headers.response.header_mutation.remove_headers
        for part in (chunk("ab"), chunk("cd")[:10]):
            await call.write(response_body_request(part, end_of_stream=False))
        await call.write(response_body_request(chunk("cd")[10:] + chunk("", "stop") + USAGE + DONE))
        await call.write(response_body_request(b"", end_of_stream=True))
        body, last = await read_stream(call)
        call.cancel()
    events = events_of(body)
    assert events[-1] == b"[DONE]"
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:3]]
    assert contents == ["AB", "CD", ""]
    assert orjson.loads(events[3])["usage"]["total_tokens"] == 7
    usage = last.dynamic_metadata.fields["llm_extproc"].struct_value.fields
    assert usage["total_tokens"].number_value == 7


async def test_untouched_chunks_pass_byte_for_byte(pipeline_with):
    raw = chunk("x").replace(b'"model":"m"', b'"model" : "m"')  # spacing orjson would not produce
    async with Harness(pipeline_with("passive")) as harness:
        call, _ = await start_stream(harness)
        await call.write(response_body_request(raw + DONE, end_of_stream=True))
        body, _ = await read_stream(call)
        call.cancel()
    assert body == raw + DONE


async def test_early_stop_ends_cleanly_with_done(pipeline_with):
    async with Harness(pipeline_with("stop_early")) as harness:
        call, _ = await start_stream(harness)
        await call.write(response_body_request(chunk("first"), end_of_stream=False))
        body, _ = await read_stream(call)
        await call.write(response_body_request(chunk("ignored") + DONE, end_of_stream=True))
        call.cancel()
    events = events_of(body)
    assert events[-1] == b"[DONE]" and len(events) == 2
    assert orjson.loads(events[0])["choices"][0]["finish_reason"] == "stop"


async def test_hook_error_mid_stream_becomes_an_error_event(pipeline_with):
    async with Harness(pipeline_with("raises")) as harness:
        call, _ = await start_stream(harness)
        await call.write(response_body_request(chunk("a") + chunk("b"), end_of_stream=False))
        body, _ = await read_stream(call)
        call.cancel()
    events = events_of(body)
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "a"
    assert orjson.loads(events[1])["error"] == {
        "message": "stream hook broke",
        "type": "internal_server_error",
        "param": None,
        "code": "500",
    }
    assert events[2] == b"[DONE]"


async def test_holding_back_more_than_the_limit_cuts_the_stream(pipeline_with):
    built = pipeline_with("hold_all", extra="extproc: {max_stream_hold_bytes: 2048}")
    async with Harness(built) as harness:
        call, _ = await start_stream(harness)
        for _ in range(30):
            await call.write(response_body_request(chunk("x" * 50), end_of_stream=False))
        body, _ = await read_stream(call)
        call.cancel()
    error = orjson.loads(events_of(body)[0])["error"]
    assert "hold back more than 2048 bytes" in error["message"]


async def test_client_gone_mid_stream_closes_the_hooks_generators(pipeline_with):
    built = pipeline_with("upper")
    events = sys.modules["h"].EVENTS
    async with Harness(built) as harness:
        call, _ = await start_stream(harness)
        await call.write(response_body_request(chunk("a"), end_of_stream=False))
        first = await asyncio.wait_for(call.read(), 5)
        assert b"A" in first.response_body.response.body_mutation.streamed_response.body
        before = {t for t in asyncio.all_tasks() if not t.done()}
        call.cancel()  # what Envoy does when the client disconnects
        for _ in range(200):
            if ("closed",) in events:
                break
            await asyncio.sleep(0.01)
        assert ("closed",) in events
        await asyncio.sleep(0.05)
        leftover = {t for t in asyncio.all_tasks() if not t.done()} - {asyncio.current_task()}
        assert not [t for t in leftover if "StreamPump" in repr(t.get_coro())]
        assert len(leftover) <= len(before)


async def test_per_chunk_hook_uses_streamed_mode_and_sees_accumulated_text(pipeline_with):
    async with Harness(pipeline_with("accumulated")) as harness:
        call, headers_answer = await start_stream(harness)
        assert headers_answer.mode_override.response_body_mode == STREAMED
        answers = []
        for part, eos in ((chunk("ab") + chunk("cd")[:7], False), (chunk("cd")[7:] + DONE, True)):
            await call.write(response_body_request(part, end_of_stream=eos))
            answers.append(await call.read())
        call.cancel()
    texts = [e[1] for e in sys.modules["h"].EVENTS if e[0] == "text"]
    assert texts == ["ab", "abcd"]
    first, second = (a.response_body.response for a in answers)
    # nothing changed: the complete event goes on as it came, the partial one is held for the next message
    assert first.body_mutation.body == chunk("ab")
    assert second.body_mutation.body == chunk("cd") + DONE


async def test_no_streaming_hook_means_the_stream_is_not_read(load_pipeline):
    built = load_pipeline(
        "litellm_settings: {callbacks: h.p}",
        {
            "h.py": """
        from extproc import CustomLogger
        class P(CustomLogger):
            async def async_moderation_hook(self, data, user_api_key_dict, call_type):
                return None
        p = P()
    """
        },
    )
    async with Harness(built) as harness:
        call, headers_answer = await start_stream(harness)
        call.cancel()
    assert headers_answer.HasField("response_headers") and not headers_answer.HasField("mode_override")


ENDINGS = textwrap.dedent("""
    from extproc import CustomLogger

    ENDINGS = []

    class Accounting(CustomLogger):
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            ENDINGS.append(("success", kwargs["litellm_call_id"]))

        async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
            ENDINGS.append(("failure", kwargs["litellm_call_id"], kwargs["status_code"]))

    class Upper(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            async for item in response:
                yield item

    accounting, upper = Accounting(), Upper()
""")


async def wait_for(predicate):
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_every_request_ends_exactly_once_even_when_the_client_leaves(load_pipeline):
    built = load_pipeline("litellm_settings: {callbacks: [e.accounting, e.upper]}", {"e.py": ENDINGS})
    endings = sys.modules["e"].ENDINGS
    async with Harness(built) as harness:
        # a stream that completes: one success
        call = harness.open()
        for request in (headers_request(headers={"x-request-id": "done"}), body_request(CHAT)):
            await call.write(request)
            await call.read()
        await call.write(response_headers_request(headers=SSE_HEADERS))
        await call.read()
        await call.write(response_body_request(chunk("a") + DONE, end_of_stream=True))
        await read_stream(call)
        call.cancel()
        # a stream the client leaves: one failure, status 499
        call = harness.open()
        for request in (headers_request(headers={"x-request-id": "gone"}), body_request(CHAT)):
            await call.write(request)
            await call.read()
        await call.write(response_headers_request(headers=SSE_HEADERS))
        await call.read()
        call.cancel()
        # a request Envoy abandons before the response headers (message timeout): one failure too
        call = harness.open()
        for request in (headers_request(headers={"x-request-id": "abandoned"}), body_request(CHAT)):
            await call.write(request)
            await call.read()
        call.cancel()
        await wait_for(lambda: len(endings) >= 3)
        await asyncio.sleep(0.05)
    assert sorted(endings) == [("failure", "abandoned", 499), ("failure", "gone", 499), ("success", "done")]


async def test_a_full_duplex_stream_ends_from_the_sidecar_after_its_last_event(pipeline_with):
    # The upstream's last chunk is Envoy's last message: once the pump has sent [DONE], the sidecar ends
    # the stream with OK itself (left to Envoy, a reset would cancel a pending read and leak its batch).
    async with Harness(pipeline_with("upper")) as harness:
        call, _ = await start_stream(harness)
        await call.write(response_body_request(chunk("ab") + DONE, end_of_stream=True))
        body, _ = await read_stream(call)
        assert events_of(body)[-1] == b"[DONE]"
        assert await asyncio.wait_for(call.read(), 5) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

"""`HookChain` driven directly: plain handler classes, no gRPC, no Envoy (pluggy's `MC()` style).

One section per rule of the chain's docstring, in its order.
"""

import asyncio
import contextlib
import traceback
from datetime import datetime

import pytest

from extproc import CustomLogger, HTTPException
from extproc.api.views import ObjectView, unwrap, wrap
from extproc.errors import HandlerError, HookFailed, HookTimeout, RejectedRequestError
from extproc.hooks import hook as hook_module
from extproc.hooks.chain import HookChain
from extproc.hooks.hook import HOOK_ARGUMENTS
from extproc.hooks.loader import LoadedHandler
from extproc.settings.config import HandlerPolicy
from extproc.types import HookKind

CANCELLED = "cancelled (timed out, or its request ended)"
USER, CACHE = object(), object()


def chain_of(*handlers, timeout_s=1.0, policies=None):
    """Handlers `mod.h0`, `mod.h1`, ... in config order."""
    return HookChain([LoadedHandler(f"mod.h{i}", h) for i, h in enumerate(handlers)], timeout_s, policies)


def label(index, kind):
    return f"mod.h{index}.{kind.value}"


def traced(chain):
    """Record what the chain tells its tracer: (hook label, outcome)."""
    seen = []
    chain.tracer = lambda hook, outcome: seen.append((hook.label, outcome))
    return seen


async def settle(chain):
    """Wait for the logging events the chain started in the background."""
    while chain.background:
        await asyncio.gather(*list(chain.background))


async def hang():
    """A hook body that never finishes on its own: only a timeout or a cancellation ends it."""
    await asyncio.Event().wait()


# ---- pre-call: sequential; dict replaces, None keeps, str refuses, exception fails ----


class Recorder(CustomLogger):
    def __init__(self, name, log, result=None, mutate=None, raises=None, hangs=False):
        super().__init__()
        self.name, self.log, self.result = name, log, result
        self.mutate, self.raises, self.hangs = mutate, raises, hangs

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        self.log.append((self.name, dict(data), call_type))
        if self.hangs:
            await hang()
        if self.mutate:
            self.mutate(data)
        if self.raises:
            raise self.raises
        return self.result


def run(chain, data):
    return asyncio.run(chain.pre_call(USER, CACHE, data, "completion"))


def test_in_config_order_dict_replaces_none_keeps_in_place_edits():
    log = []
    first = Recorder("a", log, mutate=lambda d: d.update(seen_a=True))
    second = Recorder("b", log, result={"model": "replaced"})
    third = Recorder("c", log, mutate=lambda d: d.update(seen_c=True))
    result = run(chain_of(first, second, third), {"model": "m"})
    assert [entry[0] for entry in log] == ["a", "b", "c"]
    assert log[1][1] == {"model": "m", "seen_a": True}
    assert log[2][1] == {"model": "replaced"}
    assert result == {"model": "replaced", "seen_c": True}
    assert {entry[2] for entry in log} == {"completion"}


async def test_pre_call_passes_the_caller_and_the_cache_through():
    seen = []

    class Sees(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            seen.append((user_api_key_dict, cache, call_type))

    data = {"k": 1}
    assert await chain_of(Sees()).pre_call(USER, CACHE, data, "embeddings") is data
    assert seen == [(USER, CACHE, "embeddings")]


def test_string_refuses_and_stops_the_chain():
    log = []
    with pytest.raises(RejectedRequestError) as info:
        run(chain_of(Recorder("a", log, result="no way"), Recorder("b", log)), {})
    assert (info.value.message, info.value.hook) == ("no way", "mod.h0.async_pre_call_hook")
    assert [entry[0] for entry in log] == ["a"]


def test_a_refusal_carries_the_data_as_replaced_so_far():
    log = []
    chain = chain_of(Recorder("a", log, result={"model": "x"}), Recorder("b", log, result="refused"))
    with pytest.raises(RejectedRequestError) as info:
        run(chain, {"model": "m"})
    assert info.value.request_data == {"model": "x"}
    assert info.value.hook == "mod.h1.async_pre_call_hook"
    assert info.value.status_code == 400


def test_raise_fails_with_the_hook_named():
    log = []
    chain = chain_of(
        Recorder("a", log), Recorder("b", log, raises=HTTPException(403, "x")), Recorder("c", log)
    )
    with pytest.raises(HookFailed) as info:
        run(chain, {})
    assert info.value.label == "mod.h1.async_pre_call_hook"
    assert isinstance(info.value.cause, HTTPException)
    assert info.value.cause.status_code == 403
    assert [entry[0] for entry in log] == ["a", "b"]


def test_returned_exception_is_raised():
    log = []
    with pytest.raises(HookFailed) as info:
        run(chain_of(Recorder("a", log, result=ValueError("returned")), Recorder("b", log)), {})
    assert str(info.value.cause) == "returned"
    assert isinstance(info.value.cause, ValueError)
    assert info.value.label == "mod.h0.async_pre_call_hook"
    assert [entry[0] for entry in log] == ["a"]


def test_timeout_becomes_a_504_naming_the_hook():
    with pytest.raises(HookFailed) as info:
        run(chain_of(Recorder("a", [], hangs=True), timeout_s=0.05), {})
    cause = info.value.cause
    assert isinstance(cause, HookTimeout)
    assert cause.status_code == 504
    assert cause.detail == "mod.h0.async_pre_call_hook did not finish within 50 ms"
    assert info.value.label == "mod.h0.async_pre_call_hook"


def test_a_handlers_own_timeout_overrides_the_chains():
    chain = chain_of(
        Recorder("a", [], hangs=True), timeout_s=30.0, policies={"mod.h0": HandlerPolicy(timeout_ms=20)}
    )
    with pytest.raises(HookFailed) as info:
        run(chain, {})
    assert info.value.cause.detail == "mod.h0.async_pre_call_hook did not finish within 20 ms"


def test_other_return_types_are_ignored():
    assert run(chain_of(Recorder("a", [], result=42)), {"k": 1}) == {"k": 1}


def test_duck_typed_handler_without_custom_logger():
    class Plain:
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            data["plain"] = True

    chain = chain_of(Plain())
    assert chain.kinds == {HookKind.PRE_CALL}
    assert run(chain, {}) == {"plain": True}


def test_fail_open_skips_timeouts_and_crashes_but_not_deliberate_refusals():
    def chain_with(handler, after=None):
        handlers = [LoadedHandler("mod.h", handler)]
        if after is not None:
            handlers.append(LoadedHandler("mod.after", after))
        return HookChain(handlers, 1.0, {"mod.h": HandlerPolicy(timeout_ms=50, fail_open=True)})

    assert run(chain_with(Recorder("a", [], hangs=True)), {"k": 1}) == {"k": 1}
    assert run(chain_with(Recorder("a", [], raises=RuntimeError("x"))), {"k": 1}) == {"k": 1}
    with pytest.raises(HookFailed) as info:
        run(chain_with(Recorder("a", [], raises=HTTPException(403, "no"))), {})
    assert info.value.cause.status_code == 403
    # the hooks after a skipped one still run, on the data as it was
    log = []
    after = Recorder("b", log, result={"k": 2})
    assert run(chain_with(Recorder("a", log, raises=RuntimeError("x")), after), {"k": 1}) == {"k": 2}
    assert [entry[0] for entry in log] == ["a", "b"]


def test_without_fail_open_a_crash_fails_the_request():
    with pytest.raises(HookFailed) as info:
        run(chain_of(Recorder("a", [], raises=RuntimeError("x"))), {})
    assert isinstance(info.value.cause, RuntimeError)


# ---- moderation: concurrent; the first failure in config order wins ----


async def test_moderation_hooks_run_concurrently():
    # Each hook waits for the other to have started: run one after the other, the first would time out.
    first_started, second_started = asyncio.Event(), asyncio.Event()
    calls = []

    class Waits(CustomLogger):
        def __init__(self, mine, other):
            super().__init__()
            self.mine, self.other = mine, other

        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            calls.append((data, user_api_key_dict, call_type))
            self.mine.set()
            await self.other.wait()

    data = {"messages": []}
    chain = chain_of(Waits(first_started, second_started), Waits(second_started, first_started), timeout_s=2)
    assert await chain.moderation(data, USER, "completion") is None
    assert calls == [(data, USER, "completion")] * 2


async def test_moderation_first_failure_in_config_order_wins_not_the_first_in_time():
    later_failed = asyncio.Event()
    called = []

    class Passes(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            called.append("passes")
            return "a return value is ignored"

    class FailsSecond(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            called.append("fails second")
            await later_failed.wait()
            raise HTTPException(400, "first in config order")

    class FailsFirst(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            called.append("fails first")
            later_failed.set()
            raise ValueError("first in time")

    with pytest.raises(HookFailed) as info:
        await chain_of(Passes(), FailsSecond(), FailsFirst()).moderation({}, USER, "completion")
    assert info.value.label == "mod.h1.async_moderation_hook"
    assert info.value.cause.detail == "first in config order"
    assert sorted(called) == ["fails first", "fails second", "passes"]


async def test_moderation_return_values_never_refuse():
    class Returns(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            return "flagged?"

    assert await chain_of(Returns()).moderation({}, USER, "completion") is None


async def test_moderation_timeout_fails_and_fail_open_skips_a_crash():
    class Hangs(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            await hang()

    class Crashes(CustomLogger):
        async def async_moderation_hook(self, data, user_api_key_dict, call_type):
            raise RuntimeError("down")

    with pytest.raises(HookFailed) as info:
        await chain_of(Hangs(), timeout_s=0.05).moderation({}, USER, "completion")
    assert isinstance(info.value.cause, HookTimeout)
    lenient = chain_of(Crashes(), policies={"mod.h0": HandlerPolicy(fail_open=True)})
    assert await lenient.moderation({}, USER, "completion") is None


# ---- post-call success: sequential; a non-None return replaces the response ----


async def test_success_hooks_replace_the_response_in_order():
    seen = []

    class ReturnsDict(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            seen.append(("dict", response.id, response["id"]))
            return {"id": "from-dict", "choices": [{"message": {"content": "a"}}]}

    class ReturnsView(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            seen.append(("view", response.id, response.choices[0].message.content))
            return wrap({"id": "from-view"})

    class ReturnsNumber(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            seen.append(("number", response.id, data["model"]))
            return 42

    chain = chain_of(ReturnsDict(), ReturnsView(), ReturnsNumber())
    result = await chain.post_call_success({"model": "m"}, USER, wrap({"id": "upstream"}))
    assert isinstance(result, ObjectView)
    assert unwrap(result) == {"id": "from-view"}
    assert seen == [
        ("dict", "upstream", "upstream"),
        ("view", "from-dict", "a"),
        ("number", "from-view", "m"),
    ]


async def test_a_success_hook_returning_a_non_response_is_ignored_with_a_warning(caplog):
    class ReturnsText(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            return "not a response"

    original = wrap({"id": "upstream"})
    assert await chain_of(ReturnsText()).post_call_success({}, USER, original) is original
    assert "mod.h0.async_post_call_success_hook returned a str, not a response: ignored" in caplog.text


async def test_success_hooks_none_keeps_in_place_edits_and_model_dump_replaces():
    class EditsInPlace(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            response.choices[0].message.content += " [checked]"

    class Dumpable:
        def model_dump(self):
            return {"id": "dumped"}

    raw = {"choices": [{"message": {"content": "hi"}}]}
    result = await chain_of(EditsInPlace()).post_call_success({}, USER, wrap(raw))
    assert unwrap(result) is raw
    assert raw["choices"][0]["message"]["content"] == "hi [checked]"

    class ReturnsPydanticLike(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            return Dumpable()

    result = await chain_of(ReturnsPydanticLike()).post_call_success({}, USER, wrap(raw))
    assert unwrap(result) == {"id": "dumped"}


async def test_a_raising_success_hook_fails_and_stops_the_chain():
    called = []

    class Raises(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            called.append("raises")
            raise HTTPException(422, "unacceptable answer")

    class After(CustomLogger):
        async def async_post_call_success_hook(self, data, user_api_key_dict, response):
            called.append("after")

    with pytest.raises(HookFailed) as info:
        await chain_of(Raises(), After()).post_call_success({}, USER, wrap({}))
    assert info.value.label == "mod.h0.async_post_call_success_hook"
    assert info.value.cause.status_code == 422
    assert called == ["raises"]


# ---- post-call failure: every hook; the first HTTP exception in config order replaces the error ----


class FailureRecorder(CustomLogger):
    def __init__(self, calls, name, returns=None, raises=None, wait_for=None, done=None):
        super().__init__()
        self.calls, self.name, self.returns, self.raises = calls, name, returns, raises
        self.wait_for, self.done = wait_for, done

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        self.calls.append((self.name, request_data, original_exception, user_api_key_dict))
        if self.wait_for is not None:
            await self.wait_for.wait()
        if self.done is not None:
            self.done.set()
        if self.raises is not None:
            raise self.raises
        return self.returns


async def test_every_failure_hook_is_called_and_the_first_http_exception_in_config_order_wins():
    calls = []
    last_done = asyncio.Event()
    returned, raised = HTTPException(418, "returned first in order"), HTTPException(429, "raised")
    hooks = [
        FailureRecorder(calls, "raise-value", raises=ValueError("ignored")),
        FailureRecorder(calls, "return-http", returns=returned, wait_for=last_done),  # finishes last
        FailureRecorder(calls, "raise-http", raises=raised, done=last_done),
    ]
    original = RuntimeError("the original failure")
    data = {"model": "m"}
    replacement = await chain_of(*hooks).failed(data, original, USER, None, datetime.now())
    assert replacement is returned
    assert sorted(c[0] for c in calls) == ["raise-http", "raise-value", "return-http"]
    assert all(c[1] is data and c[2] is original and c[3] is USER for c in calls)


async def test_a_raised_http_exception_replaces_when_it_is_first_in_order():
    raised = HTTPException(503, "replaced by failure hook")
    hooks = [
        FailureRecorder([], "raise-http", raises=raised),
        FailureRecorder([], "return-http", returns=HTTPException(400)),
    ]
    assert await chain_of(*hooks).failed({}, ValueError(), USER, None, datetime.now()) is raised


async def test_failure_hooks_other_exceptions_and_values_are_ignored(caplog):
    calls = []
    hooks = [
        FailureRecorder(calls, "raise-value", raises=ValueError("broken hook")),
        FailureRecorder(calls, "return-value", returns=KeyError("returned")),
        FailureRecorder(calls, "return-text", returns="text"),
        FailureRecorder(calls, "return-none"),
    ]
    assert await chain_of(*hooks).failed({}, ValueError("x"), USER, None, datetime.now()) is None
    assert len(calls) == 4
    assert "mod.h0.async_post_call_failure_hook raised while handling a failure (ignored)" in caplog.text
    assert "mod.h1.async_post_call_failure_hook raised while handling a failure (ignored)" in caplog.text


async def test_a_failure_hook_that_times_out_does_not_replace_the_clients_error():
    # Only an HTTP exception the hook returns or raises replaces the error; a hook that is merely slow
    # is cut off, like one that crashes.
    class Slow(CustomLogger):
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
            await hang()

    chain = chain_of(Slow(), timeout_s=0.05)
    assert await chain.failed({}, HTTPException(429, "upstream"), USER, None, datetime.now()) is None


def failing():
    """An exception with a traceback, as failures reach the chain."""
    try:
        raise ValueError("boom")
    except ValueError as exc:
        return exc


async def test_traceback_str_goes_only_to_hooks_that_take_it():
    seen = {}

    class WithTraceback(CustomLogger):
        async def async_post_call_failure_hook(
            self, request_data, original_exception, user_api_key_dict, traceback_str=None
        ):
            seen["named"] = traceback_str

    class WithKwargs:
        async def async_post_call_failure_hook(
            self, request_data, original_exception, user_api_key_dict, **kw
        ):
            seen["kwargs"] = kw

    class WithoutTraceback(CustomLogger):
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
            seen["without"] = True

    chain = chain_of(WithTraceback(), WithKwargs(), WithoutTraceback())
    assert [h.takes_extra for h in chain.hooks[HookKind.POST_CALL_FAILURE]] == [True, True, False]
    await chain.failed({}, failing(), USER, None, datetime.now())
    assert seen["named"].startswith("Traceback (most recent call last)")
    assert seen["named"].endswith("ValueError: boom\n")
    assert seen["kwargs"] == {"traceback_str": seen["named"]}
    assert seen["without"] is True


def test_failure_hook_traceback_argument_detection():
    class WithTraceback(CustomLogger):
        async def async_post_call_failure_hook(
            self, request_data, original_exception, user_api_key_dict, traceback_str=None
        ):
            return None

    class WithoutTraceback(CustomLogger):
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
            return None

    chain = chain_of(WithTraceback(), WithoutTraceback())
    assert [h.takes_extra for h in chain.hooks[HookKind.POST_CALL_FAILURE]] == [True, False]


@pytest.mark.parametrize(("takes_it", "formatted"), [(False, 0), (True, 1)])
async def test_the_traceback_is_formatted_only_when_a_hook_takes_it(monkeypatch, takes_it, formatted):
    calls = []
    real = traceback.format_exception
    monkeypatch.setattr(traceback, "format_exception", lambda exc: calls.append(exc) or real(exc))

    class Without(CustomLogger):
        async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
            return None

    class With(CustomLogger):
        async def async_post_call_failure_hook(
            self, request_data, original_exception, user_api_key_dict, traceback_str=None
        ):
            return None

    exc = failing()
    handlers = (Without(), With(), With()) if takes_it else (Without(), Without())
    await chain_of(*handlers).failed({}, exc, USER, None, datetime.now())
    assert calls == [exc] * formatted


class FailureLog(CustomLogger):
    def __init__(self, events):
        super().__init__()
        self.events = events

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append((kwargs, response_obj, start_time, end_time))


DATA = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "user": "end-user",
    "stream": True,
    "temperature": 0.2,
    "max_tokens": 5,
    "seed": 7,
    "litellm_call_id": "req-9",
    "metadata": {"headers": {"x-team": "a"}},
    "proxy_server_request": {"url": "/v1/chat/completions", "method": "POST"},
}


def expected_kwargs(call_type):
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "input": None,
        "call_type": call_type,
        "stream": True,
        "litellm_call_id": "req-9",
        "user": "end-user",
        "litellm_params": {
            "metadata": {"headers": {"x-team": "a"}},
            "proxy_server_request": {"url": "/v1/chat/completions", "method": "POST"},
        },
        "optional_params": {"temperature": 0.2, "max_tokens": 5},
    }


async def test_failure_fires_the_failure_logging_event_with_litellm_shaped_kwargs():
    events, calls = [], []
    chain = chain_of(FailureRecorder(calls, "return-none"), FailureLog(events))
    exc = HTTPException(429, "slow down")
    start = datetime.now()
    assert await chain.failed(DATA, exc, USER, "completion", start) is None
    await settle(chain)
    ((kwargs, response_obj, start_time, end_time),) = events
    expected = {**expected_kwargs("completion"), "exception": exc, "status_code": 429}
    assert {key: kwargs[key] for key in expected} == expected  # tests/unit/test_log_events.py: the rest
    assert kwargs["standard_logging_object"]["status"] == "failure"
    assert response_obj is None
    assert start_time is start and end_time >= start
    assert len(calls) == 1


async def test_the_failure_logging_event_alone_and_without_a_call_type():
    events = []
    chain = chain_of(FailureLog(events))
    assert chain.tells_failures
    await chain.failed({"prompt": "p"}, ValueError("no status"), USER, "text_completion", datetime.now())
    await settle(chain)
    kwargs = events[0][0]
    assert (kwargs["input"], kwargs["call_type"], kwargs["status_code"]) == ("p", "text_completion", None)
    # a failure before the request had a call type (not an LLM request) fires no event
    await chain.failed({}, ValueError(), USER, None, datetime.now())
    await settle(chain)
    assert len(events) == 1


# ---- response headers: every hook, merged, later wins, errors add none ----


async def test_response_headers_are_merged_lower_cased_and_a_later_hook_wins():
    seen = {}

    class First(CustomLogger):
        async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
            seen["first"] = (data, user_api_key_dict, response)
            return {"X-A": "1", "X-Shared": "first"}

    class Broken(CustomLogger):
        async def async_post_call_response_headers_hook(
            self, data, user_api_key_dict, response, request_headers=None
        ):
            seen["broken"] = request_headers
            raise RuntimeError("adds none")

    class Last(CustomLogger):
        async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response, **kw):
            seen["last"] = kw
            return {"x-shared": "last", "X-Count": 5}

    class NotADict(CustomLogger):
        async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
            return [("x-ignored", "1")]

    chain = chain_of(First(), Broken(), Last(), NotADict())
    assert [h.takes_extra for h in chain.hooks[HookKind.POST_CALL_RESPONSE_HEADERS]] == [
        False,
        True,
        True,
        False,
    ]
    data, response, request_headers = {"model": "m"}, wrap({"id": "r"}), {"x-team": "a"}
    merged = await chain.response_headers(data, USER, response, request_headers)
    assert merged == (("x-a", "1"), ("x-shared", "last"), ("x-count", "5"))
    assert seen["first"] == (data, USER, response)
    assert seen["broken"] is request_headers
    assert seen["last"] == {"request_headers": request_headers}


async def test_a_response_headers_hook_that_times_out_adds_none():
    class Slow(CustomLogger):
        async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
            await hang()

    class Quick(CustomLogger):
        async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
            return {"x-quick": "1"}

    chain = chain_of(Slow(), Quick(), policies={"mod.h0": HandlerPolicy(timeout_ms=20)})
    assert await chain.response_headers({}, USER, None, {}) == (("x-quick", "1"),)


# ---- streaming, per chunk: the last non-None return replaces the chunk ----


class PerChunk(CustomLogger):
    def __init__(self, result, seen=None):
        super().__init__()
        self.result, self.seen = result, seen

    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        if self.seen is not None:
            self.seen.append((user_api_key_dict, response))
        return self.result


def setter():
    calls = []

    def set_text(chunk, text):
        calls.append(text)
        chunk["text"] = text

    return calls, set_text


async def test_a_returned_string_sets_the_chunks_text_through_the_setter():
    seen = []
    calls, set_text = setter()
    chunk = {"id": "c", "text": "ab"}
    chain = chain_of(PerChunk(None, seen), PerChunk("AB", seen))
    assert await chain.post_call_streaming(USER, "so far: ab", chunk, set_text) is True
    assert calls == ["AB"]
    assert chunk == {"id": "c", "text": "AB"}
    assert seen == [(USER, "so far: ab")] * 2


async def test_a_returned_dict_or_view_replaces_the_whole_chunk_in_place():
    calls, set_text = setter()
    for replacement in ({"replaced": True}, wrap({"replaced": True})):
        chunk = {"id": "c", "text": "ab"}
        assert await chain_of(PerChunk(replacement)).post_call_streaming(USER, "ab", chunk, set_text)
        assert chunk == {"replaced": True}
    assert calls == []


async def test_none_keeps_the_chunk():
    calls, set_text = setter()
    chunk = {"id": "c", "text": "ab"}
    assert (
        await chain_of(PerChunk(None), PerChunk(None)).post_call_streaming(USER, "ab", chunk, set_text)
        is False
    )
    assert chunk == {"id": "c", "text": "ab"}
    assert calls == []


async def test_the_last_replacement_wins():
    calls, set_text = setter()
    chunk = {"text": "ab"}
    chain = chain_of(PerChunk("first"), PerChunk({"second": True}), PerChunk(None))
    assert await chain.post_call_streaming(USER, "ab", chunk, set_text) is True
    assert chunk == {"second": True} and calls == []
    chunk = {"text": "ab"}
    chain = chain_of(PerChunk({"first": True}), PerChunk("second"))
    assert await chain.post_call_streaming(USER, "ab", chunk, set_text) is True
    assert chunk == {"text": "second"} and calls == ["second"]


async def test_a_raising_per_chunk_hook_fails():
    class Raises(CustomLogger):
        async def async_post_call_streaming_hook(self, user_api_key_dict, response):
            raise ValueError("bad chunk")

    with pytest.raises(HookFailed) as info:
        await chain_of(Raises()).post_call_streaming(USER, "", {}, setter()[1])
    assert info.value.label == "mod.h0.async_post_call_streaming_hook"


# ---- streaming iterators: chained in config order ----


class Suffix(CustomLogger):
    def __init__(self, suffix, seen):
        super().__init__()
        self.suffix, self.seen = suffix, seen

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        self.seen.append((self.suffix, user_api_key_dict, request_data))
        try:
            async for item in response:
                yield item + self.suffix
        finally:
            self.seen.append((self.suffix, "closed"))


async def upstream(*items, error=None):
    for item in items:
        yield item
    if error is not None:
        raise error


async def test_iterator_hooks_are_chained_in_config_order():
    seen = []
    data = {"model": "m"}
    chain = chain_of(Suffix("-a", seen), Suffix("-b", seen))
    stream = chain.streaming_iterator(USER, upstream("x", "y"), data)
    assert [item async for item in stream] == ["x-a-b", "y-a-b"]
    assert ("-a", USER, data) in seen and ("-b", USER, data) in seen


async def test_no_iterator_hook_leaves_the_source_as_it_is():
    source = upstream("x")
    assert chain_of().streaming_iterator(USER, source, {}) is source
    await source.aclose()


async def test_traced_iterators_report_their_start_and_errors_and_close_the_inner_ones():
    seen = []
    chain = chain_of(Suffix("-a", seen), Suffix("-b", seen))
    trace = traced(chain)
    stream = chain.streaming_iterator(USER, upstream("x", "y", error=ValueError("boom")), {})
    assert await anext(stream) == "x-a-b"
    assert set(trace) == {
        (label(0, HookKind.POST_CALL_STREAMING_ITERATOR), "started"),
        (label(1, HookKind.POST_CALL_STREAMING_ITERATOR), "started"),
    }
    await stream.aclose()  # the consumer stops early: the outermost hook's generator is closed
    assert ("-b", "closed") in seen

    trace.clear()
    stream = chain.streaming_iterator(USER, upstream("x", error=ValueError("boom")), {})
    with pytest.raises(ValueError, match="boom"):
        [item async for item in stream]
    assert (label(0, HookKind.POST_CALL_STREAMING_ITERATOR), "raised ValueError: boom") in trace


# ---- logging events: in the background, never raising ----


class Logs(CustomLogger):
    def __init__(self, events, raises=None, hangs=False):
        super().__init__()
        self.events, self.raises, self.hangs = events, raises, hangs

    async def _record(self, event):
        if self.hangs:
            await hang()
        self.events.append(event)
        if self.raises:
            raise self.raises

    async def async_log_pre_api_call(self, model, messages, kwargs):
        await self._record(("pre", model, messages, kwargs))

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        await self._record(("success", kwargs, response_obj, start_time, end_time))


async def test_log_pre_api_call_runs_in_the_background_with_litellm_arguments():
    events = []
    chain = chain_of(Logs(events))
    assert chain.log_pre_api_call(DATA, "completion") is None
    assert events == []  # not run on the caller's path
    await settle(chain)
    assert events == [("pre", "gpt-4o", DATA["messages"], expected_kwargs("completion"))]


async def test_log_success_passes_the_response_and_times():
    events = []
    chain = chain_of(Logs(events))
    response, start = wrap({"id": "r"}), datetime.now()
    chain.log_success(DATA, "completion", response, start)
    await settle(chain)
    ((name, kwargs, response_obj, start_time, end_time),) = events
    expected = expected_kwargs("completion")
    assert (name, {key: kwargs[key] for key in expected}, response_obj, start_time) == (
        "success",
        expected,
        response,
        start,
    )
    assert kwargs["standard_logging_object"]["status"] == "success"
    assert end_time >= start_time


async def test_a_raising_or_hanging_logging_hook_never_raises(caplog):
    events = []
    chain = chain_of(
        Logs(events, raises=RuntimeError("logger down")),
        Logs(events),
        Logs(events, hangs=True),
        timeout_s=0.05,
    )
    trace = traced(chain)
    chain.log_pre_api_call(DATA, "completion")
    chain.log_success(DATA, "completion", None, datetime.now())
    await settle(chain)
    assert sorted(e[0] for e in events) == ["pre", "pre", "success", "success"]
    assert (label(0, HookKind.LOG_PRE_API_CALL), "raised RuntimeError: logger down") in trace
    assert (label(0, HookKind.LOG_SUCCESS), "raised RuntimeError: logger down") in trace
    assert (label(1, HookKind.LOG_SUCCESS), "returned None") in trace
    assert (label(2, HookKind.LOG_SUCCESS), CANCELLED) in trace
    assert "logging events never affect requests" in caplog.text


async def test_no_logging_hook_starts_no_background_work():
    chain = chain_of(Recorder("a", []))
    chain.log_pre_api_call(DATA, "completion")
    chain.log_success(DATA, "completion", None, datetime.now())
    await chain.failed(DATA, ValueError(), USER, "completion", datetime.now())
    assert chain.background == set()


async def test_background_work_that_fails_is_logged_not_raised(caplog):
    async def broken():
        raise RuntimeError("late failure")

    chain = chain_of()
    chain.run_in_background(broken())
    await settle(chain)
    assert "background work of a finished request failed" in caplog.text


# ---- the tracer seam: how every call ended ----


class Outcome(CustomLogger):
    def __init__(self, body):
        super().__init__()
        self.body = body

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return await self.body()


async def returns(value):
    return value


async def raises_boom():
    raise ValueError("boom")


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (lambda: returns(None), "returned None"),
        (lambda: returns("x"), "returned a string: 'x'"),
        (lambda: returns("y" * 100), f"returned a string: {'y' * 80!r}"),
        (lambda: returns({"model": "m"}), "returned a dict"),
        (raises_boom, "raised ValueError: boom"),
        (hang, CANCELLED),
    ],
)
async def test_the_tracer_is_told_how_each_call_ended(body, outcome):
    chain = chain_of(Outcome(body), timeout_s=0.05)
    trace = traced(chain)
    with contextlib.suppress(HookFailed, RejectedRequestError):
        await chain.pre_call(USER, CACHE, {}, "completion")
    assert trace == [(label(0, HookKind.PRE_CALL), outcome)]


async def test_a_request_that_ends_cancels_its_hook_and_the_tracer_is_told():
    started = asyncio.Event()

    async def body():
        started.set()
        await hang()

    chain = chain_of(Outcome(body), timeout_s=30)
    trace = traced(chain)
    task = asyncio.create_task(chain.pre_call(USER, CACHE, {}, "completion"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace == [(label(0, HookKind.PRE_CALL), CANCELLED)]


async def test_without_a_tracer_nothing_is_reported_and_the_iterator_is_not_wrapped():
    seen = []
    chain = chain_of(Suffix("-a", seen))
    assert chain.tracer is None
    stream = chain.streaming_iterator(USER, upstream("x"), {})
    assert stream.__qualname__ == "Suffix.async_post_call_streaming_iterator_hook"
    assert [item async for item in stream] == ["x-a"]


# ---- hook arguments, read from CustomLogger ----


def test_hook_arguments_are_litellms():
    assert HOOK_ARGUMENTS == {
        HookKind.PRE_CALL: (("user_api_key_dict", "cache", "data", "call_type"), None),
        HookKind.MODERATION: (("data", "user_api_key_dict", "call_type"), None),
        HookKind.POST_CALL_SUCCESS: (("data", "user_api_key_dict", "response"), None),
        HookKind.POST_CALL_FAILURE: (
            ("request_data", "original_exception", "user_api_key_dict"),
            "traceback_str",
        ),
        HookKind.POST_CALL_STREAMING: (("user_api_key_dict", "response"), None),
        HookKind.POST_CALL_STREAMING_ITERATOR: (("user_api_key_dict", "response", "request_data"), None),
        HookKind.POST_CALL_RESPONSE_HEADERS: (
            ("data", "user_api_key_dict", "response"),
            "request_headers",
        ),
        HookKind.LOG_PRE_API_CALL: (("model", "messages", "kwargs"), None),
        HookKind.LOG_SUCCESS: (("kwargs", "response_obj", "start_time", "end_time"), None),
        HookKind.LOG_FAILURE: (("kwargs", "response_obj", "start_time", "end_time"), None),
    }


def test_hook_arguments_follow_custom_loggers_signature(monkeypatch):
    async def moderation(self, data, user_api_key_dict, call_type, extra=None):
        return None

    monkeypatch.setattr(CustomLogger, HookKind.MODERATION.value, moderation)
    assert hook_module._arguments(HookKind.MODERATION) == (
        ("data", "user_api_key_dict", "call_type"),
        "extra",
    )


# ---- which hooks count, and load-time validation ----


def test_only_overridden_hooks_count_in_config_order():
    class PreCall(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            return None

    class Failure(CustomLogger):
        async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
            return None

    assert chain_of(CustomLogger()).empty
    chain = chain_of(PreCall(), CustomLogger(), PreCall(), Failure())
    assert chain.kinds == {HookKind.PRE_CALL, HookKind.LOG_FAILURE}
    assert chain.has(HookKind.PRE_CALL) and not chain.has(HookKind.MODERATION)
    assert [h.label for h in chain.hooks[HookKind.PRE_CALL]] == [
        "mod.h0.async_pre_call_hook",
        "mod.h2.async_pre_call_hook",
    ]
    assert chain.tells_failures
    assert not chain_of(PreCall()).tells_failures


def test_a_handlers_policy_sets_its_timeout_and_fail_open():
    chain = chain_of(
        Recorder("a", []),
        Recorder("b", []),
        timeout_s=2.0,
        policies={"mod.h1": HandlerPolicy(timeout_ms=250, fail_open=True)},
    )
    first, second = chain.hooks[HookKind.PRE_CALL]
    assert (first.timeout_s, first.fail_open) == (2.0, False)
    assert (second.timeout_s, second.fail_open) == (0.25, True)


def test_a_sync_hook_is_refused_at_load():
    class Sync(CustomLogger):
        def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            return None

    with pytest.raises(
        HandlerError, match=r"^mod\.h0\.async_pre_call_hook: Sync\.async_pre_call_hook must be 'async def'$"
    ):
        chain_of(Sync())


def test_a_sync_logging_hook_is_refused_at_load():
    class SyncLog(CustomLogger):
        def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            return None

    with pytest.raises(HandlerError, match=r"SyncLog\.async_log_success_event must be 'async def'"):
        chain_of(SyncLog())


@pytest.mark.parametrize("style", ["coroutine", "sync generator"])
def test_an_iterator_hook_that_is_not_an_async_generator_is_refused_at_load(style):
    class Returns(CustomLogger):
        async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            return response

    class SyncGenerator(CustomLogger):
        def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
            yield from ()

    handler = Returns() if style == "coroutine" else SyncGenerator()
    with pytest.raises(
        HandlerError, match=r"async_post_call_streaming_iterator_hook must be an async generator"
    ):
        chain_of(handler)


@pytest.mark.parametrize(
    "signature",
    [
        "self, user_api_key_dict, data, call_type",  # cache missing
        "self, user, cache, data, call_type",  # a name LiteLLM does not use
        "self, user_api_key_dict, cache, data, call_type, required_extra",
    ],
)
def test_a_hook_that_cannot_take_litellms_arguments_is_refused_at_load(signature):
    namespace = {}
    exec(f"async def async_pre_call_hook({signature}):\n    return None", namespace)
    handler = type("Wrong", (CustomLogger,), {"async_pre_call_hook": namespace["async_pre_call_hook"]})()
    with pytest.raises(HandlerError) as info:
        chain_of(handler)
    assert str(info.value).startswith(
        "mod.h0.async_pre_call_hook: Wrong.async_pre_call_hook must accept "
        "(user_api_key_dict, cache, data, call_type): "
    )


def test_keyword_catch_all_signatures_are_accepted():
    class CatchAll(CustomLogger):
        async def async_pre_call_hook(self, **kwargs):
            kwargs["data"]["seen"] = sorted(kwargs)

    assert run(chain_of(CatchAll()), {}) == {"seen": ["cache", "call_type", "data", "user_api_key_dict"]}


def test_hook_latency_is_observed_per_handler_and_kind():
    from prometheus_client import REGISTRY

    def count():
        labels = {"handler": "mod.h0", "hook": "async_pre_call_hook"}
        return REGISTRY.get_sample_value("llm_extproc_hook_duration_seconds_count", labels) or 0.0

    before = count()
    run(chain_of(Recorder("a", [])), {})
    with pytest.raises(HookFailed):
        run(chain_of(Recorder("a", [], raises=ValueError())), {})
    assert count() - before == 2

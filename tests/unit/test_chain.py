import asyncio

import pytest

from extproc import CustomLogger, HTTPException
from extproc.hooks.chain import HookChain, HookFailed, HookTimeout
from extproc.hooks.loader import LoadedHandler


def chain_of(*handlers, timeout_s=1.0):
    return HookChain([LoadedHandler(f"mod.h{i}", h) for i, h in enumerate(handlers)], timeout_s)


class Recorder(CustomLogger):
    def __init__(self, name, log, result=None, mutate=None, raises=None, sleep=0.0):
        super().__init__()
        self.name, self.log, self.result, self.mutate, self.raises, self.sleep = (
            name,
            log,
            result,
            mutate,
            raises,
            sleep,
        )

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        self.log.append((self.name, dict(data), call_type))
        if self.sleep:
            await asyncio.sleep(self.sleep)
        if self.mutate:
            self.mutate(data)
        if self.raises:
            raise self.raises
        return self.result


def run(chain, data):
    return asyncio.run(chain.pre_call(None, None, data, "completion"))


def test_in_config_order_dict_replaces_none_keeps_in_place_edits():
    log = []
    first = Recorder("a", log, mutate=lambda d: d.update(seen_a=True))
    second = Recorder("b", log, result={"model": "replaced"})
    third = Recorder("c", log, mutate=lambda d: d.update(seen_c=True))
    result = run(chain_of(first, second, third), {"model": "m"})
    assert [entry[0] for entry in log] == ["a", "b", "c"]
    assert log[1][1] == {"model": "m", "seen_a": True}
    assert log[2][1] == {"model": "replaced"}
    assert result.data == {"model": "replaced", "seen_c": True}
    assert result.refusal is None


def test_string_refuses_and_stops_the_chain():
    log = []
    result = run(chain_of(Recorder("a", log, result="no way"), Recorder("b", log)), {})
    assert (result.refusal, result.refused_by) == ("no way", "mod.h0.async_pre_call_hook")
    assert [entry[0] for entry in log] == ["a"]


def test_raise_fails_with_the_hook_named():
    log = []
    chain = chain_of(
        Recorder("a", log), Recorder("b", log, raises=HTTPException(403, "x")), Recorder("c", log)
    )
    with pytest.raises(HookFailed) as info:
        run(chain, {})
    assert info.value.hook.label == "mod.h1.async_pre_call_hook"
    assert isinstance(info.value.cause, HTTPException)
    assert [entry[0] for entry in log] == ["a", "b"]


def test_returned_exception_is_raised():
    with pytest.raises(HookFailed) as info:
        run(chain_of(Recorder("a", [], result=ValueError("returned"))), {})
    assert str(info.value.cause) == "returned"


def test_timeout_becomes_a_504_naming_the_hook():
    with pytest.raises(HookFailed) as info:
        run(chain_of(Recorder("a", [], sleep=5), timeout_s=0.05), {})
    cause = info.value.cause
    assert isinstance(cause, HookTimeout)
    assert cause.status_code == 504
    assert cause.detail == "mod.h0.async_pre_call_hook did not finish within 50 ms"


def test_other_return_types_are_ignored():
    result = run(chain_of(Recorder("a", [], result=42)), {"k": 1})
    assert result.data == {"k": 1} and result.refusal is None


def test_duck_typed_handler_without_custom_logger():
    class Plain:
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            data["plain"] = True

    chain = chain_of(Plain())
    assert run(chain, {}).data == {"plain": True}


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
    from extproc.types import HookKind

    assert [h.takes_extra for h in chain.hooks[HookKind.POST_CALL_FAILURE]] == [True, False]


def test_fail_open_skips_timeouts_and_crashes_but_not_deliberate_refusals():
    from extproc.settings.config import HandlerPolicy

    def chain_with(handler):
        return HookChain(
            [LoadedHandler("mod.h", handler)], 1.0, {"mod.h": HandlerPolicy(timeout_ms=50, fail_open=True)}
        )

    assert run(chain_with(Recorder("a", [], sleep=5)), {"k": 1}).data == {"k": 1}
    assert run(chain_with(Recorder("a", [], raises=RuntimeError("x"))), {"k": 1}).data == {"k": 1}
    with pytest.raises(HookFailed):
        run(chain_with(Recorder("a", [], raises=HTTPException(403, "no"))), {})

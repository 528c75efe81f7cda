"""The `guardrails:` section: parsing, building each guardrail as LiteLLM does, LiteLLM's selection rule,
the chain's gating and order, the unified inputs, and the request's selection kept from the upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from extproc import CustomLogger, HTTPException
from extproc.api.guardrail_inputs import GuardrailInputs
from extproc.errors import HandlerError, HookFailed
from extproc.hooks.chain import HookChain
from extproc.hooks.guardrail import CustomGuardrail, GuardrailEventHooks
from extproc.hooks.loaded_guardrails import load_guardrail
from extproc.hooks.loader import LoadedHandler
from extproc.request import guardrail_selection as selection
from extproc.settings.config import ConfigError, parse
from extproc.settings.guardrails import GuardrailEntry, parse_guardrails
from extproc.types import HookKind

USER, CACHE = object(), object()


def entry(guardrail: str = "guards.Screen", **params: Any) -> dict[str, Any]:
    return {"guardrail_name": "screen", "litellm_params": {"guardrail": guardrail, **params}}


# ---- parsing ----


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([entry(mode="sometimes")], "'sometimes' is not an event"),
        ([entry(mode="pre_mcp_call")], "MCP"),
        ([entry(mode={"tags": {"a": "pre_call"}})], "tag-based modes"),
        ([entry(unreachable_fallback="maybe")], "unreachable_fallback"),
        ([entry(timeout=-1)], "timeout"),
        ([entry(default_on="yes")], "default_on"),
        ([{"guardrail_name": "x", "litellm_params": {}}], "litellm_params.guardrail"),
        ([{"guardrail_name": "x", "litellm_params": {"guardrail": "a.B"}, "extra": 1}], "extra: unknown"),
        ([entry(), entry()], "'screen' is used twice"),
        ({"screen": {}}, "expected a list"),
    ],
)
def test_bad_entries_are_errors_that_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_guardrails(raw)


def test_an_entry_keeps_litellms_meaning() -> None:
    (parsed,) = parse_guardrails(
        [
            entry(
                mode=["pre_call", "post_call"], default_on=True, fail_on_error=False, timeout=1.5, threshold=3
            )
        ]
    )
    assert parsed.modes == ("pre_call", "post_call")
    assert parsed.mode_value == ["pre_call", "post_call"]
    assert parsed.default_on and parsed.fail_open and not parsed.open_when_unreachable
    assert parsed.timeout_ms == 1500
    assert parsed.params == {"threshold": 3}
    (single,) = parse_guardrails([entry(mode="during_call", unreachable_fallback="fail_open")])
    assert single.mode_value == "during_call" and single.open_when_unreachable and not single.fail_open


def test_older_litellm_settings_guardrails_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"litellm_settings\.guardrails"):
        parse(
            {"litellm_settings": {"guardrails": [{"prompt_injection": {"default_on": True}}]}}, tmp_path / "c"
        )


def test_deployment_guardrails_must_name_known_guardrails(tmp_path: Path) -> None:
    model = {"model_name": "m", "litellm_params": {"model": "x", "guardrails": ["nope"]}}
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.guardrails.*'nope'"):
        parse({"model_list": [model], "guardrails": [entry()]}, tmp_path / "c")
    model["litellm_params"]["guardrails"] = ["screen"]
    config = parse({"model_list": [model], "guardrails": [entry()]}, tmp_path / "c")
    assert config.deployment_guardrails == {"m": ("screen",)}


# ---- building ----

GUARDS = """
from extproc.hooks.guardrail import CustomGuardrail
from extproc import CustomLogger


class Screen(CustomGuardrail):
    def __init__(self, threshold=1, **kwargs):
        self.threshold = threshold
        self.kwargs = kwargs
        super().__init__(**kwargs)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data


class Strict(CustomGuardrail):
    def __init__(self, guardrail_name, event_hook, default_on):
        super().__init__(guardrail_name=guardrail_name, event_hook=event_hook, default_on=default_on)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data


class Unified(CustomGuardrail):
    async def apply_guardrail(self, inputs, request_data, input_type, logging_obj=None):
        return inputs


class Nothing(CustomGuardrail):
    pass


class Plain:
    pass


instance = Screen(guardrail_name="original")
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "guards.py").write_text(GUARDS)
    return tmp_path


def built(folder: Path, guardrail: str = "guards.Screen", **params: Any) -> Any:
    (parsed,) = parse_guardrails([entry(guardrail, **params)])
    return load_guardrail(parsed, (folder,))


def test_a_class_is_built_with_the_entry_as_litellm_builds_it(folder: Path) -> None:
    loaded = built(folder, mode="pre_call", default_on=True, threshold=7)
    guardrail = loaded.instance
    assert guardrail.guardrail_name == "screen"
    assert guardrail.event_hook == "pre_call" and guardrail.default_on is True
    assert guardrail.threshold == 7
    assert loaded.policy.timeout_ms is None and not loaded.policy.fail_open


def test_a_key_the_class_does_not_take_is_an_error(folder: Path) -> None:
    with pytest.raises(HandlerError, match=r"litellm_params.threshold: Strict takes no 'threshold'"):
        built(folder, "guards.Strict", threshold=2)
    assert built(folder, "guards.Strict").instance.guardrail_name == "screen"


def test_an_instance_takes_the_entrys_name_mode_and_default(folder: Path) -> None:
    loaded = built(folder, "guards.instance", mode="pre_call", default_on=True)
    assert loaded.instance.guardrail_name == "screen" and loaded.instance.default_on is True
    with pytest.raises(HandlerError, match="is an instance, not a class"):
        built(folder, "guards.instance", threshold=3)


@pytest.mark.parametrize(
    ("guardrail", "params", "message"),
    [
        ("guards.Screen", {"mode": "during_call"}, "mode during_call but Screen has no hook for it"),
        ("guards.Nothing", {}, "implements no hook and no apply_guardrail"),
        ("guards.Plain", {}, "not a CustomGuardrail"),
        ("guards.Missing", {}, "has no 'Missing'"),
        ("acme_shield", {}, "'acme_shield' is a vendor guardrail llm-extproc does not have"),
    ],
)
def test_a_guardrail_that_could_never_run_is_refused(
    folder: Path, guardrail: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(HandlerError, match=message):
        built(folder, guardrail, **params)


def test_apply_guardrail_stands_for_every_hook_of_its_modes(folder: Path) -> None:
    loaded = built(folder, "guards.Unified", mode=["pre_call", "post_call"])
    assert loaded.method(HookKind.PRE_CALL) is not None
    assert loaded.method(HookKind.POST_CALL_SUCCESS) is not None
    assert loaded.method(HookKind.POST_CALL_STREAMING_ITERATOR) is not None
    assert loaded.method(HookKind.MODERATION) is None  # not one of its modes


# ---- LiteLLM's selection rule ----


@pytest.mark.parametrize(
    ("event_hook", "default_on", "requested", "event", "runs"),
    [
        ("pre_call", True, [], "pre_call", True),
        ("pre_call", True, [], "post_call", False),
        ("pre_call", False, [], "pre_call", False),
        ("pre_call", False, ["g"], "pre_call", True),
        ("pre_call", False, [{"g": {"extra_body": {}}}], "pre_call", True),
        ("pre_call", False, ["other"], "pre_call", False),
        (["pre_call", "post_call"], False, ["g"], "post_call", True),
        (None, False, [], "during_call", True),  # no mode: every event, named or not (as LiteLLM)
        ("logging_only", False, [], "logging_only", True),
    ],
)
def test_should_run_guardrail(
    event_hook: Any, default_on: bool, requested: list[Any], event: str, runs: bool
) -> None:
    guardrail = CustomGuardrail(guardrail_name="g", event_hook=event_hook, default_on=default_on)
    data = {"metadata": {"guardrails": requested}}
    assert guardrail.should_run_guardrail(data, GuardrailEventHooks(event)) is runs


def test_supported_event_hooks_are_checked() -> None:
    with pytest.raises(ValueError, match="not in the supported event hooks"):
        CustomGuardrail(event_hook="post_call", supported_event_hooks=[GuardrailEventHooks.pre_call])


# ---- the chain ----


class Named(CustomGuardrail):
    def __init__(self, log: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: Any, call_type: str) -> Any:
        self.log.append(f"{self.guardrail_name}:pre")
        return None

    async def async_post_call_success_hook(self, data: Any, user_api_key_dict: Any, response: Any) -> Any:
        self.log.append(f"{self.guardrail_name}:post")
        return None


class Callback(CustomLogger):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: Any, call_type: str) -> Any:
        self.log.append("callback:pre")

    async def async_post_call_success_hook(self, data: Any, user_api_key_dict: Any, response: Any) -> Any:
        self.log.append("callback:post")


def guardrail_of(instance: object, name: str, **params: Any) -> Any:
    from extproc.hooks.loaded_guardrails import LoadedGuardrail
    from extproc.hooks.unified import UnifiedGuardrail

    (parsed,) = parse_guardrails([{"guardrail_name": name, "litellm_params": {"guardrail": "x.Y", **params}}])
    unified = UnifiedGuardrail(instance) if type(instance).__dict__.get("apply_guardrail") else None
    return LoadedGuardrail(parsed, instance, unified)


def test_pre_call_runs_callbacks_then_guardrails_post_call_guardrails_first() -> None:
    log: list[str] = []
    on = Named(log, guardrail_name="on", event_hook=["pre_call", "post_call"], default_on=True)
    off = Named(log, guardrail_name="off", event_hook=["pre_call", "post_call"])
    chain = HookChain(
        [LoadedHandler("mod.cb", Callback(log))],
        1.0,
        guardrails=[
            guardrail_of(on, "on", mode=["pre_call", "post_call"], default_on=True),
            guardrail_of(off, "off", mode=["pre_call", "post_call"]),
        ],
    )
    data: dict[str, Any] = {"metadata": {}, "messages": []}

    async def run() -> None:
        await chain.pre_call(USER, CACHE, data, "acompletion")
        await chain.post_call_success(data, USER, {"choices": []})

    asyncio.run(run())
    assert log == ["callback:pre", "on:pre", "on:post", "callback:post"]
    assert data["metadata"]["applied_guardrails"] == ["on"]


def test_a_selection_rule_that_raises_fails_the_request() -> None:
    class Broken(Named):
        def should_run_guardrail(self, data: Any, event_type: Any) -> bool:
            raise KeyError("metadata")

    broken = Broken([], guardrail_name="b", event_hook="pre_call", default_on=True)
    chain = HookChain([], 1.0, guardrails=[guardrail_of(broken, "b", mode="pre_call", default_on=True)])
    with pytest.raises(HookFailed) as failed:
        asyncio.run(chain.pre_call(USER, CACHE, {"metadata": {}}, "acompletion"))
    assert failed.value.label == "b.async_pre_call_hook"


@pytest.mark.parametrize(
    ("raised", "passes"),
    [(ConnectionRefusedError("down"), True), (TimeoutError(), True), (ValueError("bug"), False)],
)
def test_unreachable_fallback_opens_only_for_an_unreached_service(
    raised: BaseException, passes: bool
) -> None:
    class Remote(CustomGuardrail):
        async def async_pre_call_hook(
            self, user_api_key_dict: Any, cache: Any, data: Any, call_type: str
        ) -> Any:
            raise raised

    remote = Remote(guardrail_name="r", event_hook="pre_call", default_on=True)
    chain = HookChain(
        [],
        1.0,
        guardrails=[
            guardrail_of(remote, "r", mode="pre_call", default_on=True, unreachable_fallback="fail_open")
        ],
    )
    call = chain.pre_call(USER, CACHE, {"metadata": {}}, "acompletion")
    if passes:
        assert asyncio.run(call) == {"metadata": {"applied_guardrails": ["r"]}}
    else:
        with pytest.raises(HookFailed):
            asyncio.run(call)


def test_a_deliberate_refusal_refuses_even_with_fail_on_error_false() -> None:
    class Refuser(CustomGuardrail):
        async def async_pre_call_hook(
            self, user_api_key_dict: Any, cache: Any, data: Any, call_type: str
        ) -> Any:
            raise HTTPException(status_code=400, detail="no")

    refuser = Refuser(guardrail_name="r", event_hook="pre_call", default_on=True)
    chain = HookChain(
        [],
        1.0,
        guardrails=[guardrail_of(refuser, "r", mode="pre_call", default_on=True, fail_on_error=False)],
    )
    with pytest.raises(HookFailed):
        asyncio.run(chain.pre_call(USER, CACHE, {"metadata": {}}, "acompletion"))


# ---- unified inputs ----


def test_request_inputs_are_written_back_where_they_came_from() -> None:
    data = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": [{"type": "text", "text": "hi falcon"}, {"type": "image_url"}]},
            {"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    found = GuardrailInputs.of_request(data, "acompletion")
    assert found is not None
    assert found.inputs["texts"] == ["be kind", "hi falcon"]
    assert found.inputs["tools"] == data["tools"] and len(found.inputs["tool_calls"]) == 1
    assert found.inputs["model"] == "m"
    assert found.write_back({"texts": ["be kind", "hi [X]"]}) is True
    assert data["messages"][1]["content"][0]["text"] == "hi [X]"
    with pytest.raises(ValueError, match="returned 1 texts for 2"):
        found.write_back({"texts": ["one"]})


@pytest.mark.parametrize(
    ("call_type", "data", "texts"),
    [
        ("text_completion", {"prompt": ["a", "b"]}, ["a", "b"]),
        ("aembedding", {"input": "x"}, ["x"]),
        ("amoderation", {"input": ["y", 3]}, ["y"]),
        ("image_generation", {"prompt": "cat"}, ["cat"]),
    ],
)
def test_each_endpoint_hands_over_its_texts(call_type: str, data: dict[str, Any], texts: list[str]) -> None:
    found = GuardrailInputs.of_request(data, call_type)
    assert found is not None and found.inputs["texts"] == texts


def test_answer_inputs() -> None:
    chat = {
        "choices": [{"message": {"content": "a"}}, {"message": {"content": "b", "tool_calls": [{"id": "t"}]}}]
    }
    found = GuardrailInputs.of_response(chat, "completion")
    assert (
        found is not None
        and found.inputs["texts"] == ["a", "b"]
        and found.inputs["tool_calls"] == [{"id": "t"}]
    )
    assert GuardrailInputs.of_response({"data": []}, "aembedding") is None


# ---- the request's selection ----


def test_the_selection_is_for_hooks_never_for_the_upstream() -> None:
    data: dict[str, Any] = {"guardrails": ["a"], "metadata": {"guardrails": ["b"], "team": "t"}}
    from_body = selection.take_body_selection(data)
    assert from_body == ["a"] and "guardrails" not in data
    sent = {"metadata": data["metadata"]}
    assert selection.upstream_metadata(sent) is True
    assert sent == {"metadata": {"team": "t"}}
    assert data["metadata"]["guardrails"] == ["b"]  # the hooks' copy is untouched
    selection.select(data, from_body, {"m": ("c",)}, "m")
    assert data["metadata"]["guardrails"] == ["b", "a", "c"]
    only_selection = {"metadata": {"guardrails": ["x"]}}
    assert selection.upstream_metadata(only_selection) is True and only_selection == {}


def test_applied_guardrails_header_value() -> None:
    assert selection.applied_guardrails({"metadata": {"applied_guardrails": ["a", "b"]}}) == "a,b"
    assert selection.applied_guardrails({"metadata": {}}) == ""
    assert selection.applied_guardrails(None) == ""


def test_entry_is_frozen() -> None:
    (parsed,) = parse_guardrails([entry()])
    assert isinstance(parsed, GuardrailEntry)
    with pytest.raises(AttributeError):
        parsed.name = "other"  # type: ignore[misc]

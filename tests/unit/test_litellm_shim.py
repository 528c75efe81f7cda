"""LiteLLM's module paths in handler files, the response classes, and the LiteLLM-only names.

Handler files are written to a temporary folder and loaded by the real loader, as the sidecar loads them.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc import CustomLogger
from extproc.api.views import (
    Choices,
    Delta,
    Message,
    ModelResponse,
    ModelResponseStream,
    ObjectView,
    StreamingChoices,
    Usage,
    unwrap,
    wrap,
)
from extproc.compat import litellm_shim
from extproc.compat.call_types import CallTypes
from extproc.compat.guardrail_helpers import should_proceed_based_on_metadata
from extproc.compat.loggers import verbose_logger, verbose_proxy_logger
from extproc.compat.names import FASTAPI_MODULES, LITELLM_MODULES, Lazy
from extproc.compat.proxy_types import ProxyException
from extproc.errors import HandlerError, HTTPException, describe
from extproc.hooks.chain import HookChain
from extproc.hooks.loader import LoadedHandler, import_module
from extproc.settings.auth import UserAPIKeyAuth

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "finish_reason": None, "delta": {"content": "h"}}],
}
TEXT = {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "hi"}]}


@pytest.fixture()
def folder(tmp_path: Path) -> Iterator[Path]:
    """A handler folder; modules loaded from it are forgotten afterwards."""
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def load(folder: Path, name: str, source: str) -> Any:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return import_module(name, (folder,))


def load_error(folder: Path, name: str, source: str) -> str:
    with pytest.raises(HandlerError) as caught:
        load(folder, name, source)
    return str(caught.value)


# ---- every module path and name of the table resolves in a handler file ----


@pytest.mark.parametrize("path", sorted(LITELLM_MODULES))
def test_each_litellm_module_path_gives_its_names(folder: Path, path: str) -> None:
    names = sorted(LITELLM_MODULES[path])
    imports = f"from {path} import {', '.join(names)}\n" if names else f"import {path}\n"
    module = load(folder, f"uses_{path.replace('.', '_')}", imports)
    for name in names:
        expected = LITELLM_MODULES[path][name]
        if isinstance(expected, Lazy):
            expected = getattr(__import__(expected.module, fromlist=["_"]), expected.attribute)
        assert getattr(module, name) is expected, f"{path}.{name}"


@pytest.mark.skipif(litellm_shim.installed("fastapi"), reason="fastapi is installed: the real one is used")
def test_fastapi_http_exception_is_ours_when_fastapi_is_absent(folder: Path) -> None:
    module = load(
        folder,
        "uses_fastapi",
        """
        from fastapi import HTTPException, status
        from fastapi.exceptions import HTTPException as Same
        FORBIDDEN = status.HTTP_403_FORBIDDEN
        """,
    )
    assert module.HTTPException is HTTPException is module.Same
    assert module.FORBIDDEN == 403
    assert FASTAPI_MODULES["fastapi.status"]["HTTP_429_TOO_MANY_REQUESTS"] == 429


def test_import_forms_and_top_level_attributes(folder: Path) -> None:
    module = load(
        folder,
        "forms",
        """
        import litellm
        import litellm.proxy._types as proxy_types
        import litellm.integrations.custom_logger
        from litellm.integrations import custom_guardrail
        from litellm import *

        AUTH = proxy_types.UserAPIKeyAuth
        LOGGER = litellm.integrations.custom_logger.CustomLogger
        GUARDRAIL = custom_guardrail.CustomGuardrail
        RESPONSE = litellm.ModelResponse
        STAR_USAGE = Usage
        litellm.set_verbose = True
        COST = litellm.completion_cost
        """,
    )
    from extproc.compat import cost
    from extproc.hooks.guardrail import CustomGuardrail

    assert module.AUTH is UserAPIKeyAuth
    assert module.LOGGER is CustomLogger
    assert module.GUARDRAIL is CustomGuardrail
    assert module.RESPONSE is ModelResponse
    assert module.STAR_USAGE is Usage
    assert module.COST is cost.completion_cost
    assert module.litellm.set_verbose is True


def test_the_shim_stays_out_of_sys_modules_and_other_code(folder: Path) -> None:
    load(folder, "plain", "import litellm\nfrom litellm.types.utils import ModelResponse\n")
    assert "litellm" not in sys.modules
    if not litellm_shim.installed("litellm"):
        with pytest.raises(ImportError):
            __import__("litellm")


def test_an_import_inside_a_hook_body_at_request_time_resolves(folder: Path) -> None:
    module = load(
        folder,
        "lazy",
        """
        from litellm.integrations.custom_logger import CustomLogger

        class Lazy(CustomLogger):
            async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
                import litellm
                from litellm.types.utils import Message
                data["seen"] = [litellm.ModelResponse.__name__, Message.__name__]
                return data
        """,
    )
    import asyncio

    data = asyncio.run(module.Lazy().async_pre_call_hook(None, None, {}, "acompletion"))
    assert data["seen"] == ["ModelResponse", "Message"]


def test_sibling_modules_a_handler_imports_get_the_shim_too(folder: Path) -> None:
    (folder / "shim_helpers").mkdir()
    (folder / "shim_helpers" / "__init__.py").write_text(
        "from litellm._logging import verbose_proxy_logger\n"
    )
    (folder / "shim_helpers" / "texts.py").write_text(
        "from litellm.types.utils import Message\nM = Message\n"
    )
    (folder / "sibling_util.py").write_text("import litellm\nR = litellm.ModelResponse\n")
    module = load(
        folder,
        "with_siblings",
        """
        import sibling_util
        from shim_helpers import verbose_proxy_logger
        from shim_helpers.texts import M
        """,
    )
    assert module.sibling_util.R is ModelResponse
    assert module.verbose_proxy_logger is verbose_proxy_logger
    assert module.M is Message


# ---- what is not provided fails at load, naming the name, the file and the line ----


@pytest.mark.skipif(litellm_shim.installed("litellm"), reason="an installed litellm provides the rest")
def test_an_unknown_name_fails_at_load_with_name_file_and_line(folder: Path) -> None:
    message = load_error(
        folder,
        "unknown_name",
        "import os\n\nfrom litellm.types.utils import ModelResponse, Router\n",
    )
    assert f"{folder / 'unknown_name.py'}:3:" in message
    assert "'Router'" in message and "litellm.types.utils" in message
    assert "ModelResponse" in message  # what is there instead


@pytest.mark.skipif(litellm_shim.installed("litellm"), reason="an installed litellm provides the rest")
def test_an_unknown_module_and_an_unknown_attribute_fail_at_load(folder: Path) -> None:
    message = load_error(folder, "unknown_module", "from litellm.router import Router\n")
    assert f"{folder / 'unknown_module.py'}:1:" in message and "'litellm.router'" in message
    message = load_error(folder, "unknown_attribute", "import litellm\n\n\nX = litellm.acompletion\n")
    assert f"{folder / 'unknown_attribute.py'}:4:" in message and "'litellm.acompletion'" in message
    (folder / "bad_sibling.py").write_text("x = 1\nfrom litellm.proxy.utils import ProxyLogging\n")
    message = load_error(folder, "sibling_user", "import bad_sibling\n")
    assert f"{folder / 'bad_sibling.py'}:2:" in message and "'litellm.proxy.utils'" in message


def test_getattr_with_a_default_still_works_on_an_unknown_attribute(folder: Path) -> None:
    module = load(folder, "probing", "import litellm\nHAS = getattr(litellm, 'no_such_thing', 'absent')\n")
    assert module.HAS == "absent"


def test_an_installed_litellm_supplies_what_we_do_not_while_our_names_win(
    folder: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path_factory.mktemp("site")
    (site / "litellm").mkdir()
    (site / "litellm" / "__init__.py").write_text(
        "completion = 'the real completion'\nModelResponse = 'real'\n"
    )
    (site / "litellm" / "router.py").write_text("class Router:\n    pass\n")
    monkeypatch.syspath_prepend(str(site))
    litellm_shim.installed.cache_clear()
    try:
        module = load(
            folder,
            "with_real",
            """
            import litellm
            from litellm.integrations.custom_logger import CustomLogger
            from litellm.router import Router
            COMPLETION = litellm.completion
            RESPONSE = litellm.ModelResponse
            """,
        )
        assert module.CustomLogger is CustomLogger
        assert module.RESPONSE is ModelResponse
        assert module.COMPLETION == "the real completion"
        assert module.Router.__module__ == "litellm.router"
    finally:
        litellm_shim.installed.cache_clear()
        for name in [n for n in sys.modules if n == "litellm" or n.startswith("litellm.")]:
            del sys.modules[name]


# ---- the response classes: views chosen by shape, and constructible as LiteLLM's ----


def test_views_of_responses_and_chunks_are_litellms_classes() -> None:
    response = wrap(orjson.loads(orjson.dumps(CHAT)))
    assert isinstance(response, ModelResponse)
    assert isinstance(response.choices[0], Choices)
    assert isinstance(response.choices[0].message, Message)
    assert isinstance(response["choices"][0]["message"], Message)
    assert isinstance(response.usage, Usage)
    assert [type(c).__name__ for c in response.choices] == ["Choices"]
    assert all(isinstance(c, Choices) for c in response.choices)
    chunk = wrap(dict(CHUNK))
    assert isinstance(chunk, ModelResponseStream) and not isinstance(chunk, ModelResponse)
    assert isinstance(chunk.choices[0], StreamingChoices)
    assert isinstance(chunk.choices[0].delta, Delta)
    assert isinstance(wrap(dict(TEXT)), ModelResponse)
    embeddings = wrap({"object": "list", "data": [{"embedding": [0.1]}]})
    assert type(embeddings) is ObjectView


def test_views_still_edit_the_underlying_json() -> None:
    raw = orjson.loads(orjson.dumps(CHAT))
    response = wrap(raw)
    response.choices[0].message.content += "!"
    response["usage"]["total_tokens"] = 9
    response._hidden_params["additional_headers"] = {"x": "1"}
    assert raw["choices"][0]["message"]["content"] == "hi!"
    assert raw["usage"]["total_tokens"] == 9
    assert "_hidden_params" not in raw and response._hidden_params == {"additional_headers": {"x": "1"}}
    assert unwrap(response) is raw
    assert response.model_dump() is raw and response.json() is raw and response.dict() is raw


def test_model_response_is_constructible_with_litellms_defaults() -> None:
    response = ModelResponse()
    assert response.id.startswith("chatcmpl-") and isinstance(response.created, int)
    assert response.object == "chat.completion"
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content is None
    assert "usage" not in response

    built = ModelResponse(
        id="resp-1",
        model="gpt-x",
        choices=[Choices(message=Message(content="built")), {"message": {"content": "dict"}, "index": 1}],
        usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
    )
    assert built.choices[0].message.content == "built" and built["choices"][1]["message"]["content"] == "dict"
    assert built.choices[1].finish_reason == "stop" and built.choices[1].message.role == "assistant"
    assert isinstance(built.usage, Usage) and built.usage.total_tokens == 5
    plain = unwrap(built)
    assert orjson.loads(orjson.dumps(plain)) == plain
    assert plain["id"] == "resp-1" and plain["model"] == "gpt-x"


def test_stream_classes_usage_and_deltas_are_constructible() -> None:
    chunk = ModelResponseStream(choices=[StreamingChoices(delta=Delta(content="x"))], model="m")
    assert chunk.object == "chat.completion.chunk" and chunk.model == "m"
    assert chunk.choices[0].delta.content == "x" and chunk.choices[0].finish_reason is None
    assert ModelResponseStream().choices[0].delta.content is None
    assert Usage().model_dump() == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3).total_tokens == 3
    tool_delta = Delta(tool_calls=[{"function": {"name": "f", "arguments": "{}"}}])
    assert tool_delta.tool_calls[0]["index"] == 0 and tool_delta.tool_calls[0]["type"] == "function"
    assert Message(content="a").json() == {
        "content": "a",
        "role": "assistant",
        "tool_calls": None,
        "function_call": None,
    }


async def test_a_success_hook_returning_a_constructed_model_response_replaces_the_answer() -> None:
    class Replaces(CustomLogger):
        async def async_post_call_success_hook(self, data: Any, user_api_key_dict: Any, response: Any) -> Any:
            assert isinstance(response, ModelResponse)
            return ModelResponse(model=response.model, choices=[Choices(message=Message(content="replaced"))])

    chain = HookChain([LoadedHandler("mod.h0", Replaces())], 1.0)
    result = await chain.post_call_success({}, UserAPIKeyAuth(), wrap(orjson.loads(orjson.dumps(CHAT))))
    plain = unwrap(result)
    assert isinstance(plain, dict) and plain["choices"][0]["message"]["content"] == "replaced"
    assert plain["model"] == "m" and isinstance(result, ModelResponse)


# ---- the LiteLLM-only names ----


def test_call_types_carry_litellms_values() -> None:
    assert (
        CallTypes.acompletion == "acompletion" and CallTypes("atext_completion") is CallTypes.atext_completion
    )
    for name in ("aembedding", "aimage_generation", "amoderation", "atranscription", "aresponses"):
        assert CallTypes[name].value == name
    assert CallTypes.anthropic_messages.value == "anthropic_messages"
    assert CallTypes.pass_through.value == "pass_through_endpoint"


async def test_should_proceed_based_on_metadata() -> None:
    assert await should_proceed_based_on_metadata({}, "rail") is True
    assert await should_proceed_based_on_metadata({"metadata": {}}, "rail") is True
    on = {"metadata": {"guardrails": {"rail": True, "other": False}}}
    assert await should_proceed_based_on_metadata(on, "rail") is True
    assert await should_proceed_based_on_metadata(on, "other") is False
    assert await should_proceed_based_on_metadata(on, "unnamed") is False
    assert await should_proceed_based_on_metadata({"metadata": {"guardrails": ["rail"]}}, "rail") is True
    assert await should_proceed_based_on_metadata({"metadata": {"guardrails": ["x"]}}, "rail") is False


def test_verbose_loggers_sit_under_the_sidecars_logging_tree(caplog: pytest.LogCaptureFixture) -> None:
    assert verbose_proxy_logger.name.startswith("extproc.") and verbose_logger.name.startswith("extproc.")
    with caplog.at_level(logging.INFO, logger="extproc"):
        verbose_proxy_logger.info("from a hook")
    assert [r.name for r in caplog.records if r.getMessage() == "from a hook"] == [verbose_proxy_logger.name]


def test_user_api_key_auth_dict_and_json() -> None:
    user = UserAPIKeyAuth(api_key="hashed", team_id="t", metadata={"tier": "gold"}, parent_otel_span=object())
    assert user.dict().keys() == user.model_dump().keys() and user.dict()["team_id"] == "t"
    decoded = orjson.loads(user.json())
    assert decoded["api_key"] == "hashed" and decoded["metadata"] == {"tier": "gold"}
    assert isinstance(decoded["parent_otel_span"], str)


def test_litellms_proxy_exception_signature_maps_to_the_status() -> None:
    error = ProxyException(message="over budget", type="budget_exceeded", param=None, code=429)
    described = describe(error)
    assert error.status_code == 429 and error.type == "budget_exceeded"
    assert (described.status, described.message, described.type) == (429, "over budget", "budget_exceeded")

"""Hook files written for LiteLLM's proxy, with LiteLLM's own imports, loaded and run unchanged.

Two files in the style of LiteLLM's docs and cookbook (`import litellm`, `litellm.integrations`,
`litellm.proxy._types`, `litellm.caching.caching`, `litellm._logging`, `litellm.types.utils`, fastapi's
`HTTPException`), registered under `litellm_settings.callbacks`, driven through a real Envoy with the
`openai` SDK. LiteLLM itself is not installed in the sidecar's environment.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

CUSTOM_CALLBACKS = """
from typing import Literal, Optional

import litellm
from litellm._logging import verbose_proxy_logger
from litellm.caching.caching import DualCache
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth
from litellm.types.utils import CallTypes


class MyCustomHandler(CustomLogger):
    def __init__(self):
        pass

    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: DualCache,
        data: dict,
        call_type: Literal["completion", "text_completion", "embeddings"],
    ):
        verbose_proxy_logger.info("MyCustomHandler pre-call for %s", call_type)
        if call_type not in (CallTypes.completion, CallTypes.acompletion):
            return data
        last = data["messages"][-1]["content"]
        if "forbidden topic" in last:
            return "That topic is not allowed here."
        seen = await cache.async_get_cache("requests_seen") or 0
        await cache.async_set_cache("requests_seen", seen + 1)
        data["temperature"] = 0.25
        verbose_proxy_logger.debug("caller %s", user_api_key_dict.json())
        data["user"] = "checked-by-hook"
        return data

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: UserAPIKeyAuth, response):
        if isinstance(response, litellm.ModelResponse):
            for choice in response.choices:
                if isinstance(choice, litellm.Choices) and choice.get("message") is not None:
                    choice.message.content = choice.message.content + " [checked]"
                else:
                    choice["text"] = choice["text"] + " [checked]"
        return response


proxy_handler_instance = MyCustomHandler()
"""

RESPONSE_REWRITER = """
from typing import Any, AsyncGenerator

from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy.proxy_server import DualCache, UserAPIKeyAuth
from litellm.types.utils import Choices, Message, ModelResponse, ModelResponseStream


class ResponseRewriter(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict: UserAPIKeyAuth, cache: DualCache, data: dict, call_type):
        text = str(data.get("messages") or data.get("prompt"))
        if "blocked word" in text:
            raise HTTPException(status_code=400, detail={"error": "blocked word in request"})
        return data

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: UserAPIKeyAuth, response):
        if "replace me" not in str(data.get("messages")):
            return None
        import litellm

        return ModelResponse(
            model=response.model,
            choices=[Choices(finish_reason="stop", message=Message(content="a fresh answer"))],
            usage=litellm.Usage(prompt_tokens=1, completion_tokens=3, total_tokens=4),
        )

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: UserAPIKeyAuth, response: Any, request_data: dict
    ) -> AsyncGenerator[ModelResponseStream, None]:
        async for chunk in response:
            if isinstance(chunk, ModelResponseStream):
                for choice in chunk.choices:
                    if choice.delta.content:
                        choice.delta.content = choice.delta.content.upper()
            yield chunk


rewriter = ResponseRewriter()
"""

CONFIG = """\
litellm_settings:
  callbacks: ["custom_callbacks.proxy_handler_instance", "response_rewriter.rewriter"]
"""
POLL_DEADLINE_S = 10.0


@pytest.fixture()
def stack(e2e_stack: Any) -> Any:
    stack = e2e_stack(
        CONFIG, {"custom_callbacks.py": CUSTOM_CALLBACKS, "response_rewriter.py": RESPONSE_REWRITER}
    )
    stack.mock_clear()
    return stack


@pytest.fixture()
def client(stack: Any) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-dummy", max_retries=0) as client:
        yield client


def ask(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], **extra
    )


def test_the_pre_call_hook_changes_the_request_and_the_success_hook_the_answer(
    stack: Any, client: openai.OpenAI
) -> None:
    answer = ask(client, "hello there")
    assert answer.choices[0].message.content == "[mock:gpt-4o] hello there [checked]"
    upstream = stack.mock_last()
    assert upstream is not None and upstream["path"].endswith("/chat/completions")
    sent = json.loads(base64.b64decode(upstream["body_base64"]))
    assert sent["temperature"] == 0.25 and sent["user"] == "checked-by-hook"


def test_a_text_completion_is_a_model_response_too(stack: Any, client: openai.OpenAI) -> None:
    answer = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert answer.choices[0].text == "[mock:gpt-3.5-turbo-instruct] say hi [checked]"
    assert len(stack.mock_requests()) == 1


def test_a_string_from_the_pre_call_hook_refuses(stack: Any, client: openai.OpenAI) -> None:
    answer = ask(client, "tell me about the forbidden topic")
    assert answer.choices[0].message.content == "That topic is not allowed here."
    assert stack.mock_requests() == []


def test_fastapis_http_exception_refuses_with_its_status(stack: Any, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "this has a blocked word")
    assert caught.value.status_code == 400
    assert "blocked word in request" in caught.value.message
    assert stack.mock_requests() == []


def test_a_constructed_model_response_replaces_the_answer(stack: Any, client: openai.OpenAI) -> None:
    answer = ask(client, "please replace me")
    assert answer.choices[0].message.content == "a fresh answer"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.id.startswith("chatcmpl-") and answer.model == "gpt-4o"
    assert answer.usage is not None and answer.usage.total_tokens == 4
    assert len(stack.mock_requests()) == 1


def test_stream_chunks_are_model_response_streams(stack: Any, client: openai.OpenAI) -> None:
    stream = ask(client, "stream this please", stream=True)
    with stream:
        chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "[MOCK:GPT-4O] STREAM THIS PLEASE"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_verbose_proxy_logger_writes_to_the_sidecars_log(stack: Any, client: openai.OpenAI) -> None:
    ask(client, "log me")
    deadline = time.monotonic() + POLL_DEADLINE_S
    while "MyCustomHandler pre-call for" not in stack.sidecar_log():
        assert time.monotonic() < deadline, stack.sidecar_log()[-2000:]
        time.sleep(0.05)
    assert "extproc.litellm.proxy" in stack.sidecar_log()

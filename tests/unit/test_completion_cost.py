"""`completion_cost` and `cost_per_token`: where prices come from (config, then the shipped table), which
names a model is found by, token counts from a response's usage or estimated from texts, and LiteLLM's
error for a model nobody prices."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from extproc.api.views import wrap
from extproc.compat import cost
from extproc.compat.cost import ModelNotMappedError, completion_cost, cost_per_token, use_prices
from extproc.request import pipeline
from extproc.settings.config import Deployment

GPT_4O = cost.TABLE["gpt-4o"]


@pytest.fixture(autouse=True)
def no_config_prices() -> Iterator[None]:
    use_prices(())
    yield
    use_prices(())


def chat_response(model: str, prompt: int, completion: int, **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, **usage},
    }


def test_the_shipped_table_is_dated_and_prices_every_model_both_ways():
    raw = orjson.loads(cost.PRICE_TABLE.read_bytes())
    assert raw["as_of"] == "2025-11"
    assert set(cost.TABLE) == set(raw["models"])
    for name, entry in raw["models"].items():
        assert entry["input_cost_per_token"] > 0, name
        assert entry["output_cost_per_token"] >= 0, name
    for model in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3",
        "o4-mini",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ):
        assert model in cost.TABLE
    assert cost.TABLE["text-embedding-3-small"].input == 2e-08


def test_a_response_is_priced_from_its_usage_at_the_table_price():
    response = chat_response("gpt-4o", 1000, 200)
    assert completion_cost(completion_response=response) == pytest.approx(1000 * 2.5e-06 + 200 * 1e-05)


def test_the_response_view_hooks_get_works_like_the_dict():
    response = chat_response("gpt-4o-mini", 100, 10)
    view = wrap(response)
    assert completion_cost(completion_response=view) == completion_cost(completion_response=response)
    assert completion_cost(completion_response=view) == pytest.approx(100 * 1.5e-07 + 10 * 6e-07)


def test_pydantic_like_and_attribute_responses_work():
    class Dumpable:
        def model_dump(self) -> dict[str, Any]:
            return chat_response("gpt-4.1", 10, 10)

    class Usage:
        prompt_tokens, completion_tokens = 10, 10

    class Attributes:
        model, usage = "gpt-4.1", Usage()

    expected = 10 * 2e-06 + 10 * 8e-06
    assert completion_cost(completion_response=Dumpable()) == pytest.approx(expected)
    assert completion_cost(completion_response=Attributes()) == pytest.approx(expected)
    assert completion_cost(completion_response={"model": "gpt-4.1"}) == 0.0  # no usage: no tokens


def test_cached_prompt_tokens_cost_the_cache_read_price():
    response = chat_response("gpt-4o", 1000, 0, prompt_tokens_details={"cached_tokens": 400})
    assert completion_cost(completion_response=response) == pytest.approx(600 * 2.5e-06 + 400 * 1.25e-06)
    anthropic = chat_response("claude-sonnet-4-5", 1000, 0, cache_creation_input_tokens=100)
    assert completion_cost(completion_response=anthropic) == pytest.approx(900 * 3e-06 + 100 * 3.75e-06)


def test_embeddings_count_their_prompt_tokens_only():
    response = {"object": "list", "model": "text-embedding-3-large", "usage": {"prompt_tokens": 50}}
    assert completion_cost(completion_response=response) == pytest.approx(50 * 1.3e-07)


@pytest.mark.parametrize(
    "name",
    ["openai/gpt-4o", "gpt-4o-2024-08-06", "azure/gpt-4o-2024-11-20", "claude-sonnet-4-5-20250929"],
)
def test_provider_prefixes_and_dated_names_find_the_base_price(name):
    base = "claude-sonnet-4-5" if "claude" in name else "gpt-4o"
    assert cost.price_of(name) == cost.TABLE[base]


def test_an_exact_dated_entry_wins_over_its_base_name():
    assert cost.price_of("gpt-4o-2024-05-13").input == 5e-06


def test_an_unknown_model_raises_litellm_s_unmapped_model_error():
    with pytest.raises(ModelNotMappedError) as raised:
        completion_cost(completion_response=chat_response("my-private-llm", 1, 1))
    assert type(raised.value).__mro__[1] is Exception
    assert str(raised.value).startswith(
        "This model isn't mapped yet. model=my-private-llm, custom_llm_provider=None."
    )
    with pytest.raises(Exception, match="This model isn't mapped yet"):
        cost_per_token(model="my-private-llm", prompt_tokens=1, completion_tokens=1)


def test_no_model_anywhere_is_a_value_error():
    with pytest.raises(ValueError, match="no model given"):
        completion_cost(completion_response={"usage": {"prompt_tokens": 1}})


def test_config_prices_from_model_info_by_public_and_upstream_name():
    use_prices(
        [
            Deployment(
                "team-model",
                {"model": "openai/gpt-4o"},
                {"id": "d1", "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
            )
        ]
    )
    expected = 10 * 0.001 + 5 * 0.002
    assert completion_cost(completion_response=chat_response("team-model", 10, 5)) == pytest.approx(expected)
    # The upstream name carries the deployment's price too, and the config wins over the table.
    assert completion_cost(completion_response=chat_response("openai/gpt-4o", 10, 5)) == pytest.approx(
        expected
    )
    assert completion_cost(completion_response=chat_response("gpt-4o-2024-08-06", 10, 5)) == pytest.approx(
        10 * GPT_4O.input + 5 * GPT_4O.output
    )
    # A model= argument names the model to price, as in LiteLLM.
    assert completion_cost(
        completion_response=chat_response("x", 10, 5), model="team-model"
    ) == pytest.approx(expected)


def test_config_prices_from_litellm_params_base_model_or_the_model_behind_an_alias():
    use_prices(
        [
            Deployment("priced", {"model": "vllm/llama", "input_cost_per_token": 1e-06}),
            Deployment("azure-alias", {"model": "azure/my-deployment"}, {"base_model": "azure/gpt-4.1"}),
            Deployment("alias", {"model": "anthropic/claude-haiku-4-5"}),
            Deployment("nothing-known", {"model": "vllm/other"}),
        ]
    )
    assert cost.price_of("priced") == cost.Price(1e-06, 0.0)
    assert cost.price_of("azure-alias") == cost.TABLE["gpt-4.1"]
    assert cost.price_of("alias") == cost.TABLE["claude-haiku-4-5"]
    with pytest.raises(ModelNotMappedError):
        cost.price_of("nothing-known")
    assert cost.deployment_for("alias") is cost.deployment_for("anthropic/claude-haiku-4-5")
    assert cost.deployment_for("unknown") is None


def test_building_a_pipeline_installs_its_config_prices(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: billed\n"
        "    litellm_params: {model: billed-upstream}\n"
        "    model_info: {input_cost_per_token: 0.5, output_cost_per_token: 1.5}\n"
    )
    pipeline.load(config)
    assert completion_cost(completion_response=chat_response("billed", 2, 2)) == pytest.approx(4.0)
    config.write_text("model_list: []\n")
    pipeline.load(config)  # a reload replaces the prices, it does not add to them
    with pytest.raises(ModelNotMappedError):
        completion_cost(completion_response=chat_response("billed", 2, 2))


def test_texts_without_a_response_are_estimated_at_four_characters_a_token():
    messages = [
        {"role": "user", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 7}]},
    ]
    # 40 + 1 (the join) + 7 characters -> 12 tokens; "z" * 9 -> 3 tokens
    expected = 12 * GPT_4O.input + 3 * GPT_4O.output
    assert completion_cost(model="gpt-4o", messages=messages, completion="z" * 9) == pytest.approx(expected)
    assert completion_cost(model="gpt-4o", prompt="p" * 8) == pytest.approx(2 * GPT_4O.input)


def test_cost_per_token_returns_prompt_and_completion_costs():
    prompt_cost, completion_cost_usd = cost_per_token(
        model="o4-mini", prompt_tokens=1000, completion_tokens=100
    )
    assert (prompt_cost, completion_cost_usd) == pytest.approx((1000 * 1.1e-06, 100 * 4.4e-06))
    assert cost_per_token(model="o3", prompt_tokens=100, cache_read_input_tokens=100) == pytest.approx(
        (100 * 5e-07, 0.0)
    )


def test_custom_prices_passed_in_the_call_win():
    custom = {"input_cost_per_token": 1.0, "output_cost_per_token": 2.0}
    response = chat_response("unpriced-anywhere", 3, 4)
    assert completion_cost(completion_response=response, custom_cost_per_token=custom) == 11.0
    assert completion_cost(completion_response=response, custom_cost_per_second=0.5, total_time=4) == 2.0
    assert cost_per_token(model="unpriced", prompt_tokens=1, custom_cost_per_token=custom) == (1.0, 0.0)


def test_litellm_only_keywords_are_accepted():
    response = chat_response("gpt-4o", 1, 1)
    value = completion_cost(
        completion_response=response,
        call_type="acompletion",
        custom_llm_provider="openai",
        region_name=None,
        optional_params={},
        litellm_model_name="gpt-4o",
        router_model_id="id",
    )
    assert math.isclose(value, GPT_4O.input + GPT_4O.output)

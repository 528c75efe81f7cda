"""`completion_cost` and `cost_per_token`, with LiteLLM's signatures, priced as LiteLLM's proxy prices.

Where a model's price comes from (the first that knows it wins):
1. the config's `model_list` (installed by `use_prices` when a pipeline is built): a deployment's
   `model_info.input_cost_per_token` / `output_cost_per_token` (LiteLLM's custom pricing; `litellm_params`
   may carry them too), known by its public `model_name` and by its upstream `litellm_params.model`. A
   deployment without prices of its own is known at the table's price of its `model_info.base_model`, else
   of its upstream model, so a public alias costs what the model behind it costs;
2. the shipped table (`model_prices.json`, dated inside): common OpenAI and Anthropic models.
Each name is tried as given, then without a provider prefix (`openai/gpt-4o`), then without a date or
`-latest` suffix (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`).

A model nobody prices raises `ModelNotMappedError`, a plain `Exception` whose message starts as LiteLLM's
unmapped-model error does (hooks match on it). Token counts come from a response's `usage`; without a
response, from the texts given, estimated at 4 characters a token (the sidecar carries no tokenizer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from extproc.api.views import unwrap
from extproc.settings.config import Deployment

PRICE_TABLE: Final = Path(__file__).with_name("model_prices.json")
CHARS_PER_TOKEN: Final = 4
_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class ModelNotMappedError(Exception):
    """No price for a model: neither the config's `model_list` nor the shipped table has one."""

    def __init__(self, model: str, custom_llm_provider: str | None = None) -> None:
        super().__init__(
            f"This model isn't mapped yet. model={model}, custom_llm_provider={custom_llm_provider}. "
            "Give its deployment model_info.input_cost_per_token and output_cost_per_token in the "
            "config's model_list."
        )
        self.model = model


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token: input, output, and (where the provider prices them apart) cached input tokens."""

    input: float
    output: float
    cache_read: float | None = None
    cache_creation: float | None = None

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Price | None:
        """The price an entry states (LiteLLM's key names), or None when it states neither token price."""
        given_in = _number(entry.get("input_cost_per_token"))
        given_out = _number(entry.get("output_cost_per_token"))
        if given_in is None and given_out is None:
            return None
        return cls(
            given_in or 0.0,
            given_out or 0.0,
            _number(entry.get("cache_read_input_token_cost")),
            _number(entry.get("cache_creation_input_token_cost")),
        )

    def costs(self, prompt: int, completion: int, cached: int = 0, created: int = 0) -> tuple[float, float]:
        """(prompt cost, completion cost); cached and cache-written tokens are part of `prompt`."""
        cached = max(0, min(cached, prompt))
        created = max(0, min(created, prompt - cached))
        plain = prompt - cached - created
        read_price = self.input if self.cache_read is None else self.cache_read
        write_price = self.input if self.cache_creation is None else self.cache_creation
        return plain * self.input + cached * read_price + created * write_price, completion * self.output


def _load_table(path: Path) -> dict[str, Price]:
    models = orjson.loads(path.read_bytes())["models"]
    table = {name: Price.of(entry) for name, entry in models.items()}
    return {name: price for name, price in table.items() if price is not None}


# Read once, at import (when the pipeline is built), never on a request's path.
TABLE: Final = _load_table(PRICE_TABLE)
_config_prices: dict[str, Price] = {}
_deployments: dict[str, Deployment] = {}


def names_of(model: str) -> Iterator[str]:
    """The names a model is looked up by, most specific first."""
    bare = model.rpartition("/")[2]
    seen = set()
    for name in (model, bare, _SUFFIX.sub("", model), _SUFFIX.sub("", bare)):
        if name and name not in seen:
            seen.add(name)
            yield name


def _table_price(model: str) -> Price | None:
    return next((TABLE[name] for name in names_of(model) if name in TABLE), None)


def _deployment_price(deployment: Deployment) -> Price | None:
    own = Price.of(deployment.model_info) or Price.of(deployment.litellm_params)
    if own is not None:
        return own
    base = deployment.model_info.get("base_model")
    if isinstance(base, str) and (price := _table_price(base)) is not None:
        return price
    return _table_price(deployment.litellm_params["model"])


def use_prices(model_list: Sequence[Deployment]) -> None:
    """Install a config's prices and deployments (the pipeline being built); the first deployment of a
    name wins, as it does for a request naming it."""
    prices: dict[str, Price] = {}
    deployments: dict[str, Deployment] = {}
    for deployment in model_list:
        price = _deployment_price(deployment)
        for name in (deployment.model_name, deployment.litellm_params["model"]):
            deployments.setdefault(name, deployment)
            if price is not None:
                prices.setdefault(name, price)
    global _config_prices, _deployments
    _config_prices, _deployments = prices, deployments


def deployment_for(model: Any) -> Deployment | None:
    """The config's deployment a request's model names (public or upstream name), if any."""
    return _deployments.get(model) if isinstance(model, str) else None


def price_of(model: str, custom_llm_provider: str | None = None) -> Price:
    """A model's price, config first, then the table; raises `ModelNotMappedError`."""
    config_price = next((_config_prices[n] for n in names_of(model) if n in _config_prices), None)
    price = config_price or _table_price(model)
    if price is None:
        raise ModelNotMappedError(model, custom_llm_provider)
    return price


def is_priced(model: Any) -> bool:
    if not isinstance(model, str) or not model:
        return False
    try:
        price_of(model)
    except ModelNotMappedError:
        return False
    return True


def _field(value: Any, name: str) -> Any:
    """A field of a dict, a view or a pydantic-like object, as plain JSON."""
    if isinstance(value, dict):
        return value.get(name)
    return unwrap(getattr(value, name, None))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """What a response's `usage` says (chat, completions and embeddings shapes, and Responses API names)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    created: int = 0

    @classmethod
    def of(cls, usage: Any) -> TokenCounts:
        """Counts from a `usage` dict, view or object; zeros when there is none."""
        if usage is None:
            return cls()

        def first(*names: str) -> int:
            return next((n for name in names if (n := _count(_field(usage, name)))), 0)

        details = _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details")
        cached = _count(_field(details, "cached_tokens")) if details is not None else 0
        return cls(
            first("prompt_tokens", "input_tokens"),
            first("completion_tokens", "output_tokens"),
            cached or first("cache_read_input_tokens"),
            first("cache_creation_input_tokens"),
        )


def estimated_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _message_text(messages: Sequence[Any]) -> str:
    parts: list[str] = []
    for message in messages:
        content = _field(message, "content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return " ".join(parts)


def cost_per_token(
    model: str = "",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    response_time_ms: float | None = 0.0,
    custom_llm_provider: str | None = None,
    region_name: str | None = None,
    prompt_characters: int | None = None,
    completion_characters: int | None = None,
    cache_creation_input_tokens: int | None = 0,
    cache_read_input_tokens: int | None = 0,
    custom_cost_per_token: Mapping[str, float] | None = None,
    custom_cost_per_second: float | None = None,
    call_type: str = "completion",
    **_: Any,
) -> tuple[float, float]:
    """(prompt cost, completion cost) in USD for these token counts, as LiteLLM's `cost_per_token`."""
    if custom_cost_per_second is not None:
        return custom_cost_per_second * (response_time_ms or 0.0) / 1000, 0.0
    price = Price.of(custom_cost_per_token) if custom_cost_per_token else None
    if price is None:
        price = price_of(model, custom_llm_provider)
    return price.costs(
        _count(prompt_tokens),
        _count(completion_tokens),
        _count(cache_read_input_tokens),
        _count(cache_creation_input_tokens),
    )


def completion_cost(
    completion_response: Any = None,
    model: str | None = None,
    prompt: str = "",
    messages: Sequence[Any] | None = None,
    completion: str = "",
    total_time: float | None = 0.0,
    call_type: str | None = None,
    custom_llm_provider: str | None = None,
    region_name: str | None = None,
    size: str | None = None,
    quality: str | None = None,
    n: int | None = None,
    custom_cost_per_token: Mapping[str, float] | None = None,
    custom_cost_per_second: float | None = None,
    optional_params: dict[str, Any] | None = None,
    custom_pricing: bool | None = None,
    base_model: str | None = None,
    **_: Any,
) -> float:
    """The cost in USD of one call, as LiteLLM's `completion_cost`: from a response (a dict, a view or a
    pydantic-like object) and its `usage`, or from a model and the texts of a call."""
    response = unwrap(completion_response)
    response_model = _field(response, "model") if response is not None else None
    name = base_model or model or response_model
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"completion_cost: no model given, and none in completion_response={completion_response!r}"
        )
    if custom_cost_per_second is not None:
        return custom_cost_per_second * (total_time or 0.0)
    if response is not None:
        counts = TokenCounts.of(_field(response, "usage"))
    else:
        text = _message_text(messages) if messages else prompt
        counts = TokenCounts(estimated_tokens(text), estimated_tokens(completion))
    prompt_cost, completion_cost_usd = cost_per_token(
        model=name,
        prompt_tokens=counts.prompt,
        completion_tokens=counts.completion,
        custom_llm_provider=custom_llm_provider,
        cache_read_input_tokens=counts.cached,
        cache_creation_input_tokens=counts.created,
        custom_cost_per_token=custom_cost_per_token,
    )
    return prompt_cost + completion_cost_usd

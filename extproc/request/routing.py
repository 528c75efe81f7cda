"""Model routing from LiteLLM's `model_list`: a public `model_name` to one of its deployments.

Several deployments of one name are spread round robin, or at random by `litellm_params.weight` when any
has one (LiteLLM's "simple-shuffle"). The session rewrites the body's `model` to the deployment's
`litellm_params.model` and sets `x-llm-deployment` (with the route cache cleared) so Envoy can pick
the deployment's cluster; the generated Envoy config has one cluster per `api_base`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from extproc.errors import ProxyException
from extproc.settings.config import Deployment

DEPLOYMENT_HEADER = "x-llm-deployment"
ALL_MODELS = "all-proxy-models"
_PROVIDER_PREFIX = "openai/"  # LiteLLM's prefix for OpenAI-compatible upstreams; the upstream wants the rest


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment: the id Envoy routes on, the upstream model name, where it lives."""

    id: str
    model_name: str
    upstream_model: str
    api_base: str | None
    weight: float


def _target(index: int, deployment: Deployment) -> Target:
    params = deployment.litellm_params
    model = str(params["model"])
    api_base = params.get("api_base")
    weight = params.get("weight", 1)
    return Target(
        id=deployment.route_id(index),
        model_name=deployment.model_name,
        upstream_model=model.removeprefix(_PROVIDER_PREFIX),
        api_base=str(api_base).rstrip("/") if api_base else None,
        weight=float(weight) if isinstance(weight, int | float) and weight > 0 else 1.0,
    )


class Router:
    """Built once per config; `pick` is a dict lookup plus a round-robin step."""

    def __init__(self, model_list: tuple[Deployment, ...]) -> None:
        self.targets = tuple(_target(i, d) for i, d in enumerate(model_list))
        by_name: dict[str, list[Target]] = {}
        for target in self.targets:
            by_name.setdefault(target.model_name, []).append(target)
        self._by_name = by_name
        self._cycles: dict[str, Iterator[Target]] = {name: itertools.cycle(t) for name, t in by_name.items()}
        self.renames = any(t.upstream_model != t.model_name for t in self.targets)

    def pick(self, model: Any) -> Target | None:
        if not isinstance(model, str):
            return None
        targets = self._by_name.get(model)
        if not targets:
            return None
        if len(targets) > 1 and any(t.weight != 1.0 for t in targets):
            return random.choices(targets, weights=[t.weight for t in targets])[0]
        return next(self._cycles[model])


def route(router: Router, model: Any, path: str) -> Target:
    """The deployment for the requested `model`; an unknown name is a 400."""
    target = router.pick(model)
    if target is None:
        message = (
            f"{path}: Invalid model name passed in model={model}. "
            "Call `/v1/models` to view available models for your key."
        )
        raise ProxyException(message, 400, "model")
    return target


def allowed(model: Any, models: list[str]) -> bool:
    """A key with no model list, or with `all-proxy-models`, may use any model."""
    return not models or ALL_MODELS in models or model in models

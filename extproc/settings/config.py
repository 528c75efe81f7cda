"""Config: LiteLLM's proxy config YAML as it is, plus an `extproc:` section for the sidecar.

Every LiteLLM key is judged by extproc/settings/litellm_keys.py: a key LiteLLM enforces works here or
the config is refused naming it; a key that enforces nothing is one warning; unknown keys are warnings.
`os.environ/NAME` strings are resolved. The `extproc:` section is read by extproc/settings/sidecar.py;
its types are importable from here too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.settings.checks import ConfigError, boolean, mapping
from extproc.settings.guardrails import GuardrailEntry, deployment_guardrails, parse_guardrails
from extproc.settings.litellm_keys import SECTIONS, TOP_LEVEL_KEYS, judge
from extproc.settings.sidecar import (
    MAX_WORKERS,
    CacheSettings,
    HandlerPolicy,
    SidecarSettings,
    TlsSettings,
    parse_sidecar,
)
from extproc.settings.tracing import TracingSettings

__all__ = [
    "ENV_PREFIX",
    "MAX_WORKERS",
    "CacheSettings",
    "Config",
    "ConfigError",
    "Deployment",
    "HandlerPolicy",
    "SidecarSettings",
    "TlsSettings",
    "load",
    "parse",
    "resolve_env",
]


@dataclass(frozen=True, slots=True)
class Deployment:
    """One `model_list` entry: a public name and what goes upstream."""

    model_name: str
    litellm_params: dict[str, Any]
    model_info: dict[str, Any] = field(default_factory=dict)

    def route_id(self, index: int) -> str:
        """The id Envoy routes on (`x-llm-deployment`): `model_info.id`, or the name and the position,
        with what a header value and a route name cannot hold replaced."""
        raw_id = str(self.model_info.get("id") or f"{self.model_name}-{index}")
        return re.sub(r"[^A-Za-z0-9_.-]", "-", raw_id)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a config file says, validated."""

    path: Path
    callbacks: tuple[str, ...]
    enforce_user_param: bool
    model_list: tuple[Deployment, ...]
    sidecar: SidecarSettings
    warnings: tuple[str, ...]
    guardrails: tuple[GuardrailEntry, ...] = ()
    # What maps onto the sidecar's own settings (prometheus -> metrics_listen): printed, never a warning.
    notes: tuple[str, ...] = ()
    # model_name -> the guardrails its deployments name (`litellm_params.guardrails`): run for its requests
    deployment_guardrails: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent


TOP_KEYS = {
    "model_list",
    "litellm_settings",
    "general_settings",
    "router_settings",
    "environment_variables",
    "guardrails",
    "extproc",
}
ENV_PREFIX = "os.environ/"


def resolve_env(value: Any, where: str) -> Any:
    """Replace every `os.environ/NAME` string, as LiteLLM does, naming the key when NAME is unset."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name!r} is not set")
        return os.environ[name]
    if isinstance(value, dict):
        return {k: resolve_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _callbacks(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else (value or [])
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError("litellm_settings.callbacks: expected a string or a list of strings")
    return tuple(items)


def _model_list(value: Any) -> tuple[Deployment, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("model_list: expected a list")
    deployments = []
    for i, entry in enumerate(value):
        where = f"model_list[{i}]"
        entry = mapping(entry, where)
        name = entry.get("model_name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.model_name: expected a non-empty string")
        params = mapping(entry.get("litellm_params"), f"{where}.litellm_params")
        if not isinstance(params.get("model"), str):
            raise ConfigError(f"{where}.litellm_params.model: expected a string")
        deployments.append(Deployment(name, params, mapping(entry.get("model_info"), f"{where}.model_info")))
    return tuple(deployments)


API_BASE_FORM = "write api_base as http(s)://host[:port][/path], e.g. http://host:8000/v1"


def _check_routes(deployments: tuple[Deployment, ...]) -> None:
    """With routing, every deployment needs its own route id and an api_base Envoy can reach."""
    seen: dict[str, int] = {}
    for i, deployment in enumerate(deployments):
        route_id = deployment.route_id(i)
        if route_id in seen:
            first = seen[route_id]
            raise ConfigError(
                f"model_list[{i}].model_info.id: deployments {first} and {i} both route as {route_id!r} "
                "(ids may hold only letters, digits, '_', '.' and '-'); give each a distinct id"
            )
        seen[route_id] = i
        api_base = deployment.litellm_params.get("api_base")
        if api_base is None:
            continue
        where = f"model_list[{i}].litellm_params.api_base"
        parts = urlsplit(api_base) if isinstance(api_base, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ConfigError(f"{where}: {api_base!r} is not usable: {API_BASE_FORM}")
        try:
            parts.port  # noqa: B018 (raises ValueError for a port out of range)
        except ValueError:
            raise ConfigError(f"{where}: {api_base!r} has a bad port: {API_BASE_FORM}") from None


def _mapped_settings(sidecar: dict[str, Any], general: dict[str, Any]) -> dict[str, Any]:
    """The `extproc:` mapping with LiteLLM's keys that map onto it applied where it does not say
    otherwise: `general_settings.max_request_size_mb` -> `max_request_bytes`."""
    size_mb = general.get("max_request_size_mb")
    if size_mb is None or "max_request_bytes" in sidecar:
        return sidecar
    if isinstance(size_mb, bool) or not isinstance(size_mb, int | float) or size_mb <= 0:
        raise ConfigError(f"general_settings.max_request_size_mb: expected a number > 0, got {size_mb!r}")
    return {**sidecar, "max_request_bytes": int(size_mb * 1024 * 1024)}


def _refusal(errors: list[str]) -> str:
    """One error, or all of them: every key LiteLLM enforces that cannot be enforced here is named."""
    if len(errors) == 1:
        return errors[0]
    return f"{len(errors)} keys would be enforced by LiteLLM and cannot be here:\n" + "\n".join(
        f"  - {error}" for error in errors
    )


def parse(raw: Any, path: Path) -> Config:
    """Validate a decoded config document."""
    doc = mapping(raw, "config")
    warnings = [f"{key}: unknown top-level key, ignored" for key in doc.keys() - TOP_KEYS - TOP_LEVEL_KEYS]
    for name, value in mapping(doc.get("environment_variables"), "environment_variables").items():
        os.environ.setdefault(str(name), str(value))
    doc = resolve_env(doc, "config")
    litellm = mapping(doc.get("litellm_settings"), "litellm_settings")
    general = mapping(doc.get("general_settings"), "general_settings")
    if "guardrails" in litellm:
        raise ConfigError(
            "litellm_settings.guardrails: this older form is not supported; list each guardrail under the "
            "top-level guardrails: section ({guardrail_name, litellm_params: {guardrail, mode, default_on}})"
        )
    _callbacks(litellm.get("callbacks"))  # its form; which entries are handlers is judged below
    guardrails = parse_guardrails(doc.get("guardrails"))
    sidecar_raw = _mapped_settings(mapping(doc.get("extproc"), "extproc"), general)
    sidecar = parse_sidecar(sidecar_raw, warnings, path.parent)
    sections = {name: mapping(doc.get(name), name) for name in SECTIONS}
    findings = judge(doc, sections, sidecar.metrics_listen)
    if findings.errors:
        raise ConfigError(_refusal(findings.errors))
    warnings += findings.warnings
    if findings.tracing and sidecar.tracing is None:  # `otel`: traces on, OTEL_* settings or defaults
        sidecar = replace(sidecar, tracing=TracingSettings())
    callbacks = findings.handlers
    warnings += [
        f"extproc.handlers.{ref}: not a configured callback"
        for ref in sidecar.handlers.keys() - set(callbacks)
    ]
    model_list = _model_list(doc.get("model_list"))
    selected = deployment_guardrails(doc.get("model_list"), {g.name for g in guardrails})
    if sidecar.routing:
        _check_routes(model_list)
    return Config(
        path=path,
        callbacks=callbacks,
        enforce_user_param=boolean(
            general.get("enforce_user_param", False), "general_settings.enforce_user_param"
        ),
        model_list=model_list,
        sidecar=sidecar,
        warnings=tuple(sorted(warnings)),
        guardrails=guardrails,
        deployment_guardrails=selected,
        notes=tuple(findings.notes),
    )


def load(path: str | Path) -> Config:
    """Read and validate a config file; errors name the file."""
    path = Path(path).absolute()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse(raw if raw is not None else {}, path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

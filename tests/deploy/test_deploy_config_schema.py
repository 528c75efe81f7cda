"""The chart's schema of `config` (config.yaml) is generated from the config loader's key tables
(extproc/settings/json_schema.py): the checked-in one is the generated one, a config the loader would
refuse, or would run with a misspelled key ignored, fails `helm lint` and `template`, and the configs
the loader accepts pass."""

from __future__ import annotations

import json
from pathlib import Path

import helm_python
import pytest
import yaml

from extproc.settings import config as config_loader
from extproc.settings import json_schema

from .helpers import CHART, REPO, lint, render
from .test_deploy_envoy import ENFORCE_ONLY, RESPONSE, TUNED

VALUES_SCHEMA = CHART / "values.schema.json"
GOOD = {
    "examples/config.yaml": yaml.safe_load((REPO / "examples/config.yaml").read_text()),
    "deploy/envoy/config.yaml": yaml.safe_load((REPO / "deploy/envoy/config.yaml").read_text()),
    "chart default": yaml.safe_load((CHART / "values.yaml").read_text())["config"],
    "tuned": TUNED["config"],
    "response-side": RESPONSE["config"],
    "enforce-only": ENFORCE_ONLY["config"],
    "everything": {
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {"model": "gpt-4o", "api_base": "http://vllm:8000/v1"}}
        ],
        "litellm_settings": {"callbacks": "custom_callbacks.proxy_handler_instance", "drop_params": True},
        "general_settings": {"enforce_user_param": True, "max_request_size_mb": 4},
        "router_settings": {"routing_strategy": "simple-shuffle"},
        "guardrails": [
            {"guardrail_name": "pii", "litellm_params": {"guardrail": "handlers.pii.PII", "mode": "pre_call"}}
        ],
        "extproc": {
            "listen": ["127.0.0.1:50051"],
            "max_request_bytes": 4096,
            "log_level": "debug",
            "grace_seconds": 2.5,
            "routing": True,
            "messages": "two",
            "workers": 1,
            "call_types": "documented",
            "metrics_listen": "0.0.0.0:9464",
            "cache": {"redis_url": "redis://cache:6379/0", "on_unavailable": "deny", "timeout_ms": 100},
            "handlers": {"custom_callbacks.proxy_handler_instance": {"timeout_ms": 200, "fail_open": True}},
            "auth": {"headers": {"team_id": "x-team"}, "trusted_headers": True},
            "tracing": {"enabled": True, "sample_ratio": 0.5, "service_name": "llm"},
        },
    },
}
# What the loader does with each bad config without the schema: refuse it at pod start ("error") or
# run without what was meant, with a warning in the log ("warning").
BAD = {
    "misspelled extproc key": ({"extproc": {"hook_timeout": 100}}, "warning"),
    "misspelled top-level key": ({"litellm_setings": {"callbacks": ["a.b"]}}, "warning"),
    "refused LiteLLM key": ({"litellm_settings": {"max_parallel_requests": 10}}, "error"),
    "refused top-level key": ({"include": ["other.yaml"]}, "error"),
    "wrong type": ({"extproc": {"hook_timeout_ms": "5s"}}, "error"),
    "bool for an integer": ({"extproc": {"workers": True}}, "error"),
    "unknown log level": ({"extproc": {"log_level": "verbose"}}, "error"),
    "unknown cache key": ({"extproc": {"cache": {"url": "redis://x"}}}, "error"),
    "unknown tracing key": ({"extproc": {"tracing": {"samplr": 1}}}, "error"),
    "identity field that is not settable": ({"extproc": {"auth": {"headers": {"api_key": "x-k"}}}}, "error"),
    "guardrail entry typo": ({"guardrails": [{"guardrail_name": "g", "litellm_param": {}}]}, "error"),
    "enforce_user_param as a string": ({"general_settings": {"enforce_user_param": "yes"}}, "error"),
}


def loader_verdict(config: dict, folder: Path) -> str:
    try:
        parsed = config_loader.parse(config, folder / "config.yaml")
    except config_loader.ConfigError:
        return "error"
    return "warning" if parsed.warnings else "ok"


def test_the_checked_in_schema_is_the_generated_one():
    checked_in = json.loads(VALUES_SCHEMA.read_text())["properties"]["config"]
    assert checked_in == json_schema.config_schema(), (
        "regenerate: python -m extproc.settings.json_schema deploy/helm/llm-extproc/values.schema.json"
    )


def test_the_schema_knows_every_key_of_the_loader():
    extproc = json_schema.config_schema()["properties"]["extproc"]["properties"]
    assert set(extproc) == set(config_loader.SidecarSettings.__dataclass_fields__)
    assert all(extproc[key] for key in extproc), [key for key in extproc if not extproc[key]]


@pytest.mark.parametrize("config", GOOD.values(), ids=GOOD.keys())
def test_configs_the_loader_accepts_pass(tmp_path, config):
    assert loader_verdict(config, tmp_path) != "error"
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema({"config": config})


@pytest.mark.parametrize(("config", "without_schema"), BAD.values(), ids=BAD.keys())
def test_bad_configs_fail_at_helm_instead_of_at_pod_start(tmp_path, config, without_schema):
    assert loader_verdict(config, tmp_path) == without_schema
    with pytest.raises(helm_python.HelmValuesError, match="/config"):
        render({"config": config})


def test_an_empty_section_is_asked_to_go(tmp_path):
    """The loader reads `auth:` with no value as absent; the chart's templates read the config too, so
    its schema asks for a mapping or no key, rather than failing in a template."""
    config = {"extproc": {"auth": None}}
    assert loader_verdict(config, tmp_path) == "ok"
    with pytest.raises(helm_python.HelmValuesError, match="/config/extproc/auth"):
        render({"mode": "istio", "istio": {"workloadSelector": {"labels": {"app": "chat"}}}, "config": config})


def test_helm_lint_names_the_bad_key():
    findings = lint({"config": {"extproc": {"hook_timeout": 100}}})
    assert findings and any("hook_timeout" in finding for finding in findings), findings
    assert lint({"config": {"extproc": {"hook_timeout_ms": 100}}}) == []

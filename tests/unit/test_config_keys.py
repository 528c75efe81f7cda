"""LiteLLM's config keys: enforcement works or is refused by name, the rest warns once, prometheus maps."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from extproc.settings.config import Config, ConfigError, parse
from extproc.settings.litellm_keys import CALLBACK_RULES, KEY_RULES, Handling, hook_rows, markdown_rows
from extproc.types import CallTypeNames

README = Path(__file__).resolve().parents[2] / "README.md"


def load(doc: dict[str, Any]) -> Config:
    return parse(doc, Path("/nowhere/config.yaml"))


@pytest.mark.parametrize(
    ("doc", "key", "advice"),
    [
        ({"policies": {"p": {"guardrails": {"add": ["g"]}}}}, "policies", "guardrails: section"),
        ({"include": ["more.yaml"]}, "include", "merge them"),
        ({"general_settings": {"custom_auth": "auth.user_api_key_auth"}}, "general_settings.custom_auth", "Envoy"),
        ({"general_settings": {"master_key": "sk-1234"}}, "general_settings.master_key", "remove master_key"),
        ({"general_settings": {"max_parallel_requests": 4}}, "general_settings.max_parallel_requests",
         "handlers.rate_limiter"),
        ({"general_settings": {"global_max_parallel_requests": 40}},
         "general_settings.global_max_parallel_requests", "circuit breakers"),
        ({"general_settings": {"allowed_routes": ["/chat/completions"]}}, "general_settings.allowed_routes",
         "RBAC"),
        ({"litellm_settings": {"max_budget": 10}}, "litellm_settings.max_budget", "handlers.rate_limiter"),
        ({"router_settings": {"provider_budget_config": {"openai": {"budget_limit": 1}}}},
         "router_settings.provider_budget_config", "budgets"),
        ({"router_settings": {"optional_pre_call_checks": ["prompt_caching", "router_budget_limiting"]}},
         "router_settings.optional_pre_call_checks (router_budget_limiting)", "budgets"),
        ({"litellm_settings": {"callbacks": ["presidio"]}}, "litellm_settings.callbacks: presidio",
         "handlers.pii"),
        ({"litellm_settings": {"callbacks": "lakera_prompt_injection"}},
         "litellm_settings.callbacks: lakera_prompt_injection", "module.Class"),
        ({"litellm_settings": {"callbacks": ["llamaguard_moderations"]}},
         "litellm_settings.callbacks: llamaguard_moderations", "handlers.llm_judge"),
        ({"litellm_settings": {"callbacks": ["dynamic_rate_limiter"]}},
         "litellm_settings.callbacks: dynamic_rate_limiter", "handlers.rate_limiter"),
        ({"litellm_settings": {"callbacks": ["some_new_vendor"]}}, "litellm_settings.callbacks: some_new_vendor",
         "module.attribute"),
        ({"litellm_settings": {"guardrails": [{"g": {"callbacks": ["hide_secrets"]}}]}},
         "litellm_settings.guardrails", "top-level guardrails: section"),
    ],
)  # fmt: skip
def test_an_enforcement_key_we_cannot_do_is_refused_by_name(doc, key, advice):
    with pytest.raises(ConfigError) as refused:
        load(doc)
    message = str(refused.value)
    assert message.startswith(key + ":"), message
    assert advice in message


def test_every_refused_key_is_named_at_once():
    doc = {"general_settings": {"master_key": "sk", "custom_auth": "a.b"}, "policies": {}}
    with pytest.raises(ConfigError) as refused:
        load(doc)
    message = str(refused.value)
    assert message.startswith("3 keys would be enforced by LiteLLM")
    for key in ("general_settings.master_key:", "general_settings.custom_auth:", "policies:"):
        assert f"  - {key}" in message


def test_every_refused_rule_stops_the_load():
    for rule in KEY_RULES:
        if rule.handling is not Handling.REFUSED or rule.key == "litellm_settings.guardrails":
            continue
        section, _, key = rule.key.partition(".")
        doc: dict[str, Any] = {section: {key: 1}} if key else {section: {}}
        with pytest.raises(ConfigError, match=re.escape(rule.key)):
            load(doc)


def test_logging_integrations_warn_once_each_and_load():
    loaded = load(
        {
            "litellm_settings": {
                "callbacks": ["datadog", "handlers.pii", "langfuse"],
                "success_callback": ["langfuse", "custom_fn.log_it"],
                "failure_callback": "sentry",
                "service_callback": ["datadog"],
                "drop_params": True,
            },
            "router_settings": {"num_retries": 3},
        }
    )
    assert loaded.callbacks == ("handlers.pii",)  # integrations taken out, handlers kept in order
    expected = [
        "litellm_settings.callbacks: datadog: ignored",
        "litellm_settings.callbacks: langfuse: ignored",
        "litellm_settings.success_callback: langfuse: ignored",
        "litellm_settings.success_callback: custom_fn.log_it: ignored",
        "litellm_settings.failure_callback: sentry: ignored",
        "litellm_settings.service_callback: datadog: ignored",
        "litellm_settings.drop_params: ignored",
        "router_settings.num_retries: ignored",
    ]
    for prefix in expected:
        assert sum(w.startswith(prefix) for w in loaded.warnings) == 1, (prefix, loaded.warnings)
    assert len(loaded.warnings) == len(expected)


def test_an_unknown_key_is_a_warning_naming_it():
    loaded = load({"general_settings": {"brand_new_setting": 1}, "something_else": {}})
    assert any(w.startswith("general_settings.brand_new_setting: not a LiteLLM key") for w in loaded.warnings)
    assert "something_else: unknown top-level key, ignored" in loaded.warnings


def test_prometheus_maps_to_metrics_listen_without_a_warning():
    doc: dict[str, Any] = {
        "litellm_settings": {"callbacks": ["prometheus"]},
        "extproc": {"metrics_listen": "127.0.0.1:9100"},
    }
    loaded = load(doc)
    assert loaded.callbacks == ()
    assert loaded.warnings == ()
    assert len(loaded.notes) == 1 and "127.0.0.1:9100" in loaded.notes[0]


def test_prometheus_without_metrics_listen_warns_how_to_turn_it_on():
    loaded = load({"litellm_settings": {"success_callback": ["prometheus"]}})
    assert loaded.notes == ()
    assert len(loaded.warnings) == 1
    assert "set extproc.metrics_listen" in loaded.warnings[0]


@pytest.mark.parametrize("where", ["callbacks", "success_callback"])
def test_otel_switches_tracing_on_with_a_note(where):
    loaded = load({"litellm_settings": {where: ["otel"]}})
    assert loaded.warnings == ()
    assert loaded.callbacks == ()
    assert loaded.notes == (f"litellm_settings.{where}: otel: llm-extproc's own OpenTelemetry traces "
                            "(extproc.tracing)",)  # fmt: skip
    assert loaded.sidecar.tracing_on
    assert not load({}).sidecar.tracing_on


def test_otel_keeps_an_explicit_tracing_section():
    doc = {"litellm_settings": {"callbacks": ["otel"]}, "extproc": {"tracing": {"enabled": False}}}
    assert not load(doc).sidecar.tracing_on
    doc["extproc"] = {"tracing": {"sample_ratio": 0.25, "record_content": True}}
    tracing = load(doc).sidecar.tracing
    assert tracing is not None and tracing.enabled and tracing.sample_ratio == 0.25 and tracing.record_content


def test_max_request_size_mb_maps_onto_max_request_bytes():
    assert load({"general_settings": {"max_request_size_mb": 2}}).sidecar.max_request_bytes == 2 * 1024 * 1024
    both = {"general_settings": {"max_request_size_mb": 2}, "extproc": {"max_request_bytes": 4096}}
    assert load(both).sidecar.max_request_bytes == 4096  # the sidecar's own key wins
    with pytest.raises(ConfigError, match=re.escape("general_settings.max_request_size_mb")):
        load({"general_settings": {"max_request_size_mb": "big"}})


def test_call_types_setting_is_validated():
    assert load({}).sidecar.call_types is CallTypeNames.PROXY
    documented = load({"extproc": {"call_types": "documented"}})
    assert documented.sidecar.call_types is CallTypeNames.DOCUMENTED
    with pytest.raises(
        ConfigError, match=re.escape("extproc.call_types: expected 'proxy' or 'documented', got 'litellm'")
    ):
        load({"extproc": {"call_types": "litellm"}})


def test_the_readme_table_lists_every_key_and_integration():
    readme = README.read_text()
    section = readme.split("## Coming from LiteLLM", 1)[1].split("\n## ", 1)[0]
    for row in (*markdown_rows(), *hook_rows()):
        assert row in section, f"README's 'Coming from LiteLLM' lacks: {row}"
    assert len(markdown_rows()) == len(KEY_RULES) + len(CALLBACK_RULES)

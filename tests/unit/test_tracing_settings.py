"""`extproc.tracing`: validated like the other extproc sections, OTEL_* fallbacks, and Envoy's tracer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_envoy_config import build, ext_proc, generate, validate

from extproc.envoy import envoy_config
from extproc.settings.config import ConfigError, parse
from extproc.settings.tracing import DEFAULT_ENDPOINT, TracingSettings


def tracing(section):
    return parse({"extproc": {"tracing": section}}, Path("/nowhere/config.yaml")).sidecar.tracing


def test_a_section_switches_tracing_on_with_defaults():
    assert tracing({}) == TracingSettings()
    assert tracing({"enabled": False}).enabled is False
    full = {
        "endpoint": "https://collector:4317/",
        "sample_ratio": 0.1,
        "service_name": "gateway-hooks",
        "record_content": True,
        "envoy": False,
    }
    assert tracing(full) == TracingSettings(True, "https://collector:4317", 0.1, "gateway-hooks", True, False)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"endpont": "http://c:4317"}, "extproc.tracing.endpont: unknown key (expected one of enabled, endpoint"),
        ({"enabled": "yes"}, "extproc.tracing.enabled: expected true or false"),
        ({"endpoint": "collector:4317"}, "extproc.tracing.endpoint: expected the OTLP gRPC collector"),
        ({"endpoint": "http://c:4317/v1/traces"}, "extproc.tracing.endpoint: expected the OTLP gRPC collector"),
        ({"endpoint": "http://c:99999"}, "extproc.tracing.endpoint: 'http://c:99999' has a bad port"),
        ({"sample_ratio": 1.5}, "extproc.tracing.sample_ratio: expected a number from 0 to 1"),
        ({"sample_ratio": True}, "extproc.tracing.sample_ratio: expected a number from 0 to 1"),
        ({"service_name": ""}, "extproc.tracing.service_name: expected a non-empty string"),
        ({"record_content": 1}, "extproc.tracing.record_content: expected true or false"),
        ("on", "extproc.tracing: expected a mapping"),
    ],
)
def test_bad_tracing_settings_are_errors_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        tracing(section)


def test_left_out_settings_come_from_opentelemetrys_environment():
    settings = TracingSettings()
    assert settings.collector({}) == DEFAULT_ENDPOINT
    assert settings.collector({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317"}) == "http://a:4317"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1"}
    assert settings.collector(both) == "http://t:1"
    assert TracingSettings(endpoint="http://mine:4317").collector(both) == "http://mine:4317"
    assert settings.ratio({}) == 1.0
    assert settings.ratio({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.2"}) == 0.2
    assert settings.ratio({"OTEL_TRACES_SAMPLER": "always_off"}) == 0.0
    assert settings.ratio({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}) == 1.0
    assert TracingSettings(sample_ratio=0.5).ratio({"OTEL_TRACES_SAMPLER": "always_off"}) == 0.5
    assert settings.service({}) == "llm-extproc"
    assert settings.service({"OTEL_SERVICE_NAME": "hooks"}) == "hooks"


HOOKED = """\
litellm_settings: {callbacks: [h.handler]}
extproc: %s
"""
HANDLER = {
    "h.py": """
    from extproc import CustomLogger
    class H(CustomLogger):
        async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
            return data
    handler = H()
    """
}


def test_envoy_traces_to_the_collector_when_tracing_is_on(tmp_path):
    section = "{tracing: {endpoint: 'http://otel.example:4317', sample_ratio: 0.25, service_name: hooks}}"
    bootstrap = generate(build(tmp_path, HOOKED % section, HANDLER))
    hcm, _ = ext_proc(bootstrap)
    tracer = hcm["tracing"]["provider"]
    assert tracer["name"] == "envoy.tracers.opentelemetry"
    assert tracer["typed_config"]["service_name"] == "hooks-envoy"
    assert tracer["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == envoy_config.OTEL_CLUSTER
    assert hcm["tracing"]["random_sampling"] == {"value": 25.0}
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == envoy_config.OTEL_CLUSTER)
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint == {"socket_address": {"address": "otel.example", "port_value": 4317}}
    assert "typed_extension_protocol_options" in cluster  # OTLP over gRPC: HTTP/2
    result = validate(tmp_path, bootstrap)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("section", ["{}", "{tracing: {enabled: false}}", "{tracing: {envoy: false}}"])
def test_envoy_does_not_trace_unless_asked(tmp_path, section):
    bootstrap = generate(build(tmp_path, HOOKED % section, HANDLER))
    hcm, _ = ext_proc(bootstrap)
    assert "tracing" not in hcm
    assert envoy_config.OTEL_CLUSTER not in {c["name"] for c in bootstrap["static_resources"]["clusters"]}


def test_an_https_collector_is_reached_over_tls(tmp_path):
    bootstrap = generate(build(tmp_path, HOOKED % "{tracing: {endpoint: 'https://otel.example'}}", HANDLER))
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == envoy_config.OTEL_CLUSTER)
    assert cluster["transport_socket"]["typed_config"]["sni"] == "otel.example"
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]["port_value"] == 443
    result = validate(tmp_path, bootstrap)
    assert result.returncode == 0, result.stderr[-2000:]

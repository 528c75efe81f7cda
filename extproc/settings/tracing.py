"""`extproc.tracing`: OpenTelemetry traces of the sidecar (and of the generated Envoy config), validated.

Every setting left out falls back to OpenTelemetry's own environment variables, read where they are
used (the sidecar at start, `envoy-config` when it writes Envoy's bootstrap):
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` (else `http://localhost:4317`),
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` and `OTEL_SERVICE_NAME` (else `llm-extproc`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from extproc.settings.checks import ConfigError, boolean, mapping

DEFAULT_ENDPOINT = "http://localhost:4317"
DEFAULT_SERVICE_NAME = "llm-extproc"
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# OTEL_TRACES_SAMPLER values that sample a share of new traces (OTEL_TRACES_SAMPLER_ARG), and those that
# sample none; any other sampler samples every new trace.
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_NO_SAMPLERS = ("always_off", "parentbased_always_off")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The `extproc.tracing` section (also what `litellm_settings.callbacks: [otel]` switches on)."""

    enabled: bool = True
    endpoint: str | None = None  # the OTLP gRPC collector, http(s)://host:port
    sample_ratio: float | None = None  # of new traces; a request Envoy traced follows Envoy's decision
    service_name: str | None = None
    record_content: bool = False  # prompts and answers as span attributes
    envoy: bool = True  # the generated Envoy config traces too, to the same collector

    def collector(self, environ: Mapping[str, str] = os.environ) -> str:
        """Where spans go: the setting, else OpenTelemetry's environment, else the OTLP default."""
        if self.endpoint is not None:
            return self.endpoint
        return next((environ[name] for name in ENDPOINT_ENVS if environ.get(name)), DEFAULT_ENDPOINT)

    def ratio(self, environ: Mapping[str, str] = os.environ) -> float:
        """The share of new traces sampled: the setting, else OTEL_TRACES_SAMPLER(_ARG), else all."""
        if self.sample_ratio is not None:
            return self.sample_ratio
        sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        if sampler in _NO_SAMPLERS:
            return 0.0
        if sampler in _RATIO_SAMPLERS:
            try:
                return min(max(float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1")), 0.0), 1.0)
            except ValueError:
                return 1.0
        return 1.0

    def service(self, environ: Mapping[str, str] = os.environ) -> str:
        return self.service_name or environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME


TRACING_KEYS = tuple(TracingSettings.__dataclass_fields__)


def _endpoint(value: Any) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise ConfigError(
            f"extproc.tracing.endpoint: expected the OTLP gRPC collector, http(s)://host:port, got {value!r}"
        )
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise ConfigError(f"extproc.tracing.endpoint: {value!r} has a bad port") from None
    return str(value).rstrip("/")


def _ratio(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"extproc.tracing.sample_ratio: expected a number from 0 to 1, got {value!r}")
    return float(value)


def parse_tracing(value: Any) -> TracingSettings | None:
    """The section, validated (unknown keys are errors); None when the config has none."""
    if value is None:
        return None
    raw = mapping(value, "extproc.tracing")
    for key in sorted(raw.keys() - set(TRACING_KEYS)):
        raise ConfigError(f"extproc.tracing.{key}: unknown key (expected one of {', '.join(TRACING_KEYS)})")
    service = raw.get("service_name")
    if service is not None and (not isinstance(service, str) or not service):
        raise ConfigError(f"extproc.tracing.service_name: expected a non-empty string, got {service!r}")
    return TracingSettings(
        enabled=boolean(raw.get("enabled", True), "extproc.tracing.enabled"),
        endpoint=_endpoint(raw.get("endpoint")),
        sample_ratio=_ratio(raw.get("sample_ratio")),
        service_name=service,
        record_content=boolean(raw.get("record_content", False), "extproc.tracing.record_content"),
        envoy=boolean(raw.get("envoy", True), "extproc.tracing.envoy"),
    )

"""Prometheus metrics: what the sidecar did, by call type, outcome, hook and phase, and GenAI histograms.

Labels are bounded and never hold a key or a user: call types, outcomes, status classes, handler labels
from the config, phase names, and (GenAI histograms only) a model name that `model_list` lists, any other
name counted as `other` so a client cannot grow the label set. Served on a port of its own
(`extproc.metrics_listen`).

The GenAI histograms carry the OpenTelemetry GenAI semantic conventions' metric names in Prometheus form
(`gen_ai.client.token.usage` -> `gen_ai_client_token_usage`, with its bucket boundaries).

Several workers (`extproc.workers`) are one scrape target: the supervisor starts them with
`PROMETHEUS_MULTIPROC_DIR` set, so their counters and histograms live in files it aggregates and serves
(`serve_aggregated`); a worker then binds no metrics port. Values read when scraped (cache state, event
loop tasks) are copied into live gauges once a second in that mode, since no scrape reaches a worker.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from extproc.types import CallType

# Set by the supervisor for its workers: the folder of the shared metric files, and the port of the
# aggregated endpoint (a worker binds none of its own).
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
AGGREGATED_PORT_ENV = "LLM_EXTPROC_METRICS_PORT"

REQUESTS = Counter(
    "llm_extproc_requests", "LLM requests that reached the hooks, by how they ended", ["call_type", "outcome"]
)
REFUSALS = Counter("llm_extproc_refusals", "Requests refused or failed by the sidecar, by reason", ["reason"])
UPSTREAM = Counter(
    "llm_extproc_upstream_responses", "Upstream answers seen, by status class", ["status_class"]
)
PHASES = Counter("llm_extproc_phases", "ext_proc messages received from Envoy, by phase", ["phase"])
IN_FLIGHT = Gauge(
    "llm_extproc_in_flight_requests",
    "gRPC streams (HTTP requests) being processed",
    multiprocess_mode="livesum",
)
HOOK_SECONDS = Histogram(
    "llm_extproc_hook_duration_seconds",
    "Time in each hook call",
    ["handler", "hook"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RELOADS = Counter("llm_extproc_reloads", "Config reloads, by result", ["result"])

# GenAI semantic conventions: names, units and bucket boundaries as the conventions advise.
GENAI_LABELS = ["call_type", "gen_ai_request_model", "outcome"]
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Input and output tokens per request, as the upstream reported them (gen_ai.client.token.usage)",
    [*GENAI_LABELS, "gen_ai_token_type"],
    buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
OPERATION_SECONDS = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "Time from the request reaching the sidecar to its ending (gen_ai.client.operation.duration)",
    GENAI_LABELS,
    buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
FIRST_TOKEN_SECONDS = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Streams: time from the request reaching the sidecar to its first chunk "
    "(gen_ai.server.time_to_first_token)",
    GENAI_LABELS,
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0),
)

OTHER = "other"
_CALL_TYPES = frozenset(member.value for member in CallType)
# How `Ending` counts requests (`llm_extproc_requests_total{outcome}`).
OUTCOMES = frozenset(("success", "refused", "error", "upstream_error", "disconnected", "forwarded"))
_models: frozenset[str] = frozenset()
# Token counts under the OpenAI names (what the API families' `usage` gives) or the Messages/Responses ones.
_INPUT_KEYS = ("prompt_tokens", "input_tokens")
_OUTPUT_KEYS = ("completion_tokens", "output_tokens")


def use_models(names: Iterable[str]) -> None:
    """The model names the GenAI histograms may carry: `model_list`'s `model_name`s (set per pipeline)."""
    global _models
    _models = frozenset(name for name in names if name)


def model_label(model: Any) -> str:
    """The model as `model_list` names it, or `other` for any name it does not list."""
    return model if isinstance(model, str) and model in _models else OTHER


def _tokens(usage: Any, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = usage.get(key) if isinstance(usage, Mapping) else getattr(usage, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def record_request(
    call_type: str | None,
    model: Any,
    outcome: str,
    usage: Any,
    duration_s: float,
    first_token_s: float | None = None,
) -> None:
    """One ended request in the GenAI histograms: its duration, its tokens when the upstream reported
    them (a mapping or object with `prompt_tokens`/`completion_tokens` or `input_tokens`/`output_tokens`;
    nothing is recorded for a count not reported), and a stream's time to its first chunk."""
    key = (
        call_type if call_type in _CALL_TYPES else OTHER,
        model_label(model),
        outcome if outcome in OUTCOMES else OTHER,
    )
    children = _GENAI_CHILDREN.get(key)
    if children is None:  # `labels()` is a lock and a dict lookup: resolved once per label set
        children = _GENAI_CHILDREN[key] = (
            OPERATION_SECONDS.labels(*key),
            FIRST_TOKEN_SECONDS.labels(*key),
            TOKEN_USAGE.labels(*key, "input"),
            TOKEN_USAGE.labels(*key, "output"),
        )
    children[0].observe(max(duration_s, 0.0))
    if first_token_s is not None:
        children[1].observe(max(first_token_s, 0.0))
    if usage is None:
        return
    for child, keys in ((children[2], _INPUT_KEYS), (children[3], _OUTPUT_KEYS)):
        count = _tokens(usage, keys)
        if count is not None:
            child.observe(count)


_GENAI_CHILDREN: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}


# Child metrics resolved once: `labels()` is a dict lookup plus a lock, worth hoisting off the hot path.
_PHASE_CHILDREN = {
    phase: PHASES.labels(phase)
    for phase in (
        "request_headers",
        "request_body",
        "response_headers",
        "response_body",
        "request_trailers",
        "response_trailers",
    )
}


def phase(name: str | None) -> None:
    child = _PHASE_CHILDREN.get(name or "")
    if child is not None:
        child.inc()


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class CacheCollector(Collector):
    """The shared cache's state, read when scraped: `llm_extproc_cache_backend_up` and its fallbacks."""

    def __init__(self, backends: Callable[[], Iterable[Any]]) -> None:
        self._backends = backends

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("llm_extproc_cache_backend_up", "1 when the shared cache answers, 0 when down")
        outages = GaugeMetricFamily("llm_extproc_cache_outages", "Shared cache outages since start")
        fallbacks = GaugeMetricFamily(
            "llm_extproc_cache_fallback_calls", "Cache calls answered without the shared store"
        )
        for backend in self._backends():
            up.add_metric([], 1.0 if getattr(backend, "state", "up") == "up" else 0.0)
            outages.add_metric([], float(getattr(backend, "outages", 0)))
            fallbacks.add_metric([], float(getattr(backend, "fallback_calls", 0)))
        return [up, outages, fallbacks]


class TaskCollector(Collector):
    """`llm_extproc_asyncio_tasks`: tasks alive on the sidecar's event loop, read when scraped (from the
    scrape thread: the loop's task set may change meanwhile, so the count is retried)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def collect(self) -> Iterable[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("llm_extproc_asyncio_tasks", "Tasks alive on the sidecar's event loop")
        for _ in range(5):
            try:
                gauge.add_metric([], float(len(asyncio.all_tasks(self._loop))))
                break
            except RuntimeError:  # the set changed while it was read
                continue
        return [gauge]


def multiprocess() -> bool:
    """True in a worker of several: metrics go to the supervisor's files, not to a port of its own."""
    return bool(os.environ.get(MULTIPROCESS_DIR_ENV))


# How the supervisor combines the workers' copies of each scrape-time gauge (`live`: a dead worker's
# value is dropped when the supervisor marks it dead).
_MirrorMode = Literal["livemin", "livesum"]
_MIRROR_MODES: dict[str, _MirrorMode] = {
    "llm_extproc_cache_backend_up": "livemin",  # 0 when any worker finds the shared cache down
    "llm_extproc_cache_outages": "livesum",
    "llm_extproc_cache_fallback_calls": "livesum",
    "llm_extproc_asyncio_tasks": "livesum",
}
MIRROR_INTERVAL_S = 1.0


class GaugeMirror:
    """Copies what scrape-time collectors report into multiprocess gauges, every `MIRROR_INTERVAL_S`
    (a daemon thread, as the scrape thread would read them). A gauge is made on its first value, so a
    collector that reports nothing (no shared cache) shows no series, as in one process."""

    def __init__(self) -> None:
        self._collectors: list[Collector] = []
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, collector: Collector) -> None:
        with self._lock:
            self._collectors.append(collector)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-mirror", daemon=True)
            self._thread.start()
        self.copy()

    def copy(self) -> None:
        with self._lock:
            collectors = list(self._collectors)
        for collector in collectors:
            for family in collector.collect():
                for sample in family.samples:
                    self._gauge(family.name, family.documentation).set(sample.value)

    def _gauge(self, name: str, documentation: str) -> Gauge:
        gauge = self._gauges.get(name)
        if gauge is None:
            mode: _MirrorMode = _MIRROR_MODES.get(name, "livesum")
            gauge = Gauge(name, documentation, registry=None, multiprocess_mode=mode)
            self._gauges[name] = gauge
        return gauge

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(MIRROR_INTERVAL_S):
            self.copy()


_mirror = GaugeMirror()


def _register(collector: Collector) -> None:
    if multiprocess():
        _mirror.add(collector)
    else:
        REGISTRY.register(collector)


_collector: CacheCollector | None = None


def watch_cache(backends: Callable[[], Iterable[Any]]) -> None:
    """Report the current pipeline's shared cache (called once; the callable follows reloads)."""
    global _collector
    if _collector is None:
        _collector = CacheCollector(backends)
        _register(_collector)


def watch_tasks(loop: asyncio.AbstractEventLoop) -> None:
    _register(TaskCollector(loop))


def serve(listen: str) -> int:
    """Start the scrape endpoint (a daemon thread); returns the bound port. A worker of several binds
    nothing and returns the port of the supervisor's endpoint, which serves its metrics too."""
    aggregated = os.environ.get(AGGREGATED_PORT_ENV)
    if multiprocess() and aggregated:
        return int(aggregated)
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")
    return int(server.server_port)


def serve_aggregated(listen: str, folder: str) -> int:
    """The supervisor's scrape endpoint: every worker's metrics from the files in `folder`, summed
    (counters, histograms) or combined as each gauge's mode says; returns the bound port."""
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    return int(server.server_port)

"""Prometheus metrics: what the sidecar did, by call type, outcome, hook and phase.

Labels are bounded and never hold a key, a user or a model name: call types, outcomes, status classes,
handler labels from the config, phase names. Served on a port of its own (`extproc.metrics_listen`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter(
    "llm_extproc_requests", "LLM requests that reached the hooks, by how they ended", ["call_type", "outcome"]
)
REFUSALS = Counter("llm_extproc_refusals", "Requests refused or failed by the sidecar, by reason", ["reason"])
UPSTREAM = Counter(
    "llm_extproc_upstream_responses", "Upstream answers seen, by status class", ["status_class"]
)
PHASES = Counter("llm_extproc_phases", "ext_proc messages received from Envoy, by phase", ["phase"])
IN_FLIGHT = Gauge("llm_extproc_in_flight_requests", "gRPC streams (HTTP requests) being processed")
HOOK_SECONDS = Histogram(
    "llm_extproc_hook_duration_seconds",
    "Time in each hook call",
    ["handler", "hook"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RELOADS = Counter("llm_extproc_reloads", "Config reloads, by result", ["result"])

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


_collector: CacheCollector | None = None


def watch_cache(backends: Callable[[], Iterable[Any]]) -> None:
    """Report the current pipeline's shared cache (called once; the callable follows reloads)."""
    global _collector
    if _collector is None:
        _collector = CacheCollector(backends)
        REGISTRY.register(_collector)


def watch_tasks(loop: asyncio.AbstractEventLoop) -> None:
    REGISTRY.register(TaskCollector(loop))


def serve(listen: str) -> int:
    """Start the scrape endpoint (a daemon thread); returns the bound port."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")
    return int(server.server_port)

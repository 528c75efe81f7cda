"""Envoy's own Prometheus stats, reachable from outside the pod without the rest of its admin interface.

The admin interface stays on 127.0.0.1: it can stop Envoy (`POST /quitquitquit`), dump its config
(`/config_dump`), change log levels and reset counters. A listener of its own (`llm-extproc envoy-config
--stats-port`; the Helm chart's `envoy.metricsPort`, with `metrics.enabled`) forwards exactly one request
shape to it, `GET /stats/prometheus` (with any query string, such as `?usedonly`: Envoy matches the path
without it), and answers 404 to everything else.
"""

from __future__ import annotations

from typing import Any

from extproc.envoy.envoy_config import HCM_TYPE, ROUTER_TYPE

STATS_PATH = "/stats/prometheus"
STATS_LISTENER = "envoy_stats"
ADMIN_CLUSTER = "envoy_admin_stats"


def add_stats_listener(bootstrap: dict[str, Any], port: int) -> dict[str, Any]:
    """`bootstrap` (envoy_config.bootstrap's) with the stats listener on `port`, on the address of its
    LLM listener, and the admin interface as that listener's cluster."""
    admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    if admin_port == 0:
        raise ValueError("--stats-port needs a fixed --admin-port (0 lets Envoy choose it at start)")
    static = bootstrap["static_resources"]
    address = static["listeners"][0]["address"]["socket_address"]["address"]
    return {
        **bootstrap,
        "static_resources": {
            **static,
            "listeners": [*static["listeners"], stats_listener(port, address)],
            "clusters": [*static["clusters"], admin_cluster(admin_port)],
        },
    }


def stats_listener(port: int, address: str) -> dict[str, Any]:
    """The listener on `address:port` whose only route leads to the admin's Prometheus stats."""
    routes = [
        {
            "match": {"path": STATS_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "route": {"cluster": ADMIN_CLUSTER},
        },
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": STATS_LISTENER,
        "route_config": {"virtual_hosts": [{"name": STATS_LISTENER, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "name": STATS_LISTENER,
        "address": {"socket_address": {"address": address, "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def admin_cluster(admin_port: int) -> dict[str, Any]:
    """The admin interface on 127.0.0.1, as the stats listener's cluster."""
    address = {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
    endpoints = [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": ADMIN_CLUSTER, "endpoints": endpoints},
    }

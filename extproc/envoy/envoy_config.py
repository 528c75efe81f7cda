"""The Envoy bootstrap the sidecar needs, generated from its settings (used by `dev` and deploy/).

Every rule of extproc-facts.md that lives in Envoy's config is applied here: a complete static
processing mode asking only for the phases the hooks use, `allow_mode_override`, explicit message
timeouts with a `max_message_timeout` for overrides, metadata namespaces listed so they are not
dropped, buffer limits sized to the body limit, and an OpenAI-shaped body for Envoy's own 413
(extproc/envoy/local_replies.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.api.endpoints import ENDPOINT_PATHS, path_regex
from extproc.decisions import APPLIED_GUARDRAILS, METADATA_NAMESPACE
from extproc.envoy.local_replies import (
    NO_BODY_KEY,
    SIDECAR_ERROR_STATUS,
    access_log,
    local_replies,
    no_body_answers,
    unhooked_llm_routes,
)
from extproc.request.guardrail_selection import APPLIED_HEADER
from extproc.request.modes import envoy_processing_mode, reads_streams, reads_success_answers
from extproc.request.pipeline import MAX_MESSAGE_TIMEOUT_S, MESSAGE_TIMEOUT_MARGIN_MS, Pipeline
from extproc.request.routing import DEPLOYMENT_HEADER, Target
from extproc.settings.listen import ListenAddress
from extproc.settings.sizing import ENVOY_BODY_HEADROOM, EXT_PROC_MESSAGE_OVERHEAD
from extproc.types import ENDPOINT_METADATA_KEY, FORWARDED_HEADERS_NAMESPACE

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
SIDECAR_CLUSTER = "llm_extproc"
UPSTREAM_CLUSTER = "upstream"

_TYPE = "type.googleapis.com/envoy.extensions"
HCM_TYPE = f"{_TYPE}.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_PROC_TYPE = f"{_TYPE}.filters.http.ext_proc.v3.ExternalProcessor"
EXT_PROC_PER_ROUTE_TYPE = f"{_TYPE}.filters.http.ext_proc.v3.ExtProcPerRoute"
ROUTER_TYPE = f"{_TYPE}.filters.http.router.v3.Router"
LUA_TYPE = f"{_TYPE}.filters.http.lua.v3.Lua"
BUFFER_TYPE = f"{_TYPE}.filters.http.buffer.v3.Buffer"
JSON_TO_METADATA_TYPE = f"{_TYPE}.filters.http.json_to_metadata.v3.JsonToMetadata"
SSE_TO_METADATA_TYPE = f"{_TYPE}.filters.http.sse_to_metadata.v3.SseToMetadata"
JSON_CONTENT_PARSER_TYPE = f"{_TYPE}.content_parsers.json.v3.JsonContentParser"
EARLY_MUTATION_TYPE = f"{_TYPE}.http.early_header_mutation.header_mutation.v3.HeaderMutation"
HTTP_OPTIONS_TYPE = f"{_TYPE}.upstreams.http.v3.HttpProtocolOptions"
TLS_TYPE = f"{_TYPE}.transport_sockets.tls.v3.UpstreamTlsContext"


# Concurrent ext_proc streams Envoy may hold to the sidecar: in effect no limit (see _sidecar_cluster).
SIDECAR_STREAMS = 2**31 - 1
REQUEST_HEADERS_TIMEOUT = "10s"
# The request id a client sent, kept for the access log only: Envoy makes its own (below).
CLIENT_REQUEST_ID_HEADER = "x-client-request-id"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where Envoy sends LLM traffic: `scheme://host[:port]`, and for a deployment's `api_base` the path
    its endpoints live under (`/v1` in `http://host:8000/v1`)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, url: str, allow_path: bool = False) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {url!r}: expected http(s)://host[:port]")
        path = parts.path.rstrip("/")
        if (path and not allow_path) or parts.query:
            raise ValueError(f"upstream {url!r}: give scheme://host[:port] only; request paths are kept")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def _duration_ms(ms: int) -> str:
    return f"{ms / 1000:.3f}s"


def ext_proc_filter(
    pipeline: Pipeline, cluster: str = SIDECAR_CLUSTER, one_message: bool | None = None
) -> dict[str, Any]:
    """The ext_proc HTTP filter as the sidecar needs it (also the Istio EnvoyFilter's patch value, with
    `one_message=False`: Istio's routes cannot name the endpoint). `None`: as the config says."""
    settings = pipeline.config.sidecar
    message_timeout_ms = settings.hook_timeout_ms + MESSAGE_TIMEOUT_MARGIN_MS
    receiving = [METADATA_NAMESPACE]
    forwarded = list(settings.auth.namespaces)
    if one_message is None:
        one_message = pipeline.one_message
    if one_message:
        forwarded.append(FORWARDED_HEADERS_NAMESPACE)
        receiving.append(FORWARDED_HEADERS_NAMESPACE)  # the sidecar overwrites the credentials there
    metadata: dict[str, Any] = {"receiving_namespaces": {"untyped": receiving}}
    if forwarded:
        metadata["forwarding_namespaces"] = {"untyped": forwarded}
    return {
        "name": EXT_PROC_FILTER,
        "typed_config": {
            "@type": EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
            "failure_mode_allow": settings.failure_mode_allow,
            "processing_mode": envoy_processing_mode(pipeline.request_mode, one_message),
            "allow_mode_override": True,
            "status_on_error": {"code": SIDECAR_ERROR_STATUS},
            "message_timeout": _duration_ms(message_timeout_ms),
            "max_message_timeout": f"{max(int(MAX_MESSAGE_TIMEOUT_S), message_timeout_ms // 1000 + 1)}s",
            "metadata_options": metadata,
        },
    }


# Headers some servers take as the request's real method.
METHOD_OVERRIDES = ("x-http-method-override", "x-http-method", "x-method-override")


def early_header_mutations(pipeline: Pipeline) -> list[dict[str, Any]]:
    """What Envoy does to a client's headers before it routes, makes the request id, or runs a filter.

    - `x-llm-deployment` picks a deployment's route: only the sidecar may set it, after the hooks.
    - The identity headers of `extproc.auth.headers` become `UserAPIKeyAuth` fields (a team, a limit, a
      model list): removed unless the operator declares an earlier filter sets them (`trusted_headers`).
    - `x-request-id`: moved to `x-client-request-id` (for the access log), so Envoy always makes its
      own, and hooks' `litellm_call_id` is never a value the client chose.
    - Method overrides: a bodyless method Envoy lets through unhooked must not become a POST upstream.
    """
    removed = [DEPLOYMENT_HEADER, *METHOD_OVERRIDES, *pipeline.config.sidecar.auth.untrusted_headers]
    mutations: list[dict[str, Any]] = [{"remove": header} for header in dict.fromkeys(removed)]
    mutations += [
        {"remove": CLIENT_REQUEST_ID_HEADER},
        {
            "append": {
                "header": {"key": CLIENT_REQUEST_ID_HEADER, "value": "%REQ(x-request-id)%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        },
        {"remove": "x-request-id"},
    ]
    return [
        {
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": EARLY_MUTATION_TYPE, "mutations": mutations},
        }
    ]


HEADER_COPY_FILTER = "envoy.filters.http.lua"
HOLDING_FILTER = "envoy.filters.http.buffer"
USAGE_FILTER = "envoy.filters.http.json_to_metadata"
STREAM_USAGE_FILTER = "envoy.filters.http.sse_to_metadata"
# A JSON answer's usage -> the `llm_extproc` namespace, under the names the sidecar writes (OpenAI's; the
# Messages and Responses APIs' input/output counts under the same names).
USAGE_FIELDS = (
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("total_tokens", "total_tokens"),
    ("input_tokens", "prompt_tokens"),
    ("output_tokens", "completion_tokens"),
)
FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def _disabled() -> dict[str, Any]:
    """What a route that bypasses the sidecar turns off: ext_proc, and the copy of headers (credentials
    among them) into Envoy's metadata, which only the sidecar's routes need and only its answer scrubs."""
    return {
        EXT_PROC_FILTER: {"@type": EXT_PROC_PER_ROUTE_TYPE, "disabled": True},
        HEADER_COPY_FILTER: {"@type": FILTER_CONFIG_TYPE, "disabled": True},
        HOLDING_FILTER: {"@type": FILTER_CONFIG_TYPE, "disabled": True},
        USAGE_FILTER: {"@type": FILTER_CONFIG_TYPE, "disabled": True},
        STREAM_USAGE_FILTER: {"@type": FILTER_CONFIG_TYPE, "disabled": True},
    }


def route_config(pipeline: Pipeline, upstream: Upstream | None) -> dict[str, Any]:
    """LLM paths through the sidecar (when any hook needs them), every other path straight through."""
    action: dict[str, Any] = {"cluster": UPSTREAM_CLUSTER, "timeout": "0s"}
    if upstream is not None:
        action["host_rewrite_literal"] = upstream.authority
    # One route per endpoint: one regex for all of them would exceed RE2's program size limit.
    llm_routes: list[dict[str, Any]] = [
        {
            "name": f"llm_{_slug(suffix)}",
            "match": {"safe_regex": {"regex": path_regex(suffix)}},
            "route": action,
        }
        for suffix in ENDPOINT_PATHS
    ]
    if not pipeline.needs_sidecar:
        for route in llm_routes:
            route["typed_per_filter_config"] = _disabled()
    elif pipeline.one_message:
        llm_routes = one_message_routes(action)
    deployment_routes = [
        {
            "name": f"deployment_{target.id}_{_slug(suffix)}",
            # POST only: the sidecar sets the header on the requests it hooked, which are all POSTs.
            "match": {
                "safe_regex": {"regex": path_regex(suffix)},
                "headers": [
                    {"name": DEPLOYMENT_HEADER, "string_match": {"exact": target.id}},
                    {"name": ":method", "string_match": {"exact": "POST"}},
                ],
            },
            "route": deployment_action(cluster, Upstream.parse(base, allow_path=True)),
        }
        for target, cluster, base in deployment_clusters(pipeline)
        for suffix in ENDPOINT_PATHS
    ]
    other = {
        "name": "pass_through",
        "match": {"prefix": "/"},
        "route": action,
        "typed_per_filter_config": _disabled(),
    }
    # Refused by Envoy itself: a hooked path with a method the hooks never see, then any spelling of an
    # LLM endpoint no route above took (the hooked ones are exact; see api/endpoints.py).
    # (With no hook at all there is nothing to get around: nothing is refused.)
    hooked = pipeline.needs_sidecar
    unhooked_method = unhooked_llm_routes(except_post=True) if hooked else []
    unhooked_llm = unhooked_llm_routes(except_post=False) if hooked else []
    for route in (*unhooked_method, *unhooked_llm):
        route["typed_per_filter_config"] = _disabled()
    routes = [*unhooked_method, *deployment_routes, *llm_routes, *unhooked_llm, other]
    virtual_host: dict[str, Any] = {"name": "llm", "domains": ["*"], "routes": routes}
    if pipeline.chain.guardrails:
        virtual_host["response_headers_to_add"] = [applied_guardrails_header()]
    return {"name": "llm", "virtual_hosts": [virtual_host]}


def applied_guardrails_header() -> dict[str, Any]:
    """`x-litellm-applied-guardrails` on answers, from what the sidecar noted in the request's metadata
    (the sidecar sets it itself on answers it writes or reads; left out when no guardrail ran)."""
    return {
        "header": {
            "key": APPLIED_HEADER,
            "value": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{APPLIED_GUARDRAILS})%",
        },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        "keep_empty_value": False,
    }


def deployment_action(cluster: str, base: Upstream) -> dict[str, Any]:
    """To a deployment's cluster; an `api_base` with a path (`http://host/v1`, LiteLLM's usual form)
    has its endpoints under that path, whether the client wrote the optional `/v1` or not."""
    action: dict[str, Any] = {"cluster": cluster, "timeout": "0s", "host_rewrite_literal": base.authority}
    if base.path:
        action["regex_rewrite"] = {
            "pattern": {"regex": r"^(?:/v1)?(/.*)$"},
            "substitution": base.path.replace("\\", "\\\\") + r"\1",
        }
    return action


def _slug(suffix: str) -> str:
    """An endpoint's path suffix as a route name part: `/chat/completions` -> `chat_completions`."""
    return suffix.strip("/").replace("/", "_")


def one_message_routes(action: dict[str, Any]) -> list[dict[str, Any]]:
    """POST-only routes per endpoint, each naming its endpoint in the ext_proc stream's initial metadata
    (the request-headers message, which would have carried `:path`, is not sent)."""
    return [
        {
            "name": f"llm_{_slug(suffix)}",
            "match": {
                "safe_regex": {"regex": path_regex(suffix)},
                "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
            },
            "route": action,
            "typed_per_filter_config": {
                EXT_PROC_FILTER: {
                    "@type": EXT_PROC_PER_ROUTE_TYPE,
                    "overrides": {"grpc_initial_metadata": [{"key": ENDPOINT_METADATA_KEY, "value": suffix}]},
                }
            },
        }
        for suffix in ENDPOINT_PATHS
    ]


# One-message mode: what the request-headers message would have told the sidecar, copied by Envoy into
# the `llm_extproc.request` namespace as one `headers` map (forwarded with the body message; the
# sidecar's answer replaces it with the credentials' hashes). With WITH_PATH (where the route cannot name
# the endpoint: Istio) `:path` is copied too, for the sidecar to place the request. A request without a
# body is refused here: no ext_proc message would be sent for it, so it would reach the upstream unhooked
# (in the family's error shape; local_replies maps it too, marked by `NO_BODY_KEY`).
_HEADER_COPY_LUA = """\
local ONLY = %(only)s
local WITH_PATH = %(with_path)s
function envoy_on_request(handle)
  local headers = handle:headers()
  local path = headers:get(":path")
  local copied = {}
  for name, value in pairs(headers) do
    if string.byte(name, 1) ~= 58 and (ONLY == nil or ONLY[name]) then
      local seen = copied[name]
      if seen == nil then copied[name] = value else copied[name] = seen .. "," .. value end
    end
  end
  if WITH_PATH then copied[":path"] = path end
  handle:streamInfo():dynamicMetadata():set("%(namespace)s", "headers", copied)
  local body = handle:body()
  if body == nil or body:length() == 0 then
    handle:streamInfo():dynamicMetadata():set("%(namespace)s", "%(no_body_key)s", true)
    local answer = [==[%(openai)s]==]
    -- of the hooked endpoints, only Anthropic's Messages API ends in /messages
    if string.find(string.gsub(path, "%%?.*$", ""), "/messages/?$") then
      answer = [==[%(anthropic_answer)s]==]
    end
    handle:respond({[":status"] = "400", ["content-type"] = "application/json"}, answer)
  end
end
"""


def header_copy_filter(headers: tuple[str, ...] | None, with_path: bool = False) -> dict[str, Any]:
    """Copies the request headers hooks read (`headers`; None: all of them), and `:path` if `with_path`,
    into dynamic metadata that Envoy forwards with the body message, and refuses a request without a body
    (one-message mode)."""
    only = "nil" if headers is None else "{" + ", ".join(f'["{h}"] = true' for h in headers) + "}"
    openai, anthropic = no_body_answers()
    source = _HEADER_COPY_LUA % {
        "only": only,
        "with_path": "true" if with_path else "false",
        "namespace": FORWARDED_HEADERS_NAMESPACE,
        "no_body_key": NO_BODY_KEY,
        "openai": openai,
        "anthropic_answer": anthropic,
    }
    return {
        "name": HEADER_COPY_FILTER,
        "typed_config": {"@type": LUA_TYPE, "default_source_code": {"inline_string": source}},
    }


def deployment_clusters(pipeline: Pipeline) -> list[tuple[Target, str, str]]:
    """(deployment, its cluster, its api_base) for every routed deployment with its own `api_base`."""
    if pipeline.router is None:
        return []
    names: dict[str, str] = {}
    out = []
    for target in pipeline.router.targets:
        if target.api_base:
            cluster = names.setdefault(target.api_base, f"deployment_{len(names)}")
            out.append((target, cluster, target.api_base))
    return out


def _cluster(name: str, addresses: list[dict[str, Any]], buffer_limit: int, http2: bool) -> dict[str, Any]:
    """A cluster of these endpoints (several: balanced round robin, Envoy's default)."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if "pipe" in addresses[0] else "STRICT_DNS",
        "connect_timeout": "1s",
        "per_connection_buffer_limit_bytes": buffer_limit,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a}} for a in addresses]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            HTTP_OPTIONS_TYPE.rpartition("/")[2]: {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _sidecar_cluster(pipeline: Pipeline, sidecar: ListenAddress, buffer_limit: int) -> dict[str, Any]:
    """The sidecar's cluster, one endpoint per worker; over TCP with `extproc.tls`, Envoy verifies the
    sidecar and (mTLS) shows its own certificate.

    Every request on an LLM route holds one ext_proc stream from its headers to its end, however slowly
    its client uploads; Envoy's default circuit breakers (1,024 requests, 1,024 pending) would let as
    many stalled uploads fail every other request's stream (503, or unhooked with failure_mode_allow).
    So the sidecar's cluster is bounded only by what the listener admits, and slow uploads by the
    connection manager's timeouts (`bootstrap`)."""
    addresses = sidecar.workers(pipeline.config.sidecar.workers)
    cluster = _cluster(SIDECAR_CLUSTER, [a.envoy_address() for a in addresses], buffer_limit, http2=True)
    unbounded = {"max_connections": SIDECAR_STREAMS, "max_pending_requests": SIDECAR_STREAMS}
    cluster["circuit_breakers"] = {
        "thresholds": [
            {"priority": p, "max_requests": SIDECAR_STREAMS, **unbounded} for p in ("DEFAULT", "HIGH")
        ]
    }
    tls = pipeline.config.sidecar.tls
    if tls is None or sidecar.is_unix:
        return cluster
    common: dict[str, Any] = {"alpn_protocols": ["h2"]}
    if tls.server_ca_file:
        common["validation_context"] = {
            "trusted_ca": {"filename": tls.server_ca_file},
            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.server_name}}],
        }
    if tls.envoy_cert_file and tls.envoy_key_file:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.envoy_cert_file},
                "private_key": {"filename": tls.envoy_key_file},
            }
        ]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": TLS_TYPE, "sni": tls.server_name, "common_tls_context": common},
    }
    return cluster


def _upstream_cluster(name: str, upstream: Upstream, buffer_limit: int) -> dict[str, Any]:
    address = {"socket_address": {"address": upstream.host, "port_value": upstream.port}}
    cluster = _cluster(name, [address], buffer_limit, http2=False)
    if upstream.scheme == "https":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": TLS_TYPE, "sni": upstream.host},
        }
    return cluster


def _forwarding_filters(pipeline: Pipeline) -> list[dict[str, Any]]:
    if not (pipeline.one_message and pipeline.needs_sidecar):
        return []
    return [header_copy_filter(pipeline.config.sidecar.forward_headers)]


def _holding_filters(pipeline: Pipeline, limit: int) -> list[dict[str, Any]]:
    """One-message mode: ext_proc does not hold request headers it does not send, so without this the
    upstream would get them (chunked, content-length dropped) before the hooks decide, and an upstream
    that answers on the headers would answer a request the hooks refuse (measured). The buffer filter
    after ext_proc holds the request until the sidecar has answered and sets the content-length of the
    body it forwards (Envoy ignores header mutations in an answer to a body sent without its headers)."""
    if not (pipeline.one_message and pipeline.needs_sidecar):
        return []
    buffer = {"@type": BUFFER_TYPE, "max_request_bytes": limit}
    return [{"name": HOLDING_FILTER, "typed_config": buffer}]


OTEL_CLUSTER = "opentelemetry_collector"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


def add_tracing(pipeline: Pipeline, hcm: dict[str, Any], clusters: list[dict[str, Any]]) -> None:
    """With `extproc.tracing` on (and its `envoy`), Envoy traces requests with OpenTelemetry to the same
    OTLP gRPC collector as the sidecar, sampling new traces at the sidecar's ratio: its span for each
    ext_proc stream reaches the sidecar as the `traceparent` of the stream's initial metadata, and the
    sidecar's request span becomes its child (the sidecar follows Envoy's sampling decision)."""
    tracing = pipeline.config.sidecar.tracing
    if tracing is None or not tracing.enabled or not tracing.envoy:
        return
    collector = Upstream.parse(tracing.collector())
    hcm["tracing"] = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": OTEL_TYPE,
                "grpc_service": {"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
                "service_name": f"{tracing.service()}-envoy",
            },
        },
        "random_sampling": {"value": round(tracing.ratio() * 100, 4)},
    }
    address = {"socket_address": {"address": collector.host, "port_value": collector.port}}
    cluster = _cluster(OTEL_CLUSTER, [address], 1024 * 1024, http2=True)
    if collector.scheme == "https":
        common = {"alpn_protocols": ["h2"]}
        tls = {"@type": TLS_TYPE, "sni": collector.host, "common_tls_context": common}
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    clusters.append(cluster)


def _usage_rules(*within: str) -> list[dict[str, Any]]:
    """json_to_metadata rules copying `usage` (under the keys `within`) into `llm_extproc`."""
    return [
        {
            "selectors": [*({"key": key} for key in within), {"key": "usage"}, {"key": field}],
            "on_present": {"metadata_namespace": METADATA_NAMESPACE, "key": key, "type": "NUMBER"},
        }
        for field, key in USAGE_FIELDS
    ]


# Where a stream's events carry usage: a chat or text completion's last chunk (`include_usage`), the
# Messages API's message_start (`message.usage`) and message_delta, the Responses API's response.completed.
STREAM_USAGE_PLACES: tuple[tuple[str, ...], ...] = ((), ("message",), ("response",))


def usage_filters(pipeline: Pipeline) -> list[dict[str, Any]]:
    """When no hook reads whole answers (so the sidecar does not report their usage), Envoy copies a JSON
    answer's `usage` token counts into the `llm_extproc` namespace itself, for its rate-limit filter and
    access log; when no hook reads streams, Envoy's sse_to_metadata filter does the same from a stream's
    events (the last value of each count wins). Routes that bypass the sidecar's paths are not read."""
    kinds = pipeline.chain.kinds
    if not pipeline.needs_sidecar:
        return []  # every LLM route bypasses the sidecar (and these filters)
    filters = []
    if not reads_success_answers(kinds):
        config = {"@type": JSON_TO_METADATA_TYPE, "response_rules": {"rules": _usage_rules()}}
        filters.append({"name": USAGE_FILTER, "typed_config": config})
    if not reads_streams(kinds):
        rules = [{"rule": rule} for within in STREAM_USAGE_PLACES for rule in _usage_rules(*within)]
        parser = {"@type": JSON_CONTENT_PARSER_TYPE, "rules": rules}
        content_parser = {"name": "envoy.content_parsers.json", "typed_config": parser}
        config = {"@type": SSE_TO_METADATA_TYPE, "response_rules": {"content_parser": content_parser}}
        filters.append({"name": STREAM_USAGE_FILTER, "typed_config": config})
    return filters


def bootstrap(
    pipeline: Pipeline,
    *,
    listen_port: int,
    admin_port: int,
    sidecar: str | ListenAddress,
    upstream: str,
    listen_address: str = "127.0.0.1",
    access_log_path: str = "/dev/stdout",
) -> dict[str, Any]:
    """A complete static Envoy bootstrap: one listener, the sidecar's cluster and the upstream's.
    `sidecar` is where the sidecar listens (worker 0's address), or its string form."""
    target = Upstream.parse(upstream)
    address = sidecar if isinstance(sidecar, ListenAddress) else ListenAddress.parse(sidecar)
    limit = pipeline.config.sidecar.max_request_bytes + ENVOY_BODY_HEADROOM
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "llm",
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        "early_header_mutation_extensions": early_header_mutations(pipeline),
        # A client that trickles its headers holds a connection, not yet a sidecar stream: bound it too.
        "request_headers_timeout": REQUEST_HEADERS_TIMEOUT,
        "access_log": access_log(access_log_path, EXT_PROC_FILTER, CLIENT_REQUEST_ID_HEADER),
        "local_reply_config": local_replies(pipeline),
        "route_config": route_config(pipeline, target),
        "http_filters": [
            *_forwarding_filters(pipeline),
            ext_proc_filter(pipeline),
            *_holding_filters(pipeline, limit),
            *usage_filters(pipeline),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    clusters = [
        _sidecar_cluster(pipeline, address, limit + EXT_PROC_MESSAGE_OVERHEAD),
        _upstream_cluster(UPSTREAM_CLUSTER, target, limit),
    ]
    seen = set()
    for _, cluster, base in deployment_clusters(pipeline):
        if cluster not in seen:
            seen.add(cluster)
            clusters.append(_upstream_cluster(cluster, Upstream.parse(base, allow_path=True), limit))
    add_tracing(pipeline, hcm, clusters)
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "llm",
                    "address": {"socket_address": {"address": listen_address, "port_value": listen_port}},
                    "per_connection_buffer_limit_bytes": limit,
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """No anchors or aliases: every block written out, as a person would write an Envoy config."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(config: dict[str, Any]) -> str:
    return yaml.dump(config, Dumper=_PlainDumper, sort_keys=False, width=120)

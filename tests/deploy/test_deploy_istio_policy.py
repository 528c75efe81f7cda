"""Istio mode's placement and access: the EnvoyFilter's priority, targetRefs (gateways, ambient
waypoints) instead of workloadSelector, how far its buffer-limit patch reaches, and the
AuthorizationPolicy; each checked against schemas written from Istio's API, its CRDs' rules included
(crd_schema)."""

from __future__ import annotations

import copy

import helm_python
import pytest

from . import crd_schema
from .helpers import CHART, ISTIO, NAMESPACE, by_kind, ext_proc_filters, kinds, lint, merge, objects, render

WAYPOINT_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}
WAYPOINT = {"mode": "istio", "istio": {"targetRefs": [WAYPOINT_REF]}}
GATEWAY_REFS = {
    "mode": "istio",
    "istio": {
        "context": "GATEWAY",
        "portNumber": 443,
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}],
    },
}
SELECTED_GATEWAY = {
    "mode": "istio",
    "istio": {"context": "GATEWAY", "portNumber": 8080, "workloadSelector": {"labels": {"istio": "gw"}}},
}
AUTHZ = {
    "enabled": True,
    "principals": ["cluster.local/ns/istio-system/sa/istio-ingressgateway"],
    "namespaces": ["chat"],
}


def envoy_filter(values):
    found = by_kind(objects(values), "EnvoyFilter")
    crd_schema.validate(found)
    return found


def patches(values, apply_to):
    return [p for p in envoy_filter(values)["spec"]["configPatches"] if p["applyTo"] == apply_to]


# ---- priority and targetRefs ----


def test_priority_is_set_only_when_asked():
    assert "priority" not in envoy_filter(ISTIO)["spec"]
    assert envoy_filter(merge(ISTIO, {"istio": {"priority": -10}}))["spec"]["priority"] == -10
    assert envoy_filter(merge(ISTIO, {"istio": {"priority": 20}}))["spec"]["priority"] == 20


@pytest.mark.parametrize("values", [WAYPOINT, GATEWAY_REFS], ids=["waypoint", "gateway-api-gateway"])
def test_target_refs_replace_the_workload_selector(values):
    spec = envoy_filter(values)["spec"]
    assert "workloadSelector" not in spec
    assert spec["targetRefs"] == values["istio"]["targetRefs"]
    assert lint(values) == []


def test_every_envoy_filter_references_the_llm_extproc_service():
    """Waypoints (and gateways that filter clusters) build the ext_proc cluster only for services an
    EnvoyFilter references: the annotation names the Service the filter's cluster points at."""
    for values in (ISTIO, WAYPOINT, GATEWAY_REFS):
        found = envoy_filter(values)
        reference = found["metadata"]["annotations"]["envoyfilter.istio.io/referenced-services"]
        namespace, host = reference.split("/")
        service = by_kind(objects(values), "Service")["metadata"]["name"]
        assert (namespace, host) == (NAMESPACE, f"{service}.{NAMESPACE}.svc.cluster.local")
        for ext_proc in ext_proc_filters(found):
            cluster = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
            assert cluster.endswith(f"||{host}")


def test_a_waypoints_patches_go_to_its_http_listener():
    """A waypoint's HTTP chains are in the internal listener main_internal (not connect_terminate,
    which carries the HBONE tunnels and must not buffer them); its clusters are SIDECAR_OUTBOUND's."""
    found = envoy_filter(WAYPOINT)
    for patch in found["spec"]["configPatches"]:
        if patch["applyTo"] == "CLUSTER":
            assert patch["match"]["context"] == "SIDECAR_OUTBOUND"
        else:
            assert patch["match"]["context"] == "SIDECAR_INBOUND"
            assert patch["match"]["listener"]["name"] == "main_internal", patch["applyTo"]
            assert "portNumber" not in patch["match"]["listener"]


REFUSED_BY_THE_SCHEMA = {
    "both selector and targetRefs": merge(ISTIO, {"istio": {"targetRefs": [WAYPOINT_REF]}}),
    "neither": {"mode": "istio"},
    "a targetRef in another namespace": merge(
        WAYPOINT, {"istio": {"targetRefs": [{**WAYPOINT_REF, "namespace": "other"}]}}
    ),
    "a targetRef without a name": merge(WAYPOINT, {"istio": {"targetRefs": [{"kind": "Gateway"}]}}),
    "priority not an integer": merge(ISTIO, {"istio": {"priority": "high"}}),
    "priority beyond int32": merge(ISTIO, {"istio": {"priority": 2**31}}),
    "authorization policy with a typo": merge(ISTIO, {"istio": {"authorizationPolicy": {"enable": True}}}),
}


@pytest.mark.parametrize("values", REFUSED_BY_THE_SCHEMA.values(), ids=REFUSED_BY_THE_SCHEMA.keys())
def test_schema_refuses(values):
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (merge(WAYPOINT, {"istio": {"portNumber": 8080}}), "no port"),
        (merge(ISTIO, {"istio": {"authorizationPolicy": {"enabled": True}}}), "principals or namespaces"),
    ],
    ids=["waypoint-with-port", "authorization-policy-allowing-nobody"],
)
def test_templates_refuse(values, message):
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


def test_the_crd_rules_catch_what_the_chart_avoids():
    """The CRD check can fail: both selectors, a misspelled match field, a wildcard label, a
    cross-namespace targetRef are each refused, as the API server would; so is neither selector, which the
    API allows (it patches every proxy of the namespace) but the chart must never render."""
    base = envoy_filter(ISTIO)
    both = copy.deepcopy(base)
    both["spec"]["targetRefs"] = [WAYPOINT_REF]
    cross = envoy_filter(WAYPOINT)
    cross["spec"]["targetRefs"][0]["namespace"] = "other"
    misspelled = copy.deepcopy(base)
    misspelled["spec"]["configPatches"][0]["match"]["listner"] = {}
    wildcard = copy.deepcopy(base)
    wildcard["spec"]["workloadSelector"]["labels"]["app"] = "*"
    bad_enum = copy.deepcopy(base)
    bad_enum["spec"]["configPatches"][0]["match"]["context"] = "SIDECAR"
    neither = copy.deepcopy(base)
    del neither["spec"]["workloadSelector"]
    for broken, message in [
        (both, "only one of targetRefs or workloadSelector"),
        (cross, "cross namespace"),
        (misspelled, "listner"),
        (wildcard, "wildcard"),
        (bad_enum, "SIDECAR"),
        (neither, "one of workloadSelector or targetRefs must be set"),
    ]:
        with pytest.raises(crd_schema.CRDValidationError, match=message):
            crd_schema.validate(broken)


# ---- the buffer limits' reach ----


@pytest.mark.parametrize(
    ("values", "listener"),
    [
        (ISTIO, {"name": "virtualInbound"}),
        (merge(ISTIO, {"istio": {"portNumber": 8000}}), {"name": "virtualInbound"}),
        (SELECTED_GATEWAY, {"portNumber": 8080}),
        (GATEWAY_REFS, {"portNumber": 443}),
        (WAYPOINT, {"name": "main_internal"}),
    ],
    ids=["sidecar", "sidecar-port", "gateway-port", "gateway-api-port", "waypoint"],
)
def test_the_listener_buffer_limit_reaches_only_the_hooked_listener(values, listener):
    """Never every listener of the context: a sidecar's inbound listener (virtualInbound: Istio matches
    a LISTENER patch's portNumber against the listener's own port, 15006, so the app's port cannot
    narrow it further), the gateway's listener on istio.portNumber, a waypoint's HTTP listener."""
    (patch,) = patches(values, "LISTENER")
    assert patch["match"]["listener"] == listener
    assert set(patch["patch"]["value"]) == {"per_connection_buffer_limit_bytes"}
    (cluster,) = patches(values, "CLUSTER")
    assert set(cluster["match"]["cluster"]) == {"service", "portNumber"}


def test_a_gateway_without_a_port_is_patched_on_every_listener():
    """Documented: a GATEWAY context without portNumber hooks, and raises the limit of, every listener
    of the selected gateway (a gateway's listeners are all HTTP entry points)."""
    values = merge(SELECTED_GATEWAY, {"istio": {"portNumber": 0}})
    (patch,) = patches(values, "LISTENER")
    assert "listener" not in patch["match"]
    for http_filter in patches(values, "HTTP_FILTER"):
        assert "portNumber" not in http_filter["match"]["listener"]


# ---- AuthorizationPolicy ----


def test_authorization_policy_allows_only_the_listed_callers_to_the_grpc_port():
    docs = objects(merge(ISTIO, {"istio": {"authorizationPolicy": AUTHZ}}))
    policy = by_kind(docs, "AuthorizationPolicy")
    crd_schema.validate(policy)
    spec = policy["spec"]
    assert spec["action"] == "ALLOW"
    pod_labels = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = spec["rules"]
    # Two sources: either one admits (a principal OR a namespace), both only to the gRPC port.
    assert rule["from"] == [
        {"source": {"principals": AUTHZ["principals"]}},
        {"source": {"namespaces": AUTHZ["namespaces"]}},
    ]
    (grpc_port,) = by_kind(docs, "Service")["spec"]["ports"]
    assert rule["to"] == [{"operation": {"ports": [str(grpc_port["port"])]}}]


def test_authorization_policy_keeps_the_metrics_port_open_and_is_istio_only():
    values = merge(
        ISTIO, {"metrics": {"enabled": True, "port": 9464}, "istio": {"authorizationPolicy": AUTHZ}}
    )
    rules = by_kind(objects(values), "AuthorizationPolicy")["spec"]["rules"]
    assert rules[1] == {"to": [{"operation": {"ports": ["9464"]}}]}
    only_namespaces = merge(
        ISTIO, {"istio": {"authorizationPolicy": {"enabled": True, "namespaces": ["chat"]}}}
    )
    (rule,) = by_kind(objects(only_namespaces), "AuthorizationPolicy")["spec"]["rules"]
    assert rule["from"] == [{"source": {"namespaces": ["chat"]}}]
    assert "AuthorizationPolicy" not in kinds(objects({"istio": {"authorizationPolicy": AUTHZ}}))
    assert "AuthorizationPolicy" not in kinds(objects(ISTIO))


def test_the_authorization_policy_crd_rules_bite():
    policy = by_kind(objects(merge(ISTIO, {"istio": {"authorizationPolicy": AUTHZ}})), "AuthorizationPolicy")
    both = copy.deepcopy(policy)
    both["spec"]["targetRefs"] = [WAYPOINT_REF]
    with pytest.raises(crd_schema.CRDValidationError, match="only one of"):
        crd_schema.validate(both)
    mixed = copy.deepcopy(policy)
    mixed["spec"]["rules"][0]["from"][0]["source"]["serviceAccounts"] = ["istio-system/gateway"]
    with pytest.raises(crd_schema.CRDValidationError, match="serviceAccounts"):
        crd_schema.validate(mixed)
    typo = copy.deepcopy(policy)
    typo["spec"]["action"] = "PERMIT"
    with pytest.raises(crd_schema.CRDValidationError, match="PERMIT"):
        crd_schema.validate(typo)

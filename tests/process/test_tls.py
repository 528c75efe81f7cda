"""TLS and mTLS on the sidecar's TCP listener, with generated certificates, over gRPC and through Envoy."""

import subprocess
import sys
import textwrap
import time
import urllib.request

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_certs import make_certs

from extproc.devtools.dev import envoy_binary
from extproc.envoy import envoy_config
from extproc.ops.server import Sidecar
from extproc.request import pipeline
from extproc.settings.config import ConfigError


def tls_config(tmp_path, certs, mutual=True):
    (tmp_path / "h.py").write_text(
        textwrap.dedent("""
        from extproc import CustomLogger
        class H(CustomLogger):
            async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
                data["model"] = "over-tls"
        h = H()
    """)
    )
    tls = {
        "cert_file": certs["server.crt"],
        "key_file": certs["server.key"],
        "server_ca_file": certs["ca.crt"],
        "envoy_cert_file": certs["client.crt"],
        "envoy_key_file": certs["client.key"],
    }
    if mutual:
        tls["client_ca_file"] = certs["ca.crt"]
    lines = ["litellm_settings: {callbacks: h.h}", "extproc:", "  tls:"]
    lines += [f"    {key}: {value}" for key, value in tls.items()]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def credentials(certs, with_client_cert=True, ca="ca.crt"):
    chain = certs["client.crt"].read_bytes() if with_client_cert else None
    key = certs["client.key"].read_bytes() if with_client_cert else None
    return grpc.ssl_channel_credentials(certs[ca].read_bytes(), key, chain)


OPTIONS = [("grpc.ssl_target_name_override", "llm-extproc")]


async def check(address, creds):
    async with grpc.aio.secure_channel(address, creds, options=OPTIONS) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status


async def test_mtls_accepts_envoys_certificate_and_refuses_none(tmp_path, certs):
    sidecar = Sidecar(pipeline.load(tls_config(tmp_path, certs)), ("127.0.0.1:0",))
    (address,) = await sidecar.start()
    try:
        assert await check(address, credentials(certs)) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await check(address, credentials(certs, with_client_cert=False))
        with pytest.raises(grpc.aio.AioRpcError):  # a client that does not trust the sidecar's CA
            await check(address, credentials(certs, ca="other-ca.crt"))
        async with grpc.aio.insecure_channel(address) as plain:  # plaintext gRPC is refused too
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        await sidecar.stop(0)


async def test_tls_without_client_ca_serves_any_client(tmp_path, certs):
    sidecar = Sidecar(pipeline.load(tls_config(tmp_path, certs, mutual=False)), ("127.0.0.1:0",))
    (address,) = await sidecar.start()
    try:
        assert (
            await check(address, credentials(certs, with_client_cert=False))
            == health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        await sidecar.stop(0)


def test_missing_certificate_files_are_named(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("extproc: {tls: {cert_file: /nope.crt, key_file: /nope.key}}")
    with pytest.raises(ConfigError, match=r"extproc\.tls\.cert_file: /nope\.crt is not a readable file"):
        pipeline.load(path)


@pytest.mark.e2e
def test_envoy_talks_mtls_to_the_sidecar(tmp_path, certs):
    config_path = tls_config(tmp_path, certs)
    children = []

    def spawn(*args):
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        children.append(process)
        return process

    try:
        mock = spawn(sys.executable, "-m", "extproc", "mock-upstream", "--port", "0")
        upstream = mock.stdout.readline().split()[-1]
        sidecar = spawn(
            sys.executable,
            "-m",
            "extproc",
            "serve",
            "--config",
            str(config_path),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        )
        line = sidecar.stdout.readline()
        while not line.startswith("llm-extproc serving on "):
            assert line, "the sidecar exited"
            line = sidecar.stdout.readline()
        address = line.split()[-1]
        bootstrap = envoy_config.bootstrap(
            pipeline.load(config_path), listen_port=0, admin_port=0, sidecar=address, upstream=upstream
        )
        (tmp_path / "envoy.yaml").write_text(envoy_config.render(bootstrap))
        admin_file = tmp_path / "admin.txt"
        spawn(
            envoy_binary(),
            "-c",
            str(tmp_path / "envoy.yaml"),
            "--concurrency",
            "1",
            "--log-level",
            "warning",
            "--admin-address-path",
            str(admin_file),
            "--base-id",
            str(7000 + len(str(tmp_path)) % 1000),
        )
        deadline = time.monotonic() + 20
        while not admin_file.exists() or not admin_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        admin = "http://" + admin_file.read_text().strip()
        while True:
            try:
                listeners = orjson.loads(urllib.request.urlopen(f"{admin}/listeners?format=json").read())
                port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
                break
            except (OSError, KeyError, IndexError):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with httpx.Client(trust_env=False, timeout=10) as client:
            response = client.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200, response.text
            assert response.json()["model"] == "over-tls"  # the hook ran: Envoy reached the sidecar over mTLS
            stats = client.get(f"{admin}/stats?filter=cluster.llm_extproc.ssl.handshake").text
        assert "cluster.llm_extproc.ssl.handshake: 0" not in stats and "ssl.handshake" in stats
    finally:
        for process in reversed(children):
            process.terminate()
            process.wait(10)
            if process.stdout:
                process.stdout.close()

"""Two real sidecar processes sharing one real Valkey server enforce one limit between them."""

import asyncio
import subprocess
import sys
import textwrap

import grpc
import orjson
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from redis_server import ValkeyServer, valkey_server_fixture  # noqa: F401  (the fixture)

from .harness import body_request, headers_request

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hello"}]})


class Replica:
    """`llm-extproc serve` as a subprocess, on a TCP port it picks itself."""

    def __init__(self, config_path):
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extproc",
                "serve",
                "--config",
                str(config_path),
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.startswith("llm-extproc serving on "), (line, self.process.stderr.read())
        self.address = line.split()[-1]

    def stop(self):
        """Stop once; afterwards `stderr` holds what the replica logged."""
        if self.process.returncode is None:
            self.process.terminate()
            self.process.wait(10)
            self.process.stdout.close()
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()


async def one_request(address) -> int:
    """headers + body through a replica, as Envoy sends them: 0 when let through, else the status."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        status = 0
        for request in (headers_request(headers={"authorization": "Bearer sk-shared"}), body_request(CHAT)):
            await call.write(request)
            answer = await call.read()
            if answer.HasField("immediate_response"):
                status = answer.immediate_response.status.code
                break
        await call.done_writing()
        call.cancel()
        return status


@pytest.fixture
def replicas(tmp_path, valkey_server):
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        litellm_settings: {{callbacks: [handlers.rate_limiter]}}
        extproc:
          cache: {{redis_url: "{valkey_server.url}", timeout_ms: 200}}
          handlers:
            handlers.rate_limiter: {{options: {{limits: {{api_key: {{rpm: 10}}}}}}}}
    """)
    )
    started = [Replica(config), Replica(config)]
    yield started
    for replica in started:
        replica.stop()


async def test_two_replicas_enforce_one_limit_exactly(replicas):
    results = await asyncio.gather(*(one_request(replicas[i % 2].address) for i in range(16)))
    assert sorted(results).count(0) == 10
    assert sorted(results).count(429) == 6


async def test_redis_killed_and_restarted_loses_no_request_and_recovers(replicas, valkey_server):
    assert await one_request(replicas[0].address) == 0
    valkey_server.stop()
    # while down: requests keep flowing on each replica's local counts (on_unavailable: local)
    down = await asyncio.gather(*(one_request(r.address) for r in replicas for _ in range(3)))
    assert down == [0] * 6
    valkey_server.start()
    await asyncio.sleep(1.1)  # the backend retries the shared store at most once per second
    after = [await one_request(replicas[i % 2].address) for i in range(12)]
    # back on the shared count: the server restarted empty, so exactly 10 of the next 12 pass
    assert after.count(0) == 10 and after.count(429) == 2
    client = valkey_server.client()
    try:
        assert list(client.scan_iter(match="llm-extproc:rl:api_key:*"))
    finally:
        client.close()
    for replica in replicas:
        replica.stop()
        assert replica.stderr.count("shared cache") >= 2  # one warning for the outage, one recovery line

"""Several workers (`extproc.workers`) are one scrape target: the real `serve` supervisor, two workers
each taking ext_proc streams on its own socket, and one scrape of the supervisor's endpoint that sums
them (prometheus_client's multiprocess mode)."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import httpx
import orjson
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from .harness import body_request, headers_request

HANDLER = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        return None

h = H()
"""
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
DEADLINE_S = 60.0


class Lines:
    """A child's merged output, read in a thread so a wait for a line has a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        self._stdout = process.stdout
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stdout:
            self._queue.put(line)

    def close(self) -> None:
        """After the child exited: the reader has seen the end of its output."""
        self._reader.join(10)
        self._stdout.close()

    def wait_for(self, pattern: str, count: int = 1) -> list[re.Match[str]]:
        end = time.monotonic() + DEADLINE_S
        while True:
            found = [m for m in (re.search(pattern, line) for line in self.seen) if m]
            if len(found) >= count:
                return found
            left = end - time.monotonic()
            assert left > 0, f"no {count} line(s) matching {pattern!r} in:\n{''.join(self.seen)}"
            try:
                self.seen.append(self._queue.get(timeout=left))
            except queue.Empty:
                continue


async def forwarded_requests(address: str, count: int) -> None:
    """`count` chat requests through one worker, each ended as Envoy would end a forwarded one."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        for _ in range(count):
            call = stub.Process()
            for request in (headers_request(), body_request(CHAT)):
                await call.write(request)
                answer = await call.read()
                assert not answer.HasField("immediate_response")
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF


def sample(exposition: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", exposition, re.M)
    assert found, f"{name}{labels} not in the scrape:\n{exposition}"
    return float(found.group(1))


@pytest.fixture
def supervisor(tmp_path):
    (tmp_path / "h.py").write_text(HANDLER)
    config = tmp_path / "config.yaml"
    socket = tmp_path / "sidecar.sock"
    config.write_text(
        "litellm_settings: {callbacks: [h.h]}\n"
        f"extproc: {{workers: 2, listen: ['unix:{socket}'], metrics_listen: '127.0.0.1:0'}}\n"
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    command = [sys.executable, "-m", "extproc", "serve", "--config", str(config), "--log-format", "text"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    lines = Lines(process)
    try:
        yield process, lines, temp
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        lines.close()


async def test_two_workers_counts_are_summed_on_one_scrape(supervisor):
    process, lines, temp = supervisor
    (aggregated,) = lines.wait_for(r"metrics of all workers on (http://\S+)")
    url = aggregated.group(1)
    serving = lines.wait_for(r"llm-extproc serving on (\S+)", count=2)
    addresses = sorted(match.group(1) for match in serving)
    assert len(set(addresses)) == 2
    # Every worker names the supervisor's endpoint as its own: it binds no port of its own.
    assert {m.group(1) for m in lines.wait_for(r"server metrics on (http://\S+)", count=2)} == {url}
    assert [path.name.startswith("llm-extproc-metrics-") for path in temp.iterdir()] == [True]

    await forwarded_requests(addresses[0], 3)
    await forwarded_requests(addresses[1], 2)

    exposition = httpx.get(url, trust_env=False, timeout=10).text
    calls = 'llm_extproc_hook_duration_seconds_count{handler="h.h",hook="async_pre_call_hook"}'
    assert sample(exposition, calls) == 5
    assert (
        sample(exposition, "llm_extproc_requests_total", '{call_type="completion",outcome="forwarded"}') == 5
    )
    assert sample(exposition, "llm_extproc_phases_total", '{phase="request_body"}') == 5
    assert sample(exposition, "llm_extproc_in_flight_requests") == 0
    # Scrape-time gauges are copied from each worker (tasks alive on both event loops, summed).
    assert sample(exposition, "llm_extproc_asyncio_tasks") >= 2

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert list(temp.iterdir()) == [], "the supervisor's metrics folder outlived it"

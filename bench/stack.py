"""`BenchStack`: extproc's `DevStack` with the bench's Envoy bootstrap.

The bootstrap is `envoy_config.bootstrap(...)`'s own dict, changed here only: a second listener that
answers every request with a fixed chat.completion (`direct_response`, so the upstream is never the
bottleneck), and for the envoy-alone case no ext_proc filter at all. Envoy runs with `--concurrency 1`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import ProxyHandler, Request, build_opener

import orjson

from bench import floor_processor
from extproc.devtools.dev import DevStack, envoy_binary
from extproc.envoy import envoy_config
from extproc.request import pipeline as pipeline_module

DIRECT_LISTENER = "bench_upstream"
MAIN_LISTENER = "llm"  # the listener envoy_config.bootstrap() names
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
ENVOY_CONCURRENCY = 1
EXT_PROC_CLUSTER = "llm_extproc"  # the cluster envoy_config.bootstrap() sends ext_proc messages to
# The main listener's HTTP counters (its stat_prefix is the listener's name): ext_proc's, and its requests.
LISTENER_STATS = f"http.{MAIN_LISTENER}."
_LOCAL = build_opener(ProxyHandler({}))
COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-3.5-turbo",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}


def direct_response_listener(port: int) -> dict[str, Any]:
    """A listener on 127.0.0.1:`port` that answers 200 with `COMPLETION` to any request."""
    route = {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200, "body": {"inline_string": orjson.dumps(COMPLETION).decode()}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }
    hcm = {
        "@type": envoy_config.HCM_TYPE,
        "stat_prefix": DIRECT_LISTENER,
        "route_config": {
            "name": DIRECT_LISTENER,
            "virtual_hosts": [{"name": DIRECT_LISTENER, "domains": ["*"], "routes": [route]}],
        },
        "http_filters": [{"name": ROUTER_FILTER, "typed_config": {"@type": envoy_config.ROUTER_TYPE}}],
    }
    return {
        "name": DIRECT_LISTENER,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}],
    }


def _main_hcm(config: dict[str, Any]) -> dict[str, Any]:
    for listener in config["static_resources"]["listeners"]:
        if listener["name"] == MAIN_LISTENER:
            hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
            return hcm
    raise KeyError(f"no listener {MAIN_LISTENER!r} in the generated bootstrap")


def drop_ext_proc(config: dict[str, Any]) -> None:
    """Remove the ext_proc filter and every per-route setting that names it."""
    hcm = _main_hcm(config)
    name = envoy_config.EXT_PROC_FILTER
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != name]
    for host in hcm["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            per_filter = route.get("typed_per_filter_config", {})
            per_filter.pop(name, None)
            if not per_filter:
                route.pop("typed_per_filter_config", None)


def send_ext_proc_to(config: dict[str, Any], socket_path: Path) -> None:
    """Point the ext_proc cluster at another processor's unix socket."""
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == EXT_PROC_CLUSTER:
            endpoint = {"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}
            cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [endpoint]}]
            return
    raise KeyError(f"no cluster {EXT_PROC_CLUSTER!r} in the generated bootstrap")


class BenchStack(DevStack):
    """Mock upstream (only when `direct_port` is None) + sidecar + Envoy with the bench's bootstrap.

    `floor` (not None): Envoy's ext_proc messages go to bench/floor_processor.py, run with these
    arguments, instead of the sidecar (which still starts, and idles)."""

    def __init__(
        self,
        config_path: Path,
        *,
        run_dir: Path,
        ext_proc: bool,
        direct_port: int | None,
        floor: tuple[str, ...] | None = None,
    ) -> None:
        upstream = None if direct_port is None else f"http://127.0.0.1:{direct_port}"
        super().__init__(config_path, upstream=upstream, run_dir=run_dir)
        self.ext_proc = ext_proc
        self.direct_port = direct_port
        self.floor_args = floor
        self.floor_socket = run_dir / "floor.sock"  # (the run folder exists by now)

    def bootstrap(self, pipeline: pipeline_module.Pipeline) -> dict[str, Any]:
        config = super().bootstrap(pipeline)
        if not self.ext_proc:
            drop_ext_proc(config)
        if self.floor_args is not None:
            send_ext_proc_to(config, self.floor_socket)
        if self.direct_port is not None:
            config["static_resources"]["listeners"].append(direct_response_listener(self.direct_port))
        return config

    def start(self) -> BenchStack:
        super().start()
        if self.floor_args is not None:  # Envoy connects to it at the first request, not before
            self.floor_socket.unlink(missing_ok=True)  # left by an earlier run in the same folder
            command = [
                sys.executable,
                "-m",
                "bench.floor_processor",
                str(self.floor_socket),
                *self.floor_args,
            ]
            floor = self._spawn("floor", command)
            try:
                self._wait(floor, "its ready line", lambda: floor_processor.READY in floor.output() or None)
            except BaseException:
                self.stop()
                raise
        return self

    @property
    def processor(self) -> str:
        """The child that answers Envoy's ext_proc messages."""
        return "sidecar" if self.floor_args is None else "floor"

    def listener_counters(self) -> dict[str, int]:
        """The main listener's HTTP counters by name below `http.llm.` (`downstream_rq_total`,
        `ext_proc.stream_msgs_sent`, ...)."""
        pattern = quote(f"^http\\.{MAIN_LISTENER}\\.")
        status, body = local_request(f"{self.admin_url}/stats?usedonly&filter={pattern}", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"Envoy's admin answered {status} to /stats")
        counters = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(LISTENER_STATS) and value.isdigit():
                counters[name.removeprefix(LISTENER_STATS)] = int(value)
        return counters

    def _start_envoy(self, pipeline: pipeline_module.Pipeline) -> None:
        self.envoy_config_path.write_text(envoy_config.render(self.bootstrap(pipeline)))
        command = [
            envoy_binary(), "-c", str(self.envoy_config_path),
            "--concurrency", str(ENVOY_CONCURRENCY), "--log-level", "warning",
            "--admin-address-path", str(self.run_dir / "admin.txt"),
            "--use-dynamic-base-id", "--file-flush-interval-msec", "1000",
        ]  # fmt: skip
        self._spawn("envoy", command)

    def _listener_port(self) -> int | None:
        """The main listener's port (the direct_response listener must not be taken for it)."""
        answer = _admin_json(self.admin_url, "/listeners?format=json")
        for listener in answer.get("listener_statuses", []) if answer else []:
            if listener.get("name") == MAIN_LISTENER:
                port = listener.get("local_address", {}).get("socket_address", {}).get("port_value")
                return port if isinstance(port, int) and port > 0 else None
        return None

    def __enter__(self) -> BenchStack:
        return self.start()


def local_request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP request to loopback, never through a proxy; HTTP errors are answers too."""
    request = Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with _LOCAL.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except HTTPError as error:
        return int(error.code), bytes(error.read())


def _admin_json(admin_url: str, path: str) -> dict[str, Any] | None:
    try:
        status, body = local_request(f"{admin_url}{path}", timeout=2.0)
    except OSError:
        return None
    if status != 200:
        return None
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed

"""The sidecar process: a grpc.aio server with the ext_proc and health services, and its lifecycle.

Readiness is SERVING only once the handlers are loaded; SIGTERM turns it NOT_SERVING, lets
requests in flight finish within the grace period, then stops. With a reload interval, a `Reloader`
swaps in a new pipeline when the config or handler files change (and on SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.envoy.transport import ExternalProcessor
from extproc.ops.reload import Reloader
from extproc.request.pipeline import Pipeline
from extproc.settings.listen import ListenAddress
from extproc.settings.sizing import SIDECAR_MESSAGE_SLACK
from extproc.telemetry import metrics, tracing
from extproc.telemetry.loop_watch import LoopWatch

log = logging.getLogger("extproc.server")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


class Sidecar:
    """Owns the gRPC server and the pipeline that new requests use.

    `reload_interval_s`: None, no reloading; 0, only on `request_reload()` (SIGHUP); else the
    seconds between two looks at the config and handler files. `listen` takes addresses or their
    string forms (`unix:/path`, `host:port`).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        listen: Iterable[ListenAddress | str],
        reload_interval_s: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.listen = tuple(a if isinstance(a, ListenAddress) else ListenAddress.parse(a) for a in listen)
        self.addresses: list[ListenAddress] = []  # as bound: the ports gRPC chose for port 0
        self.reloader: Reloader | None = None
        if reload_interval_s is not None:
            self.reloader = Reloader(pipeline.config.path, self.current, self._install, reload_interval_s)
        self._reload_task: asyncio.Task[None] | None = None
        limit = pipeline.config.sidecar.max_request_bytes + SIDECAR_MESSAGE_SLACK
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._health = health.aio.HealthServicer()
        pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(self.current), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    @property
    def _credentials(self) -> grpc.ServerCredentials | None:
        """TLS for TCP listeners when configured (mTLS with a client CA); unix sockets stay plain."""
        tls = self.pipeline.config.sidecar.tls
        if tls is None:
            return None
        client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
        pair = (Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())
        return grpc.ssl_server_credentials(
            [pair], root_certificates=client_ca, require_client_auth=bool(client_ca)
        )

    def current(self) -> Pipeline:
        return self.pipeline

    def _install(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline  # new streams take it; sessions in flight keep the one they started with

    @property
    def reloads(self) -> int:
        return self.reloader.reloads if self.reloader else 0

    @property
    def reload_failures(self) -> int:
        return self.reloader.reload_failures if self.reloader else 0

    def request_reload(self) -> None:
        if self.reloader is not None:
            self.reloader.request()

    async def start(self) -> list[str]:
        """Bind, serve and report SERVING; returns the bound addresses' string forms."""
        for address in self.listen:
            if address.is_unix:
                self._server.add_insecure_port(address.bind_target())
                self.addresses.append(address)
            elif self._credentials is not None:
                port = self._server.add_secure_port(address.bind_target(), self._credentials)
                self.addresses.append(address.bound(port))
            else:
                port = self._server.add_insecure_port(address.bind_target())
                self.addresses.append(address.bound(port))
        await self._server.start()
        for address in self.addresses:
            address.restrict_socket()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.reloader is not None:
            await self.reloader.prime()
            self._reload_task = asyncio.get_running_loop().create_task(self.reloader.run())
        return [str(address) for address in self.addresses]

    async def stop(self, grace: float) -> None:
        if self._reload_task is not None:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload_task
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        for address in self.addresses:
            address.remove_socket()


async def serve(
    pipeline: Pipeline,
    listen: Iterable[ListenAddress],
    reload_interval_s: float | None = None,
    worker: int = 0,
) -> None:
    """Run until SIGTERM or SIGINT, then drain; SIGHUP reloads when reloading is on. Worker i of
    several serves its metrics on the configured port + i."""
    tracing_settings = pipeline.config.sidecar.tracing
    if tracing_settings is not None and tracing_settings.enabled:  # read once: a reload does not change it
        log.info("%s", tracing.start(tracing_settings))
    sidecar = Sidecar(pipeline, listen, reload_interval_s)
    addresses = await sidecar.start()
    metrics_address = pipeline.config.sidecar.metrics_address
    if metrics_address is not None:
        metrics.watch_cache(lambda: [c for c in [sidecar.pipeline.cache.shared_cache] if c is not None])
        metrics.watch_tasks(asyncio.get_running_loop())
        if metrics_address.port != 0:  # port 0: every worker takes a free port of its own
            metrics_address = metrics_address.worker(worker)
        port = metrics.serve(str(metrics_address))
        log.info("metrics on http://%s:%d/metrics", metrics_address.host, port)
    watch = LoopWatch()  # names a hook that blocks the event loop
    watch.start()
    print(f"llm-extproc serving on {' '.join(addresses)}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    if sidecar.reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, sidecar.request_reload)
    await stopping.wait()
    grace = sidecar.pipeline.config.sidecar.grace_seconds
    log.info("stopping: draining requests in flight for up to %.1f s", grace)
    await sidecar.stop(grace)
    watch.stop()
    tracing.stop()  # exports the spans still batched

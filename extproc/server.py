"""The sidecar process: a grpc.aio server with the ext_proc and health services, and its lifecycle.

Readiness is SERVING only once the handlers are loaded; SIGTERM turns it NOT_SERVING, lets
requests in flight finish within the grace period, then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc.pipeline import Pipeline
from extproc.transport import ExternalProcessor

log = logging.getLogger("extproc.server")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
_GRPC_SLACK = 1024 * 1024  # room for the protobuf framing around the largest body


class Sidecar:
    """Owns the gRPC server and the pipeline that new requests use."""

    def __init__(self, pipeline: Pipeline, listen: tuple[str, ...]) -> None:
        self.pipeline = pipeline
        self.listen = listen
        self.addresses: list[str] = []
        limit = pipeline.config.sidecar.max_request_bytes + _GRPC_SLACK
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

    def current(self) -> Pipeline:
        return self.pipeline

    async def start(self) -> list[str]:
        for address in self.listen:
            if address.startswith("unix:"):
                path = Path(address[len("unix:") :])
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a stale socket from a previous run
                self._server.add_insecure_port(address)
                self.addresses.append(address)
            else:
                port = self._server.add_insecure_port(address)
                host = address.rpartition(":")[0]
                self.addresses.append(f"{host}:{port}")
        await self._server.start()
        for address in self.addresses:
            if address.startswith("unix:"):
                os.chmod(address[len("unix:") :], 0o660)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return self.addresses

    async def stop(self, grace: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        for address in self.addresses:
            if address.startswith("unix:"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address[len("unix:") :])

    async def wait(self) -> None:
        await self._server.wait_for_termination()


async def serve(pipeline: Pipeline, listen: tuple[str, ...]) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    sidecar = Sidecar(pipeline, listen)
    addresses = await sidecar.start()
    print(f"llm-extproc serving on {' '.join(addresses)}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    grace = pipeline.config.sidecar.grace_seconds
    log.info("stopping: draining requests in flight for up to %.1f s", grace)
    await sidecar.stop(grace)

"""The bench's floor: an ext_proc processor that does nothing but answer.

`python -m bench.floor_processor SOCKET` serves Envoy's `ExternalProcessor` on a unix socket with
grpc.aio, as the sidecar does, and answers every message with the empty answer of its phase (no
decoding, no hooks, no metadata, no metrics). Put behind a case's Envoy config it measures two things
no sidecar written on grpc.aio can go below: Envoy's own CPU for that config's ext_proc messages, and
grpc.aio's CPU for one stream with those messages. Prints `READY` once it listens.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

READY = "READY"
# The empty answer to each message Envoy can send: "go on, nothing changed".
ANSWERS = {
    "request_headers": pb.ProcessingResponse(request_headers=pb.HeadersResponse()),
    "request_body": pb.ProcessingResponse(request_body=pb.BodyResponse()),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_headers": pb.ProcessingResponse(response_headers=pb.HeadersResponse()),
    "response_body": pb.ProcessingResponse(response_body=pb.BodyResponse()),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}


class FloorProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    async def Process(self, request_iterator: Any, context: Any) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            await context.write(ANSWERS[request.WhichOneof("request")])


async def serve(socket_path: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalProcessorServicer_to_server(FloorProcessor(), server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    print(READY, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))

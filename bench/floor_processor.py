"""The bench's floor: an ext_proc processor that does nothing but answer.

`python -m bench.floor_processor SOCKET` serves Envoy's `ExternalProcessor` on a unix socket with
grpc.aio, as the sidecar does, and answers every message with the empty answer of its phase (no
decoding, no hooks, no metadata, no metrics). Put behind a case's Envoy config it measures two things
no sidecar written on grpc.aio can go below: Envoy's own CPU for that config's ext_proc messages, and
grpc.aio's CPU for one stream with those messages. Prints `READY` once it listens.

`--response-bodies streamed|buffered` answers the response headers with a mode override that asks for
the response body, as the sidecar does for a per-chunk hook (streamed: every part of the answer is a
message) or for a hook that reads whole answers, e.g. the rate limiter's token counts (buffered).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
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
RESPONSE_BODY_MODES = {"streamed": ProcessingMode.STREAMED, "buffered": ProcessingMode.BUFFERED}


class FloorProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, response_bodies: str | None) -> None:
        self.answers = dict(ANSWERS)
        if response_bodies is not None:
            self.answers["response_headers"] = pb.ProcessingResponse(
                response_headers=pb.HeadersResponse(),
                mode_override=ProcessingMode(response_body_mode=RESPONSE_BODY_MODES[response_bodies]),
            )

    async def Process(self, request_iterator: Any, context: Any) -> None:
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                return
            await context.write(self.answers[request.WhichOneof("request")])


async def serve(socket_path: str, response_bodies: str | None) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalProcessorServicer_to_server(FloorProcessor(response_bodies), server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    print(READY, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="the unix socket to listen on")
    parser.add_argument("--response-bodies", choices=sorted(RESPONSE_BODY_MODES))
    args = parser.parse_args()
    asyncio.run(serve(args.socket, args.response_bodies))

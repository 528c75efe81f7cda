"""Drive the sidecar's `Process()` over a real gRPC channel, phase by phase."""

from __future__ import annotations

import textwrap
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from extproc.ops.server import Sidecar
from extproc.request import pipeline


def make_pipeline(folder: Path, config_text: str, handlers: dict[str, str] | None = None):
    for name, source in (handlers or {}).items():
        (folder / name).write_text(textwrap.dedent(source))
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(config_text))
    return pipeline.load(path)


def headers_request(
    path="/v1/chat/completions", method="POST", headers=None, end_of_stream=False, metadata=None
):
    values = {
        ":path": path,
        ":method": method,
        ":scheme": "http",
        ":authority": "test",
        "content-type": "application/json",
        "x-request-id": "req-1",
        **(headers or {}),
    }
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    request = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)
    )
    for namespace, fields in (metadata or {}).items():
        struct = struct_pb2.Struct()
        struct.update(fields)
        request.metadata_context.filter_metadata[namespace].CopyFrom(struct)
    return request


def body_request(body: bytes, end_of_stream=True):
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=end_of_stream))


def response_headers_request(status=200, headers=None, end_of_stream=False):
    values = {":status": str(status), "content-type": "application/json", **(headers or {})}
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)
    )


def response_body_request(body: bytes, end_of_stream=True):
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=body, end_of_stream=end_of_stream))


def header_value(mutation, key):
    for option in mutation.set_headers:
        if option.header.key == key:
            return option.header.raw_value.decode()
    return None


class Harness:
    def __init__(self, built):
        self.sidecar = Sidecar(built, ("127.0.0.1:0",))

    async def __aenter__(self):
        (address,) = await self.sidecar.start()
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.sidecar.stop(0)

    def open(self):
        """A raw stream, for tests that need to read messages the sidecar sends on its own."""
        return self.stub.Process()

    async def exchange(self, *requests):
        """Send each message, read its answer; stop at an immediate response as Envoy would."""
        call = self.stub.Process()
        answers = []
        for request in requests:
            await call.write(request)
            answer = await call.read()
            answers.append(answer)
            if answer.HasField("immediate_response"):
                break
        await call.done_writing()
        call.cancel()
        return answers

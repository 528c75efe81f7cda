"""A small OTLP gRPC collector for tests: `TraceService/Export` over a real gRPC server, spans decoded.

Envoy's OpenTelemetry tracer and the sidecar's exporter both send here; `spans()` flattens what came into
dicts (trace and span ids as hex, attributes as plain values, the sending resource's `service.name`).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Any] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def Export(self, request: Any, context: Any) -> Any:
        with self._lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> OtlpCollector:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0)

    def raw(self) -> bytes:
        """Every export as received, serialised: for checking that a text was never sent."""
        with self._lock:
            return b"".join(request.SerializeToString() for request in self.requests)

    def spans(self) -> list[dict[str, Any]]:
        found = []
        with self._lock:
            requests = list(self.requests)
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(
                            {
                                "service": resource.get("service.name"),
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex(),
                                "kind": span.kind,
                                "status": span.status.code,
                                "attributes": {a.key: _value(a.value) for a in span.attributes},
                            }
                        )
        return found

    def wait_for(self, predicate: Any, timeout_s: float = 15.0) -> list[dict[str, Any]]:
        """The spans once `predicate(spans)` holds (Envoy flushes every 5 s, or each 5 spans)."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            assert time.monotonic() < deadline, f"spans never arrived; have {spans}"
            time.sleep(0.05)

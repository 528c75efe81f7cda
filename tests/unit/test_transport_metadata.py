"""The request metadata a session reads is what protobuf's own JSON mapping gives for Envoy's Structs."""

from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from extproc.envoy.transport import message_of
from extproc.types import Phase

NAMESPACE = "llm_extproc.request"
# What a Struct holds as JSON: numbers are finite doubles, keys are strings.
VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=6), VALUES, max_size=5))
def test_metadata_reads_as_protobufs_json_mapping(fields: dict[str, Any]) -> None:
    request = pb.ProcessingRequest(request_body=pb.HttpBody(body=b"{}", end_of_stream=True))
    request.metadata_context.filter_metadata[NAMESPACE].update(fields)
    struct = request.metadata_context.filter_metadata[NAMESPACE]
    read = message_of(request, Phase.REQUEST_BODY, (NAMESPACE,)).read_metadata()
    assert read == {NAMESPACE: json_format.MessageToDict(struct)}

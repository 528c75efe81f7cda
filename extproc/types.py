"""Shared vocabulary: call types, hook kinds, ext_proc phases, JSON and header aliases."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

JSON: TypeAlias = Any
JSONDict: TypeAlias = dict[str, Any]
Headers: TypeAlias = dict[str, str]


class CallType(StrEnum):
    """The `call_type` a hook receives (hook-semantics.md: the documented names)."""

    COMPLETION = "completion"
    TEXT_COMPLETION = "text_completion"
    EMBEDDINGS = "embeddings"
    IMAGE_GENERATION = "image_generation"
    MODERATION = "moderation"
    AUDIO_TRANSCRIPTION = "audio_transcription"


class Phase(StrEnum):
    """The ext_proc messages Envoy sends about one HTTP request (the names of the protobuf oneof)."""

    REQUEST_HEADERS = "request_headers"
    REQUEST_BODY = "request_body"
    REQUEST_TRAILERS = "request_trailers"
    RESPONSE_HEADERS = "response_headers"
    RESPONSE_BODY = "response_body"
    RESPONSE_TRAILERS = "response_trailers"


class HookKind(StrEnum):
    """Every hook method the chain knows, by its LiteLLM name."""

    PRE_CALL = "async_pre_call_hook"
    MODERATION = "async_moderation_hook"
    POST_CALL_SUCCESS = "async_post_call_success_hook"
    POST_CALL_FAILURE = "async_post_call_failure_hook"
    POST_CALL_STREAMING = "async_post_call_streaming_hook"
    POST_CALL_STREAMING_ITERATOR = "async_post_call_streaming_iterator_hook"
    POST_CALL_RESPONSE_HEADERS = "async_post_call_response_headers_hook"
    LOG_PRE_API_CALL = "async_log_pre_api_call"
    LOG_SUCCESS = "async_log_success_event"
    LOG_FAILURE = "async_log_failure_event"


# One-message mode (`extproc.forward_headers`): how the sidecar learns what the request-headers message
# would have told it. Envoy names the endpoint in the gRPC stream's initial metadata (per route), and an
# earlier filter copies the listed headers into this dynamic metadata namespace, sent with every message.
ENDPOINT_METADATA_KEY = "x-llm-endpoint"
FORWARDED_HEADERS_NAMESPACE = "llm_extproc.request"

"""Shared vocabulary: call types, hook kinds, ext_proc phases, JSON and header aliases."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

JSON: TypeAlias = Any
JSONDict: TypeAlias = dict[str, Any]
Headers: TypeAlias = dict[str, str]


class CallType(StrEnum):
    """One member per hooked API family, valued with its documented `call_type` name; what hooks receive
    depends on `extproc.call_types` (`hook_call_type`)."""

    COMPLETION = "completion"
    TEXT_COMPLETION = "text_completion"
    EMBEDDINGS = "embeddings"
    IMAGE_GENERATION = "image_generation"
    MODERATION = "moderation"
    AUDIO_TRANSCRIPTION = "audio_transcription"
    RESPONSES = "responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"


class CallTypeNames(StrEnum):
    """Which names hooks receive as `call_type` (`extproc.call_types`).

    `proxy` (the default): the names LiteLLM's proxy really passes (`acompletion`, ...), which handlers
    tested against a live proxy compare with. `documented`: the names of LiteLLM's call-hook docs
    (`completion`, ...). Metrics labels and Envoy's dynamic metadata always use the documented names, so
    dashboards do not change with the setting.
    """

    PROXY = "proxy"
    DOCUMENTED = "documented"


# The name LiteLLM's proxy passes for each call type (its `CallTypes` async members); the Messages
# family's is the same in both sets.
PROXY_CALL_TYPES: dict[CallType, str] = {
    CallType.COMPLETION: "acompletion",
    CallType.TEXT_COMPLETION: "atext_completion",
    CallType.EMBEDDINGS: "aembedding",
    CallType.IMAGE_GENERATION: "aimage_generation",
    CallType.MODERATION: "amoderation",
    CallType.AUDIO_TRANSCRIPTION: "atranscription",
    CallType.RESPONSES: "aresponses",
}
# Either spelling back to the call type, for code that accepts both.
CALL_TYPE_OF_NAME: dict[str, CallType] = {
    **{call_type.value: call_type for call_type in CallType},
    **{name: call_type for call_type, name in PROXY_CALL_TYPES.items()},
}


def hook_call_type(call_type: CallType, names: CallTypeNames) -> str:
    """The `call_type` string hooks receive for `call_type` under the naming in force."""
    if names is CallTypeNames.PROXY:
        # A family whose two names are the same (`anthropic_messages`) needs no entry.
        return PROXY_CALL_TYPES.get(call_type, call_type.value)
    return call_type.value


def call_type_named(name: str) -> CallType | None:
    """The call type a name of either set stands for (`acompletion` and `completion`: chat); None if
    neither set has it."""
    return CALL_TYPE_OF_NAME.get(name)


# Where the sidecar puts its additions to `data` for hooks (headers, the key's fields, request id,
# guardrail selection): `metadata` on the OpenAI endpoints LiteLLM always treated that way, and
# `litellm_metadata` on the Responses and Messages APIs, where `metadata` is the client's own field and
# goes upstream as the hooks leave it (LiteLLM's proxy does the same there).
SIDECAR_METADATA_KEYS = ("litellm_metadata", "metadata")


def sidecar_metadata(data: JSONDict) -> JSONDict | None:
    """The dict of the sidecar's additions in a request's `data` (None before they are made)."""
    for key in SIDECAR_METADATA_KEYS:
        value = data.get(key)
        if isinstance(value, dict):
            return value
    return None


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

"""The route table: `:path` to an endpoint (call type + codec + what the body must hold)."""

from __future__ import annotations

from dataclasses import dataclass

from extproc.api.codecs import Codec, JsonCodec, MultipartCodec
from extproc.types import CallType


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One OpenAI endpoint the sidecar understands."""

    path: str
    call_type: CallType
    codec: Codec
    required: str | None
    streams: bool = False


# Path suffixes after the optional `/v1` prefix, in the order the README documents them.
ENDPOINT_PATHS: dict[str, tuple[CallType, str | None, bool]] = {
    "/chat/completions": (CallType.COMPLETION, "messages", True),
    "/completions": (CallType.TEXT_COMPLETION, "prompt", True),
    "/embeddings": (CallType.EMBEDDINGS, "input", False),
    "/images/generations": (CallType.IMAGE_GENERATION, "prompt", False),
    "/moderations": (CallType.MODERATION, "input", False),
    "/audio/transcriptions": (CallType.AUDIO_TRANSCRIPTION, "file", False),
}
ENDPOINT_REGEX = r"^(/v1)?/({})/?$".format("|".join(p.lstrip("/") for p in ENDPOINT_PATHS))


class RouteTable:
    """Built once per config; `match` is a dict lookup after stripping the query and `/v1`."""

    def __init__(self, max_json_depth: int) -> None:
        json_codec = JsonCodec(max_json_depth)
        multipart_codec = MultipartCodec()
        self._routes: dict[str, Endpoint] = {}
        for suffix, (call_type, required, streams) in ENDPOINT_PATHS.items():
            codec: Codec = multipart_codec if call_type is CallType.AUDIO_TRANSCRIPTION else json_codec
            endpoint = Endpoint(suffix, call_type, codec, required, streams)
            self._routes[suffix] = endpoint
            self._routes["/v1" + suffix] = endpoint

    def match(self, path: str) -> Endpoint | None:
        path = path.partition("?")[0]
        return self._routes.get(path) or self._routes.get(path.rstrip("/"))


_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "model": (str, "a string"),
    "stream": (bool, "a boolean"),
    "user": (str, "a string"),
    "messages": (list, "an array"),
}


def field_problem(endpoint: Endpoint, data: dict[str, object]) -> tuple[str, str] | None:
    """A missing required parameter or a wrongly typed well-known one: (message, param)."""
    required = endpoint.required
    if required is not None and data.get(required) is None:
        return f"{endpoint.path}: Missing required parameter: '{required}'.", required
    form = endpoint.call_type is CallType.AUDIO_TRANSCRIPTION
    for name, (kind, described) in _TYPES.items():
        if form and kind is not str:
            continue  # form fields are strings ("stream": "true"): only the string ones are checked
        if name in data and data[name] is not None and not isinstance(data[name], kind):
            return f"{endpoint.path}: Invalid type for '{name}': expected {described}.", name
    return None

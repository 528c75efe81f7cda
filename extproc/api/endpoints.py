"""The route table: `:path` to the API family that reads and answers it.

`FAMILIES` is the one list of families; the generated Envoy config routes exactly their paths through
the sidecar (`ENDPOINT_PATHS`, `ENDPOINT_REGEX`).
"""

from __future__ import annotations

from extproc.api.audio import AudioTranscriptions
from extproc.api.chat import ChatCompletions
from extproc.api.codecs import JsonCodec, MultipartCodec
from extproc.api.completions import TextCompletions
from extproc.api.embeddings import Embeddings
from extproc.api.family import ApiFamily
from extproc.api.images import ImageGenerations
from extproc.api.moderations import Moderations
from extproc.api.openai import OpenAIFamily

# In the order the README documents them.
FAMILIES: tuple[type[OpenAIFamily], ...] = (
    ChatCompletions,
    TextCompletions,
    Embeddings,
    ImageGenerations,
    Moderations,
    AudioTranscriptions,
)
# Path suffixes after the optional `/v1` prefix.
ENDPOINT_PATHS = tuple(family.path for family in FAMILIES)
# Answers errors that come before any family is known (a request the sidecar could not place).
DEFAULT_FAMILY: ApiFamily = ChatCompletions(JsonCodec(0, 0))
# LLM endpoints of the API families still to come: refused at the edge until they are hooked, so that
# their traffic cannot reach an upstream around the hooks.
UNHOOKED_LLM_PATHS = ("/responses", "/messages")
# Prefixes an LLM upstream may take one of those endpoints under, compared without case by the generated
# Envoy config: other cases, `;params` and escaped trailers start with them too. What no hooked route
# took is refused there.
LLM_PATH_PREFIXES = (
    *(prefix + path for path in (*ENDPOINT_PATHS, *UNHOOKED_LLM_PATHS) for prefix in ("/v1", "")),
    "/anthropic/v1/messages",
)
ENDPOINT_REGEX = r"^(/v1)?/({})/?$".format("|".join(p.lstrip("/") for p in ENDPOINT_PATHS))


class RouteTable:
    """Built once per config; `match` is a dict lookup after stripping the query and `/v1`."""

    def __init__(self, max_json_depth: int, max_json_nodes: int = 1_000_000) -> None:
        json_codec = JsonCodec(max_json_depth, max_json_nodes)
        multipart_codec = MultipartCodec()
        self._routes: dict[str, ApiFamily] = {}
        for family_type in FAMILIES:
            family = family_type(multipart_codec if family_type.form else json_codec)
            self._routes[family.path] = family
            self._routes["/v1" + family.path] = family

    def match(self, path: str) -> ApiFamily | None:
        path = path.partition("?")[0]
        return self._routes.get(path) or self._routes.get(path.rstrip("/"))

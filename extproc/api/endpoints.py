"""The route table: `:path` to the API family that reads and answers it.

`FAMILIES` is the one list of families; the generated Envoy config routes exactly their paths through
the sidecar (`ENDPOINT_PATHS`, one route per endpoint matching `path_regex`).
"""

from __future__ import annotations

from extproc.api.audio import AudioTranscriptions
from extproc.api.chat import ChatCompletions
from extproc.api.codecs import JsonCodec, MultipartCodec
from extproc.api.completions import TextCompletions
from extproc.api.embeddings import Embeddings
from extproc.api.family import ApiFamily
from extproc.api.images import ImageGenerations
from extproc.api.messages import AnthropicMessages
from extproc.api.moderations import Moderations
from extproc.api.openai import OpenAIFamily
from extproc.api.responses import Responses

# In the order the README documents them.
FAMILIES: tuple[type[OpenAIFamily], ...] = (
    ChatCompletions,
    TextCompletions,
    Embeddings,
    ImageGenerations,
    Moderations,
    AudioTranscriptions,
    Responses,
    AnthropicMessages,
)
# Path suffixes after the optional `/v1` prefix, and the other full paths a family is mounted at.
ENDPOINT_PATHS = tuple(family.path for family in FAMILIES)
ENDPOINT_ALIASES = {family.path: family.aliases for family in FAMILIES}
# Answers errors that come before any family is known (a request the sidecar could not place).
DEFAULT_FAMILY: ApiFamily = ChatCompletions(JsonCodec(0, 0))
# Prefixes an LLM upstream may take one of those endpoints under, compared without case by the generated
# Envoy config: other cases, `;params` and escaped trailers start with them too. What no hooked route
# took is refused there.
LLM_PATH_PREFIXES = (
    *(prefix + path for path in ENDPOINT_PATHS for prefix in ("/v1", "")),
    *(alias for aliases in ENDPOINT_ALIASES.values() for alias in aliases),
)


_LOWER_PREFIXES = tuple(prefix.lower() for prefix in LLM_PATH_PREFIXES)
# Methods that carry no request for a model: they may reach the upstream unhooked (stored completions'
# GET, a response's DELETE, CORS preflights).
BODYLESS_METHODS = ("GET", "HEAD", "DELETE", "OPTIONS")
UNHOOKED_MESSAGE = (
    "llm-extproc: this request looks like an LLM call the hooks do not cover (another path spelling, "
    "method or endpoint): refused. Send POST to a hooked endpoint, e.g. /v1/chat/completions."
)


def unhooked_llm_call(path: str, method: str, hooked_path: bool) -> bool:
    """What the generated Envoy config refuses itself (local_replies.unhooked_llm_routes), for proxies
    whose routes are not ours (Istio, Envoy Gateway): a method other than POST and the bodyless ones on
    a path that starts like an LLM endpoint in any case, unless it is a POST to a hooked path."""
    if method in BODYLESS_METHODS or (hooked_path and method == "POST"):
        return False
    return path.partition("?")[0].lower().startswith(_LOWER_PREFIXES)


def path_regex(suffix: str) -> str:
    """The exact paths of one endpoint: `/v1` optional, its aliases, one trailing slash allowed."""
    spellings = [rf"(/v1)?{suffix}", *ENDPOINT_ALIASES.get(suffix, ())]
    return r"^({})/?$".format("|".join(spellings))


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
            for alias in family.aliases:
                self._routes[alias] = family

    def match(self, path: str) -> ApiFamily | None:
        path = path.partition("?")[0]
        return self._routes.get(path) or self._routes.get(path.rstrip("/"))

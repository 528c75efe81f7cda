"""`ApiFamily`: the wire shapes of one family of LLM endpoints, behind one small interface.

The request core (session, admission, endings, streaming) knows requests, answers and streams only
through this interface, so adding a family means adding one module that implements it (plus its tests)
and listing it in `extproc.api.endpoints.FAMILIES`.
"""

from __future__ import annotations

from typing import Any, Protocol

from extproc.api.codecs import Codec
from extproc.decisions import Reply
from extproc.errors import ErrorInfo
from extproc.types import CallType, JSONDict


class ApiFamily(Protocol):
    """One endpoint family: how to read its requests, and how to answer, refuse and stream in its shape."""

    @property
    def path(self) -> str:
        """The path after the optional `/v1` prefix."""
        ...

    @property
    def aliases(self) -> tuple[str, ...]:
        """Other full paths the family is mounted at (`/anthropic/v1/messages`)."""
        ...

    @property
    def call_type(self) -> CallType: ...

    @property
    def metadata_key(self) -> str:
        """Where the sidecar's additions to `data` go: `metadata`, or `litellm_metadata` where `metadata`
        is the client's own field (Responses, Messages)."""
        ...

    @property
    def named_events(self) -> bool:
        """Whether its stream events carry `event:` lines that must be kept (Responses, Messages)."""
        ...

    @property
    def hook_frames(self) -> bool:
        """Whether streaming iterator hooks receive whole SSE frames as `bytes` (Messages, as LiteLLM)."""
        ...

    @property
    def codec(self) -> Codec: ...

    # ---- requests ----
    def problem(self, data: JSONDict) -> tuple[str, str] | None:
        """A missing required parameter or a wrongly typed well-known one: (message, param)."""
        ...

    def model(self, data: JSONDict) -> Any:
        """The model the request asks for, as sent."""
        ...

    def user(self, data: JSONDict) -> Any:
        """The end user the request names, as sent."""
        ...

    def has_user(self, data: JSONDict) -> bool:
        """Whether the request names an end user at all (what `enforce_user_param` demands)."""
        ...

    def prompt_text(self, data: JSONDict) -> str:
        """The text a hook would scan."""
        ...

    # ---- answers ----
    def refusal(self, text: str, stream: bool) -> Reply:
        """The client's answer when a pre-call hook refuses with `text` (hook-semantics.md)."""
        ...

    def error_reply(self, error: ErrorInfo, details: str, metadata: dict[str, Any] | None) -> Reply:
        """An error answer, buffered."""
        ...

    def usage(self, response: Any) -> dict[str, int]:
        """Token counts of an answer or of a stream's final event (ints only)."""
        ...

    # ---- streams ----
    def error_event(self, error: ErrorInfo) -> bytes:
        """The bytes that end a stream already started with an error."""
        ...

    def chunk_text(self, chunk: JSONDict) -> str | None:
        """The text a stream event adds."""
        ...

    def set_chunk_text(self, chunk: JSONDict, text: str) -> bool | None:
        """Replace the text a stream event adds; False when the event was left as it was."""
        ...

    def encode_event(self, chunk: JSONDict, name: str | None) -> bytes:
        """A stream event the hooks changed or made, framed as the family frames them."""
        ...

    def answer_view(self, response: JSONDict) -> Any:
        """What success hooks receive for a whole answer."""
        ...

    def end_of_stream(self) -> bytes:
        """What ends a stream the sidecar sends itself (after iterator hooks)."""
        ...

    def assembled(self, model: Any, text: str, usage: dict[str, int]) -> JSONDict:
        """A whole stream as one answer, for the success logging event."""
        ...

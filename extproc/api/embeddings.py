"""`POST /v1/embeddings`: OpenAI's embeddings; a string refusal is a 400 envelope."""

from __future__ import annotations

from extproc.api.openai import OpenAIFamily
from extproc.types import CallType


class Embeddings(OpenAIFamily):
    path = "/embeddings"
    call_type = CallType.EMBEDDINGS
    required = "input"

    __slots__ = ()

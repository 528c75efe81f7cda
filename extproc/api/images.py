"""`POST /v1/images/generations`: OpenAI's image generations; a string refusal is a 400 envelope."""

from __future__ import annotations

from extproc.api.openai import OpenAIFamily
from extproc.types import CallType


class ImageGenerations(OpenAIFamily):
    path = "/images/generations"
    call_type = CallType.IMAGE_GENERATION
    required = "prompt"

    __slots__ = ()

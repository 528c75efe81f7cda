"""`POST /v1/moderations`: OpenAI's moderations; a string refusal is a 400 envelope."""

from __future__ import annotations

from extproc.api.openai import OpenAIFamily
from extproc.types import CallType


class Moderations(OpenAIFamily):
    path = "/moderations"
    call_type = CallType.MODERATION
    required = "input"

    __slots__ = ()

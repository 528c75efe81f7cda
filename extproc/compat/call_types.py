"""`CallTypes`: LiteLLM's enum of call names, for hooks that compare `call_type` with its members.

A `str` enum, so `call_type == CallTypes.acompletion` holds for the plain string a hook receives, and
`CallTypes.acompletion.value` is that string. Only the call names of LLM endpoints a proxy serves are
listed (LiteLLM's enum also names file, batch, assistant and vector-store operations).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias


class CallTypes(StrEnum):
    """Each call in its sync and async (`a`-prefixed) name, as LiteLLM's SDK and proxy pass them."""

    completion = "completion"
    acompletion = "acompletion"
    text_completion = "text_completion"
    atext_completion = "atext_completion"
    embedding = "embedding"
    aembedding = "aembedding"
    image_generation = "image_generation"
    aimage_generation = "aimage_generation"
    image_edit = "image_edit"
    aimage_edit = "aimage_edit"
    moderation = "moderation"
    amoderation = "amoderation"
    transcription = "transcription"
    atranscription = "atranscription"
    speech = "speech"
    aspeech = "aspeech"
    rerank = "rerank"
    arerank = "arerank"
    responses = "responses"
    aresponses = "aresponses"
    anthropic_messages = "anthropic_messages"
    aanthropic_messages = "aanthropic_messages"
    pass_through = "pass_through_endpoint"


# LiteLLM's `CallTypesLiteral`, for annotations: any of the names above.
CallTypesLiteral: TypeAlias = str

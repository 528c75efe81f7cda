"""`POST /v1/audio/transcriptions`: a multipart form (the file kept byte-exact); a string refusal is a
400 envelope."""

from __future__ import annotations

from extproc.api.openai import OpenAIFamily
from extproc.types import CallType


class AudioTranscriptions(OpenAIFamily):
    path = "/audio/transcriptions"
    call_type = CallType.AUDIO_TRANSCRIPTION
    required = "file"
    form = True

    __slots__ = ()

"""`get_formatted_prompt`: the text of a request that a hook would scan."""

from __future__ import annotations

from typing import Any


def _text_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            if isinstance(item, str):
                parts.append(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                parts.append(item["text"])
        return parts
    return []


def get_formatted_prompt(data: dict[str, Any], call_type: str) -> str:
    """Chat message contents, a completion's prompt, embeddings' or moderations' input, an image prompt.

    Pieces (messages, content parts, list items) are joined with newlines, so words of two pieces never
    run together (LiteLLM concatenates chat contents as they are).
    """
    if call_type in ("completion", "acompletion"):
        parts: list[str] = []
        for message in data.get("messages") or ():
            if isinstance(message, dict):
                parts.extend(_text_of(message.get("content")))
        return "\n".join(parts)
    if call_type in ("text_completion", "atext_completion"):
        return "\n".join(_text_of(data.get("prompt")))
    if call_type in ("embeddings", "aembedding", "moderation", "amoderation"):
        return "\n".join(_text_of(data.get("input")))
    if call_type in ("image_generation", "aimage_generation", "audio_transcription", "atranscription"):
        return "\n".join(_text_of(data.get("prompt")))
    return ""

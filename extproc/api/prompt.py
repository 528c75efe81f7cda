"""`get_formatted_prompt`: the text of a request that a hook would scan."""

from __future__ import annotations

from typing import Any

import orjson


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
    """Chat message contents, a completion's prompt, embeddings' or moderations' input, an image prompt;
    a Responses request's instructions and input items (tool call arguments and outputs included); a
    Messages request's system and content blocks (tool results and tool inputs included).

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
    if call_type in ("responses", "aresponses"):
        parts = _text_of(data.get("instructions"))
        items = data.get("input")
        for item in [items] if isinstance(items, str) else items if isinstance(items, list) else ():
            parts.extend(_item_texts(item))
        return "\n".join(parts)
    if call_type == "anthropic_messages":
        parts = _text_of(data.get("system"))
        for message in data.get("messages") or ():
            if isinstance(message, dict):
                parts.extend(_block_texts(message.get("content")))
        return "\n".join(parts)
    return ""


def _item_texts(item: Any) -> list[str]:
    """A Responses input item's texts: a message's content, a tool call's arguments, a tool's output."""
    if isinstance(item, str):
        return [item]
    if not isinstance(item, dict):
        return []
    if "content" in item:
        return _text_of(item.get("content"))
    return [value for key in ("arguments", "output") if isinstance(value := item.get(key), str)]


def _block_texts(content: Any) -> list[str]:
    """A Messages content's texts: text blocks, tool results (their text or text blocks) and tool inputs."""
    if isinstance(content, str):
        return [content]
    parts: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_result":
            parts.extend(_block_texts(block.get("content")))
        elif kind == "tool_use" and block.get("input") is not None:
            parts.append(dumps_text(block["input"]))
    return parts


def dumps_text(value: Any) -> str:
    """A JSON value as text (a tool's input), as a hook scanning it would read it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)

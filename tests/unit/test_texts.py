"""`request_texts` and `TextScan`: every user-controlled string of a request, and one normalised view."""

from __future__ import annotations

import json
from typing import Any

from extproc import TextScan, normalize_text, request_texts
from extproc.api.texts import SEPARATOR


def texts(data: dict[str, Any], call_type: str = "completion") -> list[str]:
    return [place.text for place in request_texts(data, call_type)]


def chat_with_tools() -> dict[str, Any]:
    arguments = json.dumps({"to": "bob", "count": 3, "nested": {"k": ["v"]}})
    return {
        "model": "gpt-4o",
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "name": "alice", "content": [{"type": "text", "text": "part"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "result"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "desc",
                    "parameters": {"type": "object", "properties": {"to": {"description": "who"}}},
                },
            }
        ],
    }


def test_every_text_place_of_a_chat_request_and_nothing_else() -> None:
    found = texts(chat_with_tools())
    for text in ("sys", "alice", "part", "c1", "f", "bob", "to", "3", "v", "k", "nested", "result", "desc"):
        assert text in found, text
    assert "who" in found and "properties" in found  # a schema is free-form: its keys are text too
    for structural in ("system", "user", "assistant", "tool", "function", "text", "gpt-4o", "u-1", "object"):
        assert structural not in found, structural


def test_payloads_and_vocabularies_are_not_text() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "high"}}
    audio = {"type": "input_audio", "input_audio": {"data": "QUJD", "format": "wav"}}
    file = {"type": "file", "file": {"file_data": "QUJD", "filename": "notes.txt"}}
    data = {"model": "m", "messages": [{"role": "user", "content": [image, audio, file]}]}
    assert texts(data) == ["notes.txt"]


def test_other_endpoints() -> None:
    assert texts({"prompt": ["a", "b"], "suffix": "c"}, "text_completion") == ["a", "b", "c"]
    assert texts({"input": "a"}, "embeddings") == ["a"]
    assert texts({"input": [{"type": "text", "text": "a"}]}, "moderation") == ["a"]
    assert texts({"prompt": "a", "size": "1024x1024"}, "image_generation") == ["a"]
    assert texts({"messages": [{"role": "user", "content": "a"}]}, "unknown") == []


def test_replace_writes_back_in_place_and_keeps_arguments_valid_json() -> None:
    data = chat_with_tools()
    for place in request_texts(data, "completion"):
        place.replace(f"<{place.text}>")
    messages = data["messages"]
    assert messages[1]["name"] == "<alice>" and messages[1]["content"][0]["text"] == "<part>"
    arguments = json.loads(messages[2]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"<to>": "<bob>", "<count>": "<3>", "<nested>": {"<k>": ["<v>"]}}
    assert messages[2]["role"] == "assistant" and messages[2]["tool_calls"][0]["type"] == "function"


def test_arguments_that_are_not_json_are_one_text() -> None:
    data = chat_with_tools()
    data["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"broken": '
    assert '{"broken": ' in texts(data)


def test_a_deep_document_does_not_exhaust_the_stack() -> None:
    deep = "[" * 1000 + '"x"' + "]" * 1000
    data = chat_with_tools()
    data["messages"][2]["tool_calls"][0]["function"]["arguments"] = deep
    assert "x" in texts(data) or deep in texts(data)


def test_normalisation_removes_format_characters_then_applies_nfkc() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "forbidden")
    assert normalize_text(fullwidth) == "forbidden"
    assert normalize_text("forb\u200bid\u00adden\u2060") == "forbidden"
    assert normalize_text("forb\x00id\x7fden\x9f") == "forbidden"  # control characters too
    assert normalize_text("kill\x0cthem\t\r\n") == "kill\x0cthem\t\r\n"  # but not whitespace
    assert normalize_text("plain ascii") == "plain ascii"


def test_a_scan_joins_places_and_locates_matches() -> None:
    data = {"messages": [{"role": "user", "content": "ab"}, {"role": "user", "content": "c\u200bd"}]}
    scan = TextScan(request_texts(data, "completion"))
    assert scan.text == "ab" + SEPARATOR + "cd"
    start = scan.text.index("cd")
    assert scan.locate(start, start + 2) == (1, 0, 2)
    assert scan.locate(0, start) is None  # across places
    assert data["messages"][1]["content"] == "c\u200bd"  # reading changes nothing


def test_long_lists_without_text_are_skipped_and_text_in_long_lists_is_found() -> None:
    empty: list[Any] = [[] for _ in range(10_000)]
    assert texts({"tools": empty}) == []
    assert texts({"input": [[7] * 300 for _ in range(300)]}, "embeddings") == []  # token arrays: not text
    hidden = [[] for _ in range(5_000)] + [[{"description": "found"}]]
    assert texts({"tools": hidden}) == ["found"]
    arguments = json.dumps([1] * 1_000 + [4111111111111111])  # numbers count in a document
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    assert "4111111111111111" in texts({"messages": [{"role": "assistant", "tool_calls": [call]}]})


def test_a_masked_tool_call_keeps_integers_beyond_64_bits_exact():
    arguments = '{"to": "a@b.com", "id": 123456789012345678901234567890}'
    data = {
        "messages": [
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": arguments}}]}
        ]
    }
    place = next(p for p in request_texts(data, "completion") if p.text == "a@b.com")
    place.replace("<EMAIL>")
    written = data["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(written) == {"to": "<EMAIL>", "id": 123456789012345678901234567890}


import orjson
import pytest

from extproc import get_formatted_prompt
from extproc.api.endpoints import RouteTable
from extproc.types import CallType

_FAMILIES = {
    family.call_type: family
    for family in (
        RouteTable(64).match(p)
        for p in (
            "/chat/completions",
            "/completions",
            "/embeddings",
            "/images/generations",
            "/moderations",
            "/audio/transcriptions",
        )
    )
}


def refusal_reply(call_type, stream, text):
    """The answer a pre-call string refusal gets from the family of `call_type`."""
    return _FAMILIES[call_type].refusal(text, stream)


@pytest.mark.parametrize(
    ("call_type", "data", "expected"),
    [
        (
            "completion",
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "user", "content": [{"type": "text", "text": " there"}, {"type": "image_url"}]},
                ]
            },
            "hi\n there",
        ),
        ("text_completion", {"prompt": "abc"}, "abc"),
        ("text_completion", {"prompt": ["a", "b"]}, "a\nb"),
        ("embeddings", {"input": ["x", "y"]}, "x\ny"),
        ("moderation", {"input": "m"}, "m"),
        ("image_generation", {"prompt": "cat"}, "cat"),
        ("completion", {}, ""),
    ],
)
def test_formatted_prompt(call_type, data, expected):
    assert get_formatted_prompt(data, call_type) == expected


def test_chat_refusal_is_a_completion():
    reply = refusal_reply(CallType.COMPLETION, False, "no")
    body = orjson.loads(reply.body)
    assert reply.status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] is None
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "no"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {}


def test_streaming_chat_refusal_is_sse():
    reply = refusal_reply(CallType.COMPLETION, True, "no")
    assert reply.status == 200 and reply.content_type == "text/event-stream"
    events = [e for e in reply.body.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    first, last = (orjson.loads(e.removeprefix("data: ")) for e in events[:2])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "no"}
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert first["id"] == last["id"]


def test_text_completion_refusal():
    body = orjson.loads(refusal_reply(CallType.TEXT_COMPLETION, False, "no").body)
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "no"


@pytest.mark.parametrize("call_type", [CallType.EMBEDDINGS, CallType.IMAGE_GENERATION, CallType.MODERATION])
def test_other_endpoints_refuse_with_400(call_type):
    reply = refusal_reply(call_type, False, "no")
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"]["message"] == "no"

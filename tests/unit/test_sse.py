import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.api.sse import DONE, Event, SSEDecoder, SSEError, encode_data, encode_json

# ---------------------------------------------------------------------------------------------- helpers


def decode(chunks: list[bytes], max_event_bytes: int = 1 << 20) -> list[Event]:
    decoder = SSEDecoder(max_event_bytes)
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.flush()
    assert decoder.pending == 0
    return events


def fields(events: list[Event]) -> list[tuple[str | None, str | None]]:
    return [(e.data, e.event) for e in events]


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    """The stream cut at `points` (sorted, duplicates give empty chunks), with an empty chunk at each end."""
    bounds = [0, *sorted(points), len(stream)]
    return [b"", *(stream[a:b] for a, b in itertools.pairwise(bounds)), b""]


def is_noise(raw: bytes) -> bool:
    return not raw.strip(b"\r\n")


# ------------------------------------------------------------------------------------------- strategies

EOL = st.sampled_from(["\n", "\r\n", "\r"])
TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
JSON_DATA = st.dictionaries(
    st.text(max_size=6),
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10)),
    max_size=3,
).map(lambda d: orjson.dumps(d).decode())


@st.composite
def blocks(draw: st.DrawFn) -> tuple[list[str], str | None, str | None]:
    """One event as its field lines (no line endings), with the data and event type it must decode to."""
    lines: list[str] = []
    data: list[str] = []
    event = None
    kind = draw(st.sampled_from(["json", "json", "json", "multi", "done", "comments", "bare"]))
    if kind == "comments" or draw(st.integers(0, 4)) == 0:
        lines += [":" + draw(TEXT) for _ in range(draw(st.integers(1, 2)))]
    if kind != "comments" and draw(st.booleans()):
        event = draw(st.sampled_from(["message", "delta", "error", ""]))
        lines.append(f"event: {event}" if event or draw(st.booleans()) else "event")
    if draw(st.integers(0, 5)) == 0:
        lines.append(draw(st.sampled_from(["id: 7", "id", "retry: 3000"])))
    if kind in ("json", "done", "multi"):
        if kind == "json":
            values = [draw(JSON_DATA)]
        else:
            values = ["[DONE]"] if kind == "done" else draw(st.lists(TEXT, min_size=2, max_size=3))
        for value in values:
            if value.startswith(" ") or draw(st.booleans()):
                lines.append("data: " + value)
            else:
                lines.append("data:" + value)
            data.append(value)
    elif kind == "bare":  # `data` alone is an empty value
        lines.append("data")
        data.append("")
    return lines, "\n".join(data) if data else None, event


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[str | None, str | None]]]:
    """A well-formed SSE byte stream with random line endings, and the (data, event) list it encodes."""
    out: list[str] = []
    expected: list[tuple[str | None, str | None]] = []
    prev = ""
    events = draw(st.lists(blocks(), max_size=5))

    def blank() -> str:
        # a lone CR followed by a lone LF would be one CRLF line ending, not a blank line
        return draw(st.sampled_from(["\r", "\r\n"] if prev == "\r" else ["\n", "\r\n", "\r"]))

    for i, (lines, data, event) in enumerate(events):
        for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):  # blank-line noise between events
            prev = blank()
            out.append(prev)
        for line in lines:
            prev = draw(EOL)
            out += [line, prev]
        expected.append((data, event))
        last = i == len(events) - 1
        ending = draw(st.sampled_from(["blank", "eol", "none"])) if last else "blank"
        if ending == "blank":
            prev = blank()
            out.append(prev)
        elif ending == "none":
            out.pop()
    if events and draw(st.booleans()):
        out.append(blank())  # trailing noise: flush returns it as a data-less event
    return "".join(out).encode(), expected


# ------------------------------------------------------------------------------------------- properties


@given(streams(), st.data())
def test_any_chunking_gives_the_same_events_and_bytes(
    generated: tuple[bytes, list], data: st.DataObject
) -> None:
    stream, expected = generated
    whole = decode([stream])
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    for chunks in (cut(stream, points), [stream[i : i + 1] for i in range(len(stream))]):
        events = decode(chunks)
        assert events == whole  # boundaries do not depend on the cuts, so even `raw` is identical
        assert b"".join(e.raw for e in events) == stream
    assert all(e.raw for e in whole)
    assert not any(is_noise(e.raw) for e in whole[:-1])  # noise only ever trails, from flush
    assert fields([e for e in whole if not is_noise(e.raw)]) == expected


TOKENS = st.sampled_from(
    [b"data", b"data: ", b"event:", b":", b" ", b"x", b"{}", b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xff"]
)


@given(st.lists(TOKENS, max_size=40).map(b"".join), st.data())
def test_arbitrary_bytes_keep_every_byte_whatever_the_chunking(stream: bytes, data: st.DataObject) -> None:
    whole = decode([stream])
    assert b"".join(e.raw for e in whole) == stream
    assert all(e.raw for e in whole)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    assert decode(cut(stream, points)) == whole
    assert decode([stream[i : i + 1] for i in range(len(stream))]) == whole


@given(st.one_of(TEXT, st.lists(TEXT, min_size=1, max_size=4).map("\n".join)))
def test_encode_data_round_trips(text: str) -> None:
    [event] = decode([encode_data(text)])
    assert event.data == text
    [event] = decode([encode_data(text.encode())])
    assert event.data == text


# --------------------------------------------------------------------------------------------- examples

CHAT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_openai_chat_stream() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(CHAT)
    assert decoder.pending == 0
    assert [e.done for e in events] == [False, False, False, True]
    assert events[1].json()["choices"][0]["delta"]["content"] == "Hi"
    assert events[3].raw == DONE
    assert b"".join(e.raw for e in events) == CHAT
    assert decoder.flush() == []


def test_event_split_across_chunks_waits_for_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.pending == 10
    assert decoder.feed(b":1}\n") == []
    [event] = decoder.feed(b"\ndata: [DO")
    assert event.raw == b'data: {"a":1}\n\n'
    assert event.json() == {"a": 1}
    assert decoder.pending == len(b"data: [DO")
    [done] = decoder.feed(b"NE]\n\n")
    assert done.done
    assert decoder.pending == 0


def test_crlf_split_between_cr_and_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []  # CR LF is one line ending, not a blank line
    assert decoder.feed(b"\n") == []
    [event] = decoder.feed(b"\r\n")
    assert (event.raw, event.data) == (b"data: a\r\ndata: b\r\n\r\n", "a\nb")


def test_cr_blank_line_at_chunk_end_waits_for_the_next_byte() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == []  # may still be CR CRLF
    [event] = decoder.feed(b"\ndata: b\r\r")
    assert event.raw == b"data: a\r\r\n"
    [event] = decoder.flush()
    assert (event.raw, event.data) == (b"data: b\r\r", "b")


def test_keep_alive_comment_block_has_no_data() -> None:
    [event] = SSEDecoder().feed(b": keep-alive\n\n")
    assert event.data is None
    assert not event.done
    with pytest.raises(ValueError):
        event.json()


def test_fields_event_id_retry_and_multiline_data() -> None:
    raw = b"event: delta\nid: 3\nretry: 10\ndata:x\ndata:  y\ndata\nunknown: z\n\n"
    [event] = SSEDecoder().feed(raw)
    assert (event.raw, event.data, event.event) == (raw, "x\n y\n", "delta")


def test_final_event_without_blank_line_comes_from_flush() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2") == [Event(b"data: 1\n\n", "1")]
    assert decoder.flush() == [Event(b"data: 2", "2")]
    assert decoder.flush() == []


def test_leading_noise_goes_with_the_next_event_and_trailing_noise_with_flush() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\n\r\n") == []
    assert decoder.feed(b"data: 1\n\n\n") == [Event(b"\n\r\ndata: 1\n\n", "1")]
    assert decoder.pending == 1
    assert decoder.flush() == [Event(b"\n", None)]


def test_json_on_non_json_data_raises_value_error() -> None:
    [event] = SSEDecoder().feed(b"data: not json\n\n")
    with pytest.raises(ValueError):
        event.json()


def test_over_the_limit_raises() -> None:
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=16).feed(b"data: " + b"x" * 20)  # held tail too large
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=16).feed(b"data: " + b"x" * 20 + b"\n\n")  # complete event too large
    decoder = SSEDecoder(max_event_bytes=16)
    for byte in b"data: 0123456789":
        decoder.feed(bytes([byte]))
    with pytest.raises(SSEError):
        decoder.feed(b"\n")
    assert SSEDecoder(max_event_bytes=16).feed(b"data: 12345678\n\n")[0].data == "12345678"  # exactly 16


def test_encoders_round_trip_through_the_decoder() -> None:
    assert encode_data("x") == b"data: x\n\n"
    assert encode_data(b"a\nb") == b"data: a\ndata: b\n\n"
    assert encode_json({"a": [1, "é"]}) == b'data: {"a":[1,"\xc3\xa9"]}\n\n'
    stream = encode_json({"a": [1, "é"]}) + encode_data("line 1\nline 2") + DONE
    events = decode([stream[i : i + 1] for i in range(len(stream))])
    assert events[0].json() == {"a": [1, "é"]}
    assert events[1].data == "line 1\nline 2"
    assert events[2].done
    assert b"".join(e.raw for e in events) == stream

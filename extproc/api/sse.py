"""Incremental Server-Sent-Events decoder and encoder for OpenAI and Anthropic streams.

Envoy hands over an SSE body in arbitrary chunks. `SSEDecoder.feed` returns whole events only and keeps the
incomplete tail; `flush` returns that tail at end of stream. Every fed byte lands in exactly one `Event.raw`
(or is still pending), so `b"".join(e.raw for e in events)` reproduces the stream and events no hook changed
can be forwarded byte for byte.

Framing: an event ends at a blank line (two line endings; LF, CRLF and CR in any mix). Blank-line noise
(line endings before an event's first field line) belongs to the *following* event's `raw`; noise after the
last event comes back from `flush` as an `Event` with `data=None` (like a comment-only keep-alive), so no
byte is lost. An event whose blank line ends in a CR at the very end of the held bytes is held until the
next byte shows whether a LF completes that CRLF. So event boundaries, and every `raw`, do not depend on
how the stream was cut into chunks.
Fields follow the WHATWG parsing rules; `id:` and `retry:` are kept in `raw` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.errors import SSEError

__all__ = ["DONE", "Event", "SSEDecoder", "SSEError", "encode_data", "encode_json", "encode_named"]

DONE: bytes = b"data: [DONE]\n\n"

# A blank line: a line ending (a lone CR must not be the first half of a CRLF) followed by another one.
_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_NOISE = re.compile(rb"[\r\n]*")
_LINES = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class Event:
    raw: bytes
    """The bytes of this event as received, including its blank line (if it had one) and any noise."""
    data: str | None
    """The `data:` lines joined with "\\n"; None when the block had no data field (comments only)."""
    event: str | None = None
    """The last `event:` field, if any."""

    @property
    def done(self) -> bool:
        return self.data == "[DONE]"

    def json(self) -> Any:
        """The data parsed as JSON; ValueError (orjson.JSONDecodeError) when absent or not JSON."""
        if self.data is None:
            raise ValueError("SSE event has no data field")
        return orjson.loads(self.data)


def _skip_noise(buf: bytes | bytearray, pos: int) -> int:
    m = _NOISE.match(buf, pos)
    return m.end() if m else pos


def _parse(raw: bytes) -> Event:
    data: list[str] = []
    event: str | None = None
    for line in raw.splitlines():  # bytes.splitlines splits on LF, CRLF and CR only
        if not line or line[0] == 0x3A:  # blank, or a ":" comment
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return Event(raw, "\n".join(data) if data else None, event)


class SSEDecoder:
    """Splits a chunked SSE byte stream into whole events. One decoder per response stream.

    After an `SSEError` the decoder's state is unspecified: give up on decoding that stream.
    """

    __slots__ = ("_body", "_buf", "_max", "_scan")

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._max = max_event_bytes
        self._buf = bytearray()
        self._scan = 0  # where the blank-line search resumes (bytes before it were scanned)
        self._body = False  # whether the held bytes contain more than blank-line noise

    @property
    def pending(self) -> int:
        """Bytes currently held back."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk`, in order; the incomplete tail is kept for the next call."""
        buf: bytes | bytearray
        if self._buf:
            self._buf += chunk
            buf = self._buf
        else:
            buf = chunk  # common case: nothing held, scan the chunk without copying it
        n = len(buf)
        events: list[Event] = []
        pos, scan, body = 0, self._scan, self._body
        while True:
            if not body:  # skip leading blank-line noise; it stays in this event's raw
                scan = _skip_noise(buf, scan)
                if scan == n:
                    break
                body = True
            m = _END.search(buf, scan)
            if m is None:
                scan = max(scan, n - 3)  # a blank line found later starts at most 3 bytes before the end
                break
            end = m.end()
            if end == n and buf[end - 1] == 0x0D:  # a CR last: wait to see whether a LF follows
                scan = m.start()
                break
            if end - pos > self._max:
                raise SSEError(f"SSE event of {end - pos} bytes exceeds the limit of {self._max}")
            events.append(_parse(bytes(buf[pos:end])))
            pos = scan = end
            body = False
        if n - pos > self._max:
            raise SSEError(f"incomplete SSE event of {n - pos} bytes exceeds the limit of {self._max}")
        if buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        self._scan, self._body = scan - pos, body
        return events

    def flush(self) -> list[Event]:
        """End of stream: the held tail as one final event, if any bytes are held.

        That is an event that lacked its blank line, or trailing blank-line noise (then `data` is None).
        """
        raw = bytes(self._buf)
        self._buf.clear()
        self._scan, self._body = 0, False
        return [_parse(raw)] if raw else []


def encode_data(data: bytes | str) -> bytes:
    """One SSE event carrying `data`; each line of multi-line data gets its own `data:` line."""
    payload = data.encode() if isinstance(data, str) else data
    if b"\n" not in payload and b"\r" not in payload:
        return b"data: " + payload + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in _LINES.split(payload)) + b"\n"


def encode_json(obj: Any) -> bytes:
    """One SSE event carrying `obj` as compact JSON."""
    return encode_data(orjson.dumps(obj))


def encode_named(name: str, obj: Any) -> bytes:
    """One named SSE event (`event: name`) carrying `obj` as compact JSON: the framing of the Responses and
    Messages streams, whose SDKs read the event name."""
    return b"event: " + name.encode() + b"\n" + encode_data(orjson.dumps(obj))

"""Streaming responses: SSE events through the per-chunk and iterator hooks.

Two shapes, picked per request at the response headers:
- `StreamRewriter` (Envoy STREAMED mode): per-chunk hooks only. Each body message is answered at once
  with its complete events, changed or not; a partial event is held back until its end arrives.
- `StreamPump` (FULL_DUPLEX_STREAMED mode): iterator hooks, which may hold back, drop, merge or add
  chunks. Upstream events feed a queue; a task runs the hooks' generators and sends what they yield
  whenever they yield it, then the family's end of stream (`data: [DONE]` for OpenAI's).
Events no hook changed are forwarded byte for byte; only changed chunks are re-encoded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from extproc.api.family import ApiFamily
from extproc.api.sse import Event, SSEDecoder
from extproc.api.views import unwrap, wrap
from extproc.decisions import CONTINUE, DEFERRED, UPSTREAM_STATUS, Continue, Deferred, Outbox
from extproc.errors import HookFailed, SSEError, describe
from extproc.hooks.chain import HookChain
from extproc.hooks.hook import cancelled_by_caller
from extproc.request.endings import Ending
from extproc.types import JSONDict

log = logging.getLogger("extproc.streaming")
DROP = Continue(body=b"")  # what is left of an upstream stream after its error event


def error_event(family: ApiFamily, exc: BaseException) -> bytes:
    """The bytes that end a started stream with the error `exc` stands for, in the family's shape."""
    return family.error_event(describe(exc))


class StreamState:
    """What a stream's hooks share: the accumulated text, the usage seen, the chunk hooks' caller."""

    __slots__ = ("chain", "family", "hooks", "model", "rename", "text", "usage", "user")

    def __init__(
        self,
        chain: HookChain,
        family: ApiFamily,
        user: Any,
        rename: str | None = None,
        request_data: JSONDict | None = None,
    ) -> None:
        self.chain = chain
        # the per-chunk hooks this stream runs (a guardrail's only when it runs for this request)
        self.hooks = chain.streaming_hooks(request_data if request_data is not None else {})
        self.family = family
        self.user = user
        self.rename = rename  # the public model name chunks must show (routing renamed it upstream)
        self.text = ""
        self.usage: dict[str, int] = {}
        self.model: Any = None

    def observe(self, chunk: JSONDict) -> bool:
        """Take in a chunk's text, usage and model; True when it had to be renamed."""
        text = self.family.chunk_text(chunk)
        if text:
            self.text += text
        usage = self.family.usage(chunk)
        if usage:  # a family may report usage in parts (Messages: input first, output at the end)
            self.usage.update(usage)
            if "total_tokens" not in usage and "prompt_tokens" in self.usage and "completion_tokens" in usage:
                self.usage["total_tokens"] = self.usage["prompt_tokens"] + usage["completion_tokens"]
        # The model is the chunk's own (chat), or its message's or response's (Messages' `message_start`,
        # Responses' `response.*` events).
        inner = chunk.get("message") or chunk.get("response")
        holder = chunk if "model" in chunk or not isinstance(inner, dict) else inner
        if self.model is None:
            self.model = holder.get("model")
        if self.rename is not None and holder.get("model") not in (None, self.rename):
            holder["model"] = self.rename
            return True
        return False

    async def per_chunk(self, chunk: JSONDict) -> bool:
        """Run the per-chunk hooks on a chunk (already observed); True when they changed it."""
        return await self.chain.post_call_streaming(
            self.user, self.text, chunk, self.family.set_chunk_text, self.hooks
        )

    def assembled(self) -> Any:
        """The whole stream as one answer (a view), for the success logging event."""
        return wrap(self.family.assembled(self.model, self.text, self.usage))


def _terminated(raw: bytes) -> bytes:
    """An event's bytes with its blank line: the upstream's last event may lack it, ours never follows."""
    return raw if raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")) else raw.rstrip(b"\r\n") + b"\n\n"


def _bounded(event: bytes, limit: int) -> bytes:
    """An event a hook made, if it is no larger than an upstream event may be: a huge one would exceed
    the gRPC message and Envoy's buffer, and the client would get an empty error instead of an event."""
    if len(event) > limit:
        raise SSEError(
            f"a streaming hook produced an event of {len(event)} bytes, over the {limit}-byte limit"
        )
    return event


def _chunk_of(event: Event) -> JSONDict | None:
    if event.data is None or event.done:
        return None
    try:
        chunk = event.json()
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None


class StreamRewriter:
    """STREAMED mode: answer each body message with its complete, possibly changed, events. A hook that
    fails or bytes that are not SSE end the stream with an error event; the rest of the upstream's
    stream is then dropped."""

    __slots__ = ("_cut", "_ending", "_max_event", "_status", "decoder", "rewrite", "state")

    def __init__(self, state: StreamState, max_event_bytes: int, ending: Ending, status: int) -> None:
        self.state = state
        self.decoder = SSEDecoder(max_event_bytes)
        self._max_event = max_event_bytes
        self.rewrite = bool(state.hooks)
        self._ending = ending
        self._status = status
        self._cut = False

    async def answer(self, body: bytes, end_of_stream: bool) -> Continue:
        """The answer to one body message; at the end, usage and the upstream status go to Envoy."""
        if self._cut:
            return DROP
        try:
            out = await self.feed(body, end_of_stream)
        except (HookFailed, SSEError) as exc:
            cause = exc.cause if isinstance(exc, HookFailed) else exc
            log.warning("stream ended early: %r", cause)
            self._ending.stream_ended(None, cause)
            self._cut = True
            return Continue(body=error_event(self.state.family, cause))
        metadata = None
        if end_of_stream:
            metadata = {UPSTREAM_STATUS: self._status, **self.state.usage}
            self._ending.stream_ended(self.state.assembled())
        if out is None:
            return Continue(metadata=metadata) if metadata else CONTINUE
        return Continue(body=out, metadata=metadata)

    async def feed(self, body: bytes, end_of_stream: bool) -> bytes | None:
        """The bytes to send for this message, or None when they are exactly the bytes received."""
        events = self.decoder.feed(body)
        if end_of_stream:
            events += self.decoder.flush()
        parts = []
        for event in events:
            chunk = _chunk_of(event)
            if chunk is None:
                parts.append(event.raw)
                continue
            renamed = self.state.observe(chunk)
            if (self.rewrite and await self.state.per_chunk(chunk)) or renamed:
                parts.append(_bounded(self.state.family.encode_event(chunk, event.event), self._max_event))
            else:
                parts.append(event.raw)
        out = b"".join(parts)
        return None if out == body else out


class StreamPump:
    """FULL_DUPLEX mode: the iterator hooks' generators, fed from upstream events, sending on their own."""

    __slots__ = (
        "_bytes_in",
        "_bytes_out",
        "_decoder",
        "_done",
        "_ending",
        "_frames",
        "_max_held",
        "_originals",
        "_outbox",
        "_queue",
        "_rewrite",
        "_task",
        "state",
    )

    def __init__(
        self,
        state: StreamState,
        request_data: JSONDict,
        outbox: Outbox,
        max_held_bytes: int,
        ending: Ending,
    ) -> None:
        self.state = state
        self._ending = ending
        self._outbox = outbox
        self._max_held = max_held_bytes
        self._decoder = SSEDecoder(max_held_bytes)
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._originals: dict[int, tuple[bytes, JSONDict, str | None]] = {}
        self._bytes_in = self._bytes_out = 0
        self._done = False
        self._rewrite = bool(state.hooks)
        self._frames = state.family.hook_frames
        iterator = state.chain.streaming_iterator(state.user, self._source(), request_data)
        self._task = asyncio.get_running_loop().create_task(self._run(iterator))

    async def answer(self, body: bytes, end_of_stream: bool) -> Deferred:
        """No answer now: what the hooks yield is sent on its own."""
        await self.feed(body, end_of_stream)
        return DEFERRED

    async def feed(self, body: bytes, end_of_stream: bool) -> None:
        if self._done:
            return
        self._bytes_in += len(body)
        try:
            events = self._decoder.feed(body)
            if end_of_stream:
                events += self._decoder.flush()
        except SSEError as exc:
            await self._abort(exc)
            return
        for event in events:
            self._queue.put_nowait(event)
        if end_of_stream:
            self._queue.put_nowait(None)
        elif self._bytes_in - self._bytes_out > self._max_held:
            await self._abort(SSEError(f"the streaming hooks hold back more than {self._max_held} bytes"))

    async def _source(self) -> AsyncIterator[Any]:
        while (event := await self._queue.get()) is not None:
            chunk = _chunk_of(event)
            if chunk is None:
                if not event.done:  # comments and unknown events go on as they came; [DONE] is ours to send
                    await self._send(_terminated(event.raw))
                continue
            if self._frames:  # the hooks get the frame's bytes (Messages), after it is observed
                self.state.observe(chunk)
                yield _terminated(event.raw)
                continue
            original = event.json()  # before any rename, so a renamed chunk is re-encoded
            self.state.observe(chunk)
            self._originals[id(chunk)] = (event.raw, original, event.event)
            yield wrap(chunk)

    async def _run(self, iterator: AsyncIterator[Any]) -> None:
        try:
            async for item in iterator:
                if isinstance(item, bytes | bytearray) and self._frames:  # what a hook yields goes out
                    await self._send(bytes(item))
                    continue
                chunk = unwrap(item)
                if not isinstance(chunk, dict):
                    log.warning(
                        "a streaming iterator hook yielded a %s, not a chunk: dropped", type(item).__name__
                    )
                    continue
                original = self._originals.pop(id(chunk), None)
                changed = self._rewrite and await self.state.per_chunk(chunk)
                if original is not None and not changed and chunk == original[1]:
                    await self._send(_terminated(original[0]))
                else:
                    name = original[2] if original is not None else None
                    await self._send(self.state.family.encode_event(chunk, name))
            await self._finish(self.state.family.end_of_stream())
        except HookFailed as failure:
            log.warning("stream ended by %s: %r", failure.label, failure.cause)
            await self._finish(error_event(self.state.family, failure.cause), failure.cause)
        except asyncio.CancelledError as exc:
            if cancelled_by_caller():  # the stream ended (close()): nobody is left to answer
                raise
            log.warning("stream ended by a streaming iterator hook: %r", exc)
            await self._finish(error_event(self.state.family, exc), exc)
        except BaseException as exc:  # whatever an iterator hook raises ends the stream, never the sidecar
            log.warning("stream ended by a streaming iterator hook: %r", exc)
            await self._finish(error_event(self.state.family, exc), exc)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send(self, data: bytes) -> None:
        _bounded(data, self._max_held)
        self._bytes_out += len(data)
        await self._outbox.stream(data, False)

    async def _finish(self, tail: bytes, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        usage = self.state.usage
        await self._outbox.stream(tail, True, {UPSTREAM_STATUS: 200, **usage} if usage else None)
        self._ending.stream_ended(self.state.assembled() if error is None else None, error)

    async def _abort(self, exc: BaseException) -> None:
        log.warning("stream cut: %s", exc)
        self._task.cancel()
        await self._finish(error_event(self.state.family, exc), exc)

    async def finished(self) -> None:
        """Return once the hooks' generators are done and the last event is sent (never cancels them)."""
        await asyncio.wait([self._task])

    def cancel(self) -> None:
        """The stream ended: stop the hooks' generators (their `finally` blocks run). A pump that is
        sending its last event is left to finish: cancelling a write in flight leaks grpc.aio's batch."""
        if self._done:
            return
        self._done = True
        if not self._task.done():
            self._task.cancel()

"""A scripted upstream for the hostile corpus: the project's mock upstream, plus hostile answers.

A request carrying `x-hostile-answer: <name>` gets the answer `ANSWERS[name]`, byte for byte: plain text
where JSON is expected, truncated or malformed JSON, SSE streams that are malformed, lack `[DONE]` or
their last blank line, or are cut mid-event at the TCP level. Every other request is answered by the
mock upstream itself (`extproc.devtools.mock_upstream`), and every request, scripted or not, is recorded for
`/__mock/last` and `/__mock/requests`, so the `e2e_stack` helpers work unchanged.

Run as `python -m tests.hostile.upstream --port 0`; it prints `hostile-upstream listening on URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from extproc.devtools import mock_upstream

HEADER = "x-hostile-answer"
READY = "hostile-upstream listening on "
RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Answer:
    """What the upstream sends: a status, a content type, body writes in order, maybe a cut connection."""

    status: int
    content_type: str
    chunks: tuple[bytes, ...]
    abort: bool = False  # drop the connection after the chunks: no terminating chunk, no [DONE]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def _chunk(content: str | None = None, finish: str | None = None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    event = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


DONE = b"data: [DONE]\n\n"
_HELLO = _chunk("hel")
_WORLD = _chunk("lo")
_STOP = _chunk(None, "stop")
_HUGE = b"1" + b"0" * 400  # an integer no float holds
_DEEP = b'{"n":123456789012345678901234567890,"x":' + b"[" * 5000 + b"]" * 5000 + b"}"

ANSWERS: dict[str, Answer] = {
    # Non-JSON or broken JSON answers where JSON is expected.
    "text-200": Answer(200, "text/plain", (b"plain text, not JSON \xff\n",)),
    "text-500": Answer(500, "text/plain", (b"upstream exploded\n",)),
    "html-502": Answer(502, "text/html", (b"<html><body>bad gateway</body></html>",)),
    "json-truncated-200": Answer(200, "application/json", (b'{"id":"x","choices":[{"message":',)),
    "json-garbage-500": Answer(500, "application/json", (b"}{ not json",)),
    "json-array-200": Answer(200, "application/json", (b"[1,2,3]",)),
    "json-nan-200": Answer(200, "application/json", (b'{"id":"x","score":NaN,"choices":[]}',)),
    "json-bigint-200": Answer(
        200, "application/json", (b'{"id":"x","seed":123456789012345678901234567890,"choices":[]}',)
    ),
    "json-deep-200": Answer(200, "application/json", (_DEEP,)),
    "json-deep-500": Answer(500, "application/json", (_DEEP,)),
    "json-huge-usage-200": Answer(
        200, "application/json", (b'{"id":"x","choices":[],"usage":{"total_tokens":' + _HUGE + b"}}",)
    ),
    "json-bigint-400": Answer(
        400, "application/json", (b'{"detail":"too many","limit":123456789012345678901234567890}',)
    ),
    "empty-200": Answer(200, "application/json", (b"",)),
    "empty-500": Answer(500, "application/json", (b"",)),
    # SSE answers.
    "sse-ok": Answer(200, "text/event-stream", (_HELLO, _WORLD, _STOP, DONE)),
    "sse-malformed": Answer(
        200,
        "text/event-stream",
        (
            _HELLO,
            b"data: {not json\n\n",
            b": a comment\n\n",
            b"event: weird\ndata: [1,2]\n\n",
            b"data: \xff\xfe binary\n\n",
            b"no-colon-line\n\n",
            _WORLD,
            DONE,
        ),
    ),
    "sse-no-done": Answer(200, "text/event-stream", (_HELLO, _WORLD, _STOP)),
    "sse-no-final-blank-line": Answer(200, "text/event-stream", (_HELLO, _WORLD, _STOP.rstrip(b"\n"))),
    "sse-split-mid-event": Answer(
        200, "text/event-stream", (_HELLO[:7], _HELLO[7:30], _HELLO[30:] + _WORLD[:3], _WORLD[3:], DONE)
    ),
    "sse-crlf-and-cr": Answer(
        200,
        "text/event-stream",
        (_HELLO.replace(b"\n\n", b"\r\n\r\n"), _WORLD.replace(b"\n\n", b"\r\r"), DONE),
    ),
    "sse-error-event": Answer(
        200,
        "text/event-stream",
        (_HELLO, b'data: {"error":{"message":"overloaded","type":"server_error","code":"500"}}\n\n'),
    ),
    "sse-huge-event": Answer(200, "text/event-stream", (_HELLO, _chunk("x" * 200_000), DONE)),
    "sse-truncated-mid-event": Answer(200, "text/event-stream", (_HELLO, _WORLD[:20]), abort=True),
    "sse-truncated-between-events": Answer(200, "text/event-stream", (_HELLO, _WORLD), abort=True),
    "sse-status-500": Answer(500, "text/event-stream", (_HELLO, DONE)),
}


@web.middleware
async def hostile(request: web.Request, handler: RequestHandler) -> web.StreamResponse:
    name = request.headers.get(HEADER)
    if name is None or request.path.startswith("/__mock/"):
        return await handler(request)
    await mock_upstream._record(request)
    answer = ANSWERS.get(name)
    if answer is None:
        return web.Response(status=599, text=f"unknown hostile answer {name!r}")
    if not answer.abort and len(answer.chunks) == 1:
        return web.Response(
            status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
        )
    response = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
    await response.prepare(request)
    for chunk in answer.chunks:
        await response.write(chunk)
        await asyncio.sleep(0.005)  # separate writes, so Envoy sees separate body messages
    if answer.abort:
        assert request.transport is not None
        request.transport.abort()
        return response
    await response.write_eof()
    return response


def build_app() -> web.Application:
    app = mock_upstream.build_app()
    app.middlewares.append(hostile)
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY}http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()

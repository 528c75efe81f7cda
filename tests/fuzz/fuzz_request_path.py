"""Fuzz the request path: Envoy's ext_proc messages, as Envoy sends them, through the real transport's
message decoding and encoding (`transport.message_of`, `transport.encode`), `Session.handle`, hooks and
`StreamOutbox`.

Each example is one HTTP request: an arbitrary `:path`, method and headers (raw bytes, so not always
UTF-8), a request body (arbitrary bytes, mutated valid JSON or multipart), then, if the request goes
upstream, a response status, headers and body (arbitrary bytes, mutated JSON, or an SSE stream cut into
arbitrary chunks), sent in the body mode the sidecar asked for, and sometimes a disconnect half-way.
The hooks (pre-call, success, failure, streaming iterator) do what headers ask: rewrite, refuse, raise.

Properties, for every example:
- no exception reaches `Session.handle`'s last resort (a generic 500 with a traceback in the log; here
  it is a failure) and none escapes the encoding;
- every immediate response is a valid OpenAI error envelope (`code` == the status) or, with status 200,
  a completion (JSON, or an SSE stream ending in `[DONE]`), with its content type;
- a body mutation comes with a matching `content-length`;
- a full-duplex stream always ends (a last streamed message with `end_of_stream`), unless an immediate
  response ended the request first;
- after the request's stream is closed, no asyncio task is left running.

`python -m tests.fuzz.fuzz_request_path --seconds 60` (what `make fuzz` runs) fuzzes in batches until the
time is up and exits non-zero on the first failure (Hypothesis prints the shrunk example);
`tests/fuzz/test_fuzz_smoke.py` runs a few hundred derandomized examples inside `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
import tempfile
import textwrap
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from extproc.api.openai import INTERNAL_ERROR
from extproc.decisions import BodyMode, Continue
from extproc.envoy.transport import StreamOutbox, encode, message_of
from extproc.request import pipeline as pipeline_module
from extproc.request.pipeline import Pipeline
from extproc.request.session import Session
from extproc.types import Phase as EnvoyPhase

HOOKS = """
from extproc import CustomLogger, HTTPException


def action(data, name):
    headers = (data.get("metadata") or {}).get("headers") or {}
    return headers.get(name, "none")


class Base(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        what = action(data, "x-fuzz-pre")
        if what == "rewrite":
            data["model"] = "fuzz-model"
        elif what == "grow":
            data["padding"] = "p" * 300
        elif what == "refuse":
            return "refused by the fuzz hook"
        elif what == "http":
            raise HTTPException(status_code=451, detail={"error": "unavailable for legal reasons"})
        elif what == "crash":
            raise ValueError("the pre-call hook crashed")
        elif what == "replace":
            return {"model": "replaced", "messages": [], "prompt": "p", "input": "i"}
        return None

    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        what = action(data, "x-fuzz-success")
        if what == "edit":
            response.choices[0].message.content += "!"
        elif what == "replace":
            return {"id": "replaced", "object": "chat.completion", "choices": []}
        elif what == "raise":
            raise HTTPException(status_code=402, detail="pay first")
        return None

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        what = action(request_data, "x-fuzz-failure")
        if what == "replace":
            raise HTTPException(status_code=418, detail="a teapot")
        if what == "crash":
            raise RuntimeError("the failure hook crashed")
        return None


class Fuzz(Base):
    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        what = action(request_data, "x-fuzz-stream")
        count = 0
        async for chunk in response:
            count += 1
            if what == "drop" and count % 2:
                continue
            if what == "upper" and chunk.choices and chunk.choices[0].delta is not None:
                chunk.choices[0].delta.content = str(chunk.choices[0].delta.content).upper()
            if what == "raise" and count == 2:
                raise HTTPException(status_code=400, detail="the stream hook refused")
            yield chunk
            if what == "stop":
                return


class Chunky(Base):
    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        if "xxxxxxxx" in response:
            raise HTTPException(status_code=400, detail="the chunk hook refused")
        if response.endswith("lo"):
            return response.upper()
        if response == "hel":
            return {"id": "replaced", "object": "chat.completion.chunk", "choices": []}
        return None


handler = Fuzz()  # iterator hooks: FULL_DUPLEX_STREAMED
chunky = Chunky()  # per-chunk hooks only: STREAMED
"""
CONFIG = """
litellm_settings:
  callbacks: fuzz_hooks.{handler}
extproc:
  max_request_bytes: 4096
  max_json_depth: 16
  max_stream_hold_bytes: 1024
  hook_timeout_ms: 2000
"""
PHASE_TIMEOUT_S = 2.0
SETTLE_TIMEOUT_S = 0.5  # background work of a request (logging events, endings) takes milliseconds

# ---- what a request looks like ----
PATHS = [
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/moderations",
    "/v1/audio/transcriptions",
    "/v1/chat/completions/",
    "/v1/chat/completions?x=%ff",
    "/v1/models",
    "/",
]
BOUNDARY = b"fuzzb"
VALID_BODIES = [
    b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"user":"u"}',
    b'{"model":"m","prompt":"say","max_tokens":5}',
    b'{"model":"m","prompt":"say","stream":true}',
    b'{"model":"m","input":["a","b"]}',
    b'{"prompt":"a cat","n":1}',
    b'{"input":"text"}',
    b'{"model":"m","seed":123456789012345678901234567890,"messages":[]}',
    b'{"model":"m","metadata":{"k":"v"},"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}',
    b"--fuzzb\r\n"
    b'Content-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    b"--fuzzb\r\n"
    b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    b"RIFF\x00\xff\r\n--fuzzb--\r\n",
]
# The bodies each endpoint accepts (by path suffix): most examples start from one of these.
SEEDS = {
    "/chat/completions": [VALID_BODIES[i] for i in (0, 1, 1, 7, 8)],
    "/completions": VALID_BODIES[2:4],
    "/embeddings": VALID_BODIES[4:5],
    "/images/generations": VALID_BODIES[5:6],
    "/moderations": VALID_BODIES[6:7],
    "/audio/transcriptions": VALID_BODIES[9:10],
}


def seeds_for(path: bytes) -> list[bytes]:
    route = path.decode("latin-1").partition("?")[0].removeprefix("/v1").rstrip("/")
    return SEEDS.get(route, VALID_BODIES)


TOKENS = [
    b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b"NaN", b"Infinity", b"-0", b"1e400", b"null", b"true",
    b'"\\ud800"', b"12345678901234567890123", b"\xff", b"\xef\xbb\xbf", b"\x00", b"\r\n", b"--fuzzb",
    b"--fuzzb--", b'"model":', b'"messages":', b'"stream":true', b'"user":5', b"[" * 20, b"]" * 20,
]  # fmt: skip
CONTENT_TYPES = [
    b"application/json",
    b"application/json; charset=utf-8",
    b"multipart/form-data; boundary=fuzzb",
    b"multipart/form-data",
    b"text/plain",
    b"",
    b"\xff\xfe",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid body with a few byte-level mutations: cuts, flips, inserted tokens, duplicated slices."""
    body = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, len(body)))
        if kind == "cut":
            del body[at:]
        elif kind == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            body[at:at] = draw(st.sampled_from(TOKENS))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 8))]
        elif kind == "duplicate":
            body[at:at] = body[at : at + draw(st.integers(1, 40))]
    return bytes(body)


def sse_event(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


SSE_PIECES = [
    sse_event(chat_chunk("hel")),
    sse_event(chat_chunk("lo")),
    sse_event(chat_chunk("", "stop")),
    sse_event(
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    ),
    sse_event({"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "t"}]}),
    b": keep-alive\n\n",
    b"data: {not json\n\n",
    b"event: ping\ndata: [1]\n\n",
    b"data: [DONE]\n\n",
    b"\r\n",
    b"data: " + b"x" * 1100 + b"\n\n",  # one event over max_stream_hold_bytes
]
RESPONSES = [
    orjson.dumps(
        {
            "id": "r",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ),
    b'{"error":{"message":"upstream says no","type":"invalid_request_error","param":null,"code":"400"}}',
    b'{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":1,"total_tokens":1}}',
    b'{"id":"r","choices":[],"usage":{"total_tokens":123456789012345678901234567890}}',
    b"plain text",
    b"",
]


@dataclass
class Example:
    path: bytes
    method: bytes
    headers: list[tuple[str, bytes]]
    body: bytes
    headers_end: bool  # the request has no body: its headers end the stream
    status: bytes
    response_headers: list[tuple[str, bytes]]
    response_body: bytes
    cuts: list[int]  # where Envoy splits the response body into messages (streamed modes)
    disconnect_after: int | None  # stop sending after this many messages (the client left)
    pipeline: int = 0  # 0: iterator hooks (FULL_DUPLEX_STREAMED), 1: per-chunk hooks (STREAMED)


HOOK_HEADERS = {
    "x-fuzz-pre": ["none", "rewrite", "grow", "refuse", "http", "crash", "replace"],
    "x-fuzz-success": ["none", "edit", "replace", "raise"],
    "x-fuzz-failure": ["none", "none", "none", "replace", "crash"],
    "x-fuzz-stream": ["none", "drop", "upper", "raise", "stop"],
}


def often(
    draw: st.DrawFn, likely: st.SearchStrategy[Any], other: st.SearchStrategy[Any], tenths: int = 8
) -> Any:
    """`likely` in `tenths` out of ten draws, else `other` (so most examples get past the first checks)."""
    return draw(likely) if draw(st.integers(0, 9)) < tenths else draw(other)


@st.composite
def examples(draw: st.DrawFn) -> Example:
    path = often(
        draw, st.sampled_from(PATHS[:7]), st.sampled_from(PATHS).map(str.encode) | st.binary(max_size=40), 9
    )
    path = path.encode() if isinstance(path, str) else path
    audio = path.startswith(b"/v1/audio")
    method = often(draw, st.just(b"POST"), st.sampled_from([b"GET", b"PUT", b"", b"post"]), 9)
    headers: list[tuple[str, bytes]] = [("x-request-id", b"fuzz")]
    expected_type = CONTENT_TYPES[2] if audio else CONTENT_TYPES[0]
    content_type = often(
        draw, st.just(expected_type), st.sampled_from(CONTENT_TYPES) | st.binary(max_size=20), 9
    )
    if content_type:
        headers.append(("content-type", content_type))
    for name, values in HOOK_HEADERS.items():
        headers.append((name, draw(st.sampled_from(values)).encode()))
    extra = st.sampled_from(["content-encoding", "content-length", "authorization", "x-api-key", "x-other"])
    values = st.sampled_from([b"gzip", b"identity", b"99999", b"7", b"Bearer sk-1"]) | st.binary(max_size=12)
    headers.extend(
        draw(st.lists(st.tuples(extra, values), max_size=2)) if draw(st.integers(0, 4)) == 0 else []
    )
    seeds = seeds_for(path)
    body = often(
        draw,
        st.sampled_from(seeds) | mutated(seeds),
        st.binary(max_size=300)
        | mutated(VALID_BODIES)
        | st.builds(lambda n: b'{"model":"m","messages":' + b"[" * n + b"]" * n + b"}", st.integers(0, 40))
        | st.builds(
            lambda n: b'{"model":"m","x":"' + b"a" * n + b'","messages":[]}', st.integers(3900, 4200)
        ),
    )
    headers_end = not body and draw(st.booleans())
    status = often(
        draw,
        st.sampled_from([b"200", b"200", b"400", b"500"]),
        st.sampled_from([b"201", b"204", b"429", b"503", b"", b"abc", b"99", b"600"]),
    )
    response_type = draw(
        st.sampled_from([b"application/json", b"text/event-stream", b"text/event-stream", b"text/plain", b""])
    )
    response_headers = [("content-type", response_type)] if response_type else []
    if response_type == b"text/event-stream":
        pieces = draw(st.lists(st.sampled_from(SSE_PIECES), max_size=8))
        response_body = b"".join(pieces)
        if draw(st.integers(0, 3)) == 0:
            response_body = response_body[: draw(st.integers(0, len(response_body)))]  # cut mid-event
    else:
        response_body = draw(st.sampled_from(RESPONSES) | mutated(RESPONSES) | st.binary(max_size=200))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(response_body)), max_size=6))))
    disconnect_after = often(draw, st.none(), st.integers(1, 6))
    pipeline = draw(st.integers(0, 1))
    return Example(
        path,
        method,
        headers,
        body,
        headers_end,
        status,
        response_headers,
        response_body,
        cuts,
        disconnect_after,
        pipeline,
    )


# ---- Envoy's messages ----
def header_map(values: list[tuple[str, bytes]]) -> Any:
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in values])


def request_headers(ex: Example) -> Any:
    values = [
        (":path", ex.path),
        (":method", ex.method),
        (":scheme", b"http"),
        (":authority", b"fuzz"),
        *ex.headers,
    ]
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map(values), end_of_stream=ex.headers_end)
    )


def response_headers(ex: Example, end: bool) -> Any:
    values = [(":status", ex.status), *ex.response_headers]
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=header_map(values), end_of_stream=end)
    )


def body_message(phase: str, body: bytes, end: bool) -> Any:
    return pb.ProcessingRequest(**{phase: pb.HttpBody(body=body, end_of_stream=end)})


class RecordingContext:
    """The gRPC servicer context `StreamOutbox` writes to: keeps what the sidecar sent on its own."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def write(self, message: Any) -> None:
        self.sent.append(message)


class Failure(AssertionError):
    pass


@dataclass
class Stats:
    examples: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


def check_immediate(response: Any) -> str:
    immediate = response.immediate_response
    status = immediate.status.code
    headers = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    content_type = headers.get("content-type", "")
    body = immediate.body
    if status >= 400:
        if content_type != "application/json":
            raise Failure(f"error {status} with content-type {content_type!r}")
        document = orjson.loads(body)
        error = document["error"]
        if set(document) != {"error"} or not {"message", "type", "param", "code"} <= set(error):
            raise Failure(f"not an envelope: {body[:300]!r}")
        if error["code"] != str(status) or not isinstance(error["message"], str):
            raise Failure(f"bad envelope for {status}: {body[:300]!r}")
        return f"refused {status}"
    if status != 200:
        raise Failure(f"immediate response with status {status}: {body[:300]!r}")
    if content_type == "text/event-stream":
        events = [e for e in body.split(b"\n\n") if e]
        if events[-1] != b"data: [DONE]" or any(
            not isinstance(orjson.loads(e[6:]), dict) for e in events[:-1]
        ):
            raise Failure(f"bad refusal stream: {body[:300]!r}")
    elif content_type == "application/json":
        if orjson.loads(body).get("object") not in ("chat.completion", "text_completion"):
            raise Failure(f"a 200 that is not a completion: {body[:300]!r}")
    else:
        raise Failure(f"a 200 with content-type {content_type!r}")
    return "refusal 200"


def check_continue(phase: str, decision: Continue) -> None:
    if decision.body is not None and phase in ("request_body", "response_body"):
        lengths = [v for k, v in decision.set_headers if k == "content-length"]
        if lengths and lengths != [str(len(decision.body))]:
            raise Failure(f"{phase}: content-length {lengths} for a body of {len(decision.body)} bytes")


class Fuzzer:
    """One pipeline and one event loop for every example (as one sidecar process serves many requests)."""

    def __init__(self, folder: Path) -> None:
        (folder / "fuzz_hooks.py").write_text(textwrap.dedent(HOOKS))
        self.loop = asyncio.new_event_loop()
        self.pipelines: list[Pipeline] = []
        for handler in ("handler", "chunky"):
            config = folder / f"{handler}.yaml"
            config.write_text(textwrap.dedent(CONFIG.format(handler=handler)))
            self.pipelines.append(self.loop.run_until_complete(self._load(config)))
        self.stats = Stats()

    @staticmethod
    async def _load(path: Path) -> Pipeline:
        return pipeline_module.load(path)

    def close(self) -> None:
        self.loop.run_until_complete(self._cancel_all())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @staticmethod
    async def _cancel_all() -> None:
        """After a failure, work of the failing example may still be pending: end it before the loop."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def run(self, ex: Example) -> None:
        self.stats.examples += 1
        outcome = self.loop.run_until_complete(self._run(ex))  # any exception is a failure
        self.stats.outcomes[outcome] += 1

    async def _settle(self) -> None:
        """Let background work (logging events, endings) finish; then nothing may be left running."""
        current = asyncio.current_task()
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while pending := [t for t in asyncio.all_tasks() if t is not current]:
            if time.monotonic() > deadline:
                for task in pending:  # so the next examples (and shrinking) start clean
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise Failure(f"tasks left running after the request: {pending}")
            await asyncio.sleep(0.001)

    async def _run(self, ex: Example) -> str:
        context = RecordingContext()
        outbox = StreamOutbox(context)
        session = Session(self.pipelines[ex.pipeline], outbox)
        try:
            outcome = await self._exchange(ex, session, outbox, context)
        finally:
            session.close()
        await self._settle()
        for message in context.sent:  # pushes and streamed bodies: immediate ones must be well-formed
            if message.HasField("immediate_response"):
                check_immediate(message)
        return outcome

    async def _answer(self, session: Session, phase: str, request: Any) -> tuple[Any, Any]:
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            phase_name = EnvoyPhase(phase)
            message = message_of(request, phase_name, session.metadata_namespaces)
            decision, _ = await session.handle(phase_name, message)
        if decision is INTERNAL_ERROR:
            raise Failure(f"an unexpected exception in phase {phase} (its traceback is in the log)")
        if isinstance(decision, Continue):
            check_continue(phase, decision)
        return decision, encode(phase, decision)

    async def _exchange(
        self, ex: Example, session: Session, outbox: StreamOutbox, context: RecordingContext
    ) -> str:
        """Envoy's side of one stream: each phase the sidecar's answers ask for, until the end or a disconnect."""
        budget = ex.disconnect_after if ex.disconnect_after is not None else 1 << 30

        async def send(phase: str, request: Any) -> tuple[Any, Any] | None:
            nonlocal budget
            if budget <= 0 or outbox.closed:
                return None  # the client left, or an immediate response was pushed: Envoy closes the stream
            budget -= 1
            return await self._answer(session, phase, request)

        answer = await send("request_headers", request_headers(ex))
        if answer is None:
            return "disconnected"
        decision, response = answer
        if response.HasField("immediate_response"):
            return check_immediate(response)
        mode = decision.mode if isinstance(decision, Continue) else None
        if mode is not None and mode.request_body is BodyMode.NONE and not mode.response_headers:
            return "passed through"
        if not ex.headers_end:
            answer = await send("request_body", body_message("request_body", ex.body, True))
            if answer is None:
                return "disconnected"
            decision, response = answer
            if response.HasField("immediate_response"):
                return check_immediate(response)
        if not session.pipeline.request_mode.response_headers:
            return "forwarded"
        no_body = not ex.response_body
        answer = await send("response_headers", response_headers(ex, no_body))
        if answer is None:
            return "disconnected"
        decision, response = answer
        if response.HasField("immediate_response"):
            return check_immediate(response)
        body_mode = (
            decision.mode.response_body if isinstance(decision, Continue) and decision.mode else BodyMode.NONE
        )
        if no_body or body_mode is BodyMode.NONE:
            return "answered"
        chunks = [ex.response_body] if body_mode is BodyMode.BUFFERED else split(ex.response_body, ex.cuts)
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            answer = await send("response_body", body_message("response_body", chunk, last))
            if answer is None:
                return "disconnected"
            decision, response = answer
            if response is not None and response.HasField("immediate_response"):
                return check_immediate(response)
            if body_mode is not BodyMode.FULL_DUPLEX_STREAMED and not isinstance(decision, Continue):
                raise Failure(f"{body_mode.name}: a body message left unanswered")
        if body_mode is BodyMode.FULL_DUPLEX_STREAMED:
            await self._stream_ends(context)
            return "streamed"
        return "answered"

    async def _stream_ends(self, context: RecordingContext) -> None:
        """The iterator hooks' task must send a last message with end_of_stream (or an immediate reply)."""
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while True:
            for message in context.sent:
                if message.HasField("immediate_response"):
                    return
                if message.response_body.response.body_mutation.streamed_response.end_of_stream:
                    return
            if time.monotonic() > deadline:
                raise Failure(f"a full-duplex stream never ended: {context.sent[-3:]}")
            await asyncio.sleep(0.001)


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [b""]


def fuzz(
    max_examples: int,
    *,
    derandomize: bool = False,
    seconds: float | None = None,
    shrink: bool = True,
    verbose: bool = False,
) -> Stats:
    """Run the property over `max_examples` (per batch, batches until `seconds` are spent)."""
    sidecar_log = logging.getLogger("extproc")
    level = sidecar_log.level
    sidecar_log.setLevel(logging.CRITICAL)  # hook errors are expected here, and logged by design
    phases = [Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if shrink else [])]
    try:
        with tempfile.TemporaryDirectory(prefix="llm-extproc-fuzz-") as folder:
            fuzzer = Fuzzer(Path(folder))
            try:
                run = settings(
                    max_examples=max_examples,
                    deadline=None,
                    derandomize=derandomize,
                    database=None if derandomize else settings.default.database,
                    suppress_health_check=list(HealthCheck),
                    phases=phases,
                    print_blob=True,
                )(given(examples())(fuzzer.run))
                end = time.monotonic() + (seconds or 0)
                while True:
                    run()
                    if seconds is None or time.monotonic() >= end:
                        break
                    if verbose:
                        print(
                            f"... {fuzzer.stats.examples} examples, {dict(fuzzer.stats.outcomes)}", flush=True
                        )
            finally:
                fuzzer.close()
    finally:
        sidecar_log.setLevel(level)
    return fuzzer.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz the sidecar's request path (bounded).")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--batch", type=int, default=500, help="examples per Hypothesis run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        stats = fuzz(args.batch, seconds=args.seconds, verbose=True)
    except Exception:
        traceback.print_exc()
        print("FUZZ FAILURE (the falsifying example is printed above)", file=sys.stderr)
        return 1
    print(f"fuzzed {stats.examples} examples in {time.monotonic() - started:.1f} s: {dict(stats.outcomes)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

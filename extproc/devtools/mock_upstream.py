"""Deterministic fake LLM upstream: OpenAI's API and Anthropic's Messages API.

Used by ``llm-extproc mock-upstream``, ``llm-extproc dev`` and the end-to-end tests.
Every answer is derived from the request alone, so tests can assert on exact content:
chat and text completions echo ``[mock:{model}] {last user text}``, except that a chat model whose
name contains "guard" answers like Llama Guard: ``unsafe\nS1`` when the conversation mentions the word
"violence" (as ``/v1/moderations`` flags it), else ``safe``.

The agent APIs answer the same text, buffered or streamed (``"stream": true``), with usage:

* ``POST /v1/responses`` (OpenAI's Responses API): a ``response`` object whose one ``message`` output
  item holds the text; the last user text comes from ``input`` (a string, or the last ``role: user``
  item's content). Streamed as OpenAI does: named ``response.*`` events, each with its
  ``sequence_number``, ending with ``response.completed`` and no ``[DONE]``.
* ``POST /v1/messages`` and ``POST /anthropic/v1/messages`` (Anthropic's Messages API): a ``message``
  with one ``text`` block and ``stop_reason: end_turn``. Streamed as Anthropic does: ``message_start``,
  ``content_block_start``, ``ping``, the ``content_block_delta`` events, ``content_block_stop``,
  ``message_delta`` (stop reason, output tokens) and ``message_stop``.

Token counts are whitespace-separated words: of every text the request holds (instructions/system
included) for input, of the answer for output.

Control headers (on any recorded path):

* ``x-mock-status: N`` (N >= 400) answers N with the API's error shape: OpenAI's envelope, or on the
  Messages routes Anthropic's ``{"type": "error", "error": {...}}`` with its error type for N.
* ``x-mock-delay-ms: N`` waits N ms before answering.
* ``x-mock-chunks: N`` splits streamed content into N pieces (default 3).
* ``x-mock-chunk-delay-ms: N`` waits N ms between streamed events.

Inspection endpoints (never recorded): ``GET /__mock/last``, ``GET /__mock/requests``
and ``DELETE /__mock/requests``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.base_protocol import BaseProtocol

from extproc.api import anthropic

Json = dict[str, Any]

MAX_RECORDS = 1000
MAX_BODY_BYTES = 64 * 1024 * 1024
EMBEDDING_DIMS = 8
DEFAULT_CHUNKS = 3
MODELS = ("gpt-3.5-turbo", "gpt-4o")
MODERATION_CATEGORIES = ("violence", "hate", "self-harm", "sexual", "harassment")
_VIOLENCE = re.compile(r"\bviolence\b", re.IGNORECASE)

RECORDS = web.AppKey("mock_records", deque[Json])
COUNTER: web.AppKey[itertools.count[int]] = web.AppKey("mock_counter", itertools.count)


@dataclass(frozen=True)
class Call:
    """A parsed JSON API call."""

    request: web.Request
    payload: Json

    @property
    def model(self) -> Any:
        return self.payload.get("model")

    def new_id(self, prefix: str, sep: str = "-") -> str:
        """A fresh id: ``chatcmpl-mock-1``, or with ``sep="_"`` the agent APIs' ``resp_mock-2``."""
        counter = self.request.app[COUNTER]
        return f"{prefix}{sep}mock-{next(counter)}"


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, err_type: str, code: str | None) -> web.Response:
    envelope = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    return _json(envelope, status=status)


def _status_error(status: int, route: str) -> web.Response:
    """The ``x-mock-status`` answer, in the error shape of the API the route belongs to."""
    message = f"mock upstream error {status}"
    if route in ANTHROPIC_ROUTES:
        return _anthropic_error(status, message)
    err_type = "invalid_request_error" if status < 500 else "internal_server_error"
    if status == 429:
        err_type = "rate_limit_error"
    return _error(status, message, err_type, str(status))


def _anthropic_error(status: int, message: str) -> web.Response:
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``, typed by status."""
    error = {"type": anthropic.error_type(status), "message": message}
    return _json({"type": "error", "error": error}, status=status)


def _int_header(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.headers.get(name, default))
    except ValueError:
        return default


def _loads(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _usage(prompt: str, completion: str) -> Json:
    """Token counts are whitespace-separated word counts."""
    counts = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(completion.split())}
    return {**counts, "total_tokens": sum(counts.values())}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return "".join(t for t in texts if isinstance(t, str))
    return ""


def _messages(payload: Json) -> list[Json]:
    messages = payload.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _last_user_text(messages: list[Json]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _prompt_of(prompt: Any) -> str:
    if isinstance(prompt, list):
        prompt = prompt[-1] if prompt else ""
    if prompt is None:
        return ""
    return prompt if isinstance(prompt, str) else str(prompt)


def _split(text: str, pieces: int) -> list[str]:
    bounds = [i * len(text) // pieces for i in range(pieces + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(pieces)]


def _wants_usage(payload: Json) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


async def _stream(request: web.Request, events: list[Json]) -> web.StreamResponse:
    """Send each event as its own unnamed SSE write, then ``[DONE]`` (chat and text completions)."""
    frames = [b"data: " + orjson.dumps(event) + b"\n\n" for event in events]
    frames.append(b"data: [DONE]\n\n")
    return await _send_frames(request, frames)


async def _stream_named(request: web.Request, events: list[Json]) -> web.StreamResponse:
    """Send each event as its own SSE write named by its ``type``, with no ``[DONE]`` (agent APIs)."""
    frames = [
        b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n" for event in events
    ]
    return await _send_frames(request, frames)


async def _send_frames(request: web.Request, frames: list[bytes]) -> web.StreamResponse:
    """Write the frames one by one, ``x-mock-chunk-delay-ms`` apart."""
    delay = max(_int_header(request, "x-mock-chunk-delay-ms", 0), 0) / 1000
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for index, frame in enumerate(frames):
        if index:
            await asyncio.sleep(delay)
        await response.write(frame)
    await response.write_eof()
    return response


def _pieces(call: Call, content: str) -> list[str]:
    count = max(_int_header(call.request, "x-mock-chunks", DEFAULT_CHUNKS), 1)
    return _split(content, count)


def _events(call: Call, base: Json, choices: list[Json], usage: Json) -> list[Json]:
    """One chunk per choice, plus a usage-only chunk when ``include_usage`` is requested."""
    events = [{**base, "choices": [choice]} for choice in choices]
    if _wants_usage(call.payload):
        events.append({**base, "choices": [], "usage": usage})
    return events


def _delta_choice(delta: Json, finish: str | None) -> Json:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _text_choice(text: str, finish: str | None) -> Json:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def _base(call: Call, id_prefix: str, obj: str) -> Json:
    return {"id": call.new_id(id_prefix), "object": obj, "created": int(time.time()), "model": call.model}


def _guard_verdict(prompt: str) -> str:
    """A Llama Guard-style answer: flags the word "violence" as S1, like ``/v1/moderations`` does."""
    return "unsafe\nS1" if _VIOLENCE.search(prompt) else "safe"


async def _chat(call: Call) -> web.StreamResponse:
    messages = _messages(call.payload)
    prompt = " ".join(_text_of(m.get("content")) for m in messages)
    if isinstance(call.model, str) and "guard" in call.model.lower():
        content = _guard_verdict(prompt)
    else:
        content = f"[mock:{call.model}] {_last_user_text(messages)}"
    usage = _usage(prompt, content)
    stream = call.payload.get("stream") is True
    base = _base(call, "chatcmpl", "chat.completion.chunk" if stream else "chat.completion")
    if stream:
        pieces = _pieces(call, content)
        deltas = [{"role": "assistant", "content": pieces[0]}] + [{"content": p} for p in pieces[1:]]
        choices = [_delta_choice(d, None) for d in deltas] + [_delta_choice({}, "stop")]
        return await _stream(call.request, _events(call, base, choices, usage))
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return _json({**base, "choices": [choice], "usage": usage})


async def _completions(call: Call) -> web.StreamResponse:
    prompt = _prompt_of(call.payload.get("prompt"))
    text = f"[mock:{call.model}] {prompt}"
    usage = _usage(prompt, text)
    base = _base(call, "cmpl", "text_completion")
    if call.payload.get("stream") is True:
        choices = [_text_choice(p, None) for p in _pieces(call, text)] + [_text_choice("", "stop")]
        return await _stream(call.request, _events(call, base, choices, usage))
    return _json({**base, "choices": [_text_choice(text, "stop")], "usage": usage})


def _embedding(item: Any) -> list[float]:
    digest = hashlib.sha256(orjson.dumps(item)).digest()
    words = (int.from_bytes(digest[i * 4 : i * 4 + 4], "big") for i in range(EMBEDDING_DIMS))
    return [round(word / 2**31 - 1.0, 6) for word in words]


def _token_count(item: Any) -> int:
    if isinstance(item, str):
        return len(item.split())
    return len(item) if isinstance(item, list) else 1


async def _embeddings(call: Call) -> web.StreamResponse:
    inputs = _as_list(call.payload.get("input"))
    data = [
        {"object": "embedding", "index": i, "embedding": _embedding(item)} for i, item in enumerate(inputs)
    ]
    tokens = sum(_token_count(item) for item in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json({"object": "list", "data": data, "model": call.model, "usage": usage})


async def _images(call: Call) -> web.StreamResponse:
    count = call.payload.get("n")
    count = count if isinstance(count, int) and count >= 1 else 1
    prompt = call.payload.get("prompt")
    data = [{"url": f"https://mock.invalid/image-{i}.png", "revised_prompt": prompt} for i in range(count)]
    return _json({"created": int(time.time()), "data": data})


def _moderation(item: Any) -> Json:
    text = item.get("text", "") if isinstance(item, dict) else item
    flagged = bool(_VIOLENCE.search(text if isinstance(text, str) else str(text)))
    categories = {name: flagged and name == "violence" for name in MODERATION_CATEGORIES}
    scores = {name: 0.99 if hit else 0.01 for name, hit in categories.items()}
    return {"flagged": flagged, "categories": categories, "category_scores": scores}


async def _moderations(call: Call) -> web.StreamResponse:
    results = [_moderation(item) for item in _as_list(call.payload.get("input"))]
    return _json({"id": call.new_id("modr"), "model": call.model, "results": results})


def _body_stream(body: bytes) -> StreamReader:
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), max(len(body), 2**16), loop=loop)
    stream.feed_data(body)
    stream.feed_eof()
    return stream


async def _transcription(request: web.Request, body: bytes) -> web.StreamResponse:
    if not request.content_type.startswith("multipart/"):
        return _error(400, "expected multipart/form-data", "invalid_request_error", None)
    model: str | None = None
    filename: str | None = None
    size = 0
    try:
        async for part in MultipartReader(request.headers, _body_stream(body)):
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "model":
                model = await part.text()
            elif part.name == "file":
                filename = part.filename
                size = len(await part.read())
    except ValueError as exc:
        return _error(400, f"malformed multipart body: {exc}", "invalid_request_error", None)
    return _json({"text": f"[mock:{model}] transcribed {size} bytes from {filename}"})


def _response_input(payload: Json) -> list[Json]:
    """The Responses API ``input`` as items: a bare string is one user message."""
    items = payload.get("input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _item_text(item: Json) -> str:
    """A Responses input item's text: a message's content, or a tool output."""
    return _text_of(item.get("content")) or _text_of(item.get("output"))


def _response_usage(prompt: str, text: str) -> Json:
    counts = _usage(prompt, text)
    return {
        "input_tokens": counts["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts["total_tokens"],
    }


def _output_text(text: str) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _output_message(item_id: str, text: str | None) -> Json:
    """The assistant message output item: in progress and empty while ``text`` is None."""
    status, content = ("in_progress", []) if text is None else ("completed", [_output_text(text)])
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _response_object(call: Call, response_id: str) -> Json:
    """A Responses API ``response`` in progress, echoing the request's settings as OpenAI does."""
    payload = call.payload
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"),
        "model": call.model,
        "output": [],
        "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        "previous_response_id": payload.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": payload.get("store", True),
        "temperature": payload.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": payload.get("tool_choice", "auto"),
        "tools": payload.get("tools", []),
        "top_p": payload.get("top_p", 1.0),
        "truncation": payload.get("truncation", "disabled"),
        "usage": None,
        "user": payload.get("user"),
        "metadata": payload.get("metadata") or {},
    }


def _response_events(call: Call, started: Json, done: Json, item_id: str, text: str) -> list[Json]:
    """The named events OpenAI streams for one text message, numbered by ``sequence_number``."""
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    deltas = [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        for piece in _pieces(call, text)
    ]
    events: list[Json] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": _output_message(item_id, None)},
        {"type": "response.content_part.added", **where, "part": _output_text("")},
        *deltas,
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _output_text(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]},
        {"type": "response.completed", "response": done},
    ]
    return [{"type": event["type"], "sequence_number": n, **event} for n, event in enumerate(events)]


async def _responses(call: Call) -> web.StreamResponse:
    """OpenAI's Responses API: ``[mock:{model}] {last user text}`` as one message output item."""
    items = _response_input(call.payload)
    instructions = _text_of(call.payload.get("instructions"))
    prompt = " ".join([instructions, *(_item_text(item) for item in items)])
    user_texts = [_text_of(item.get("content")) for item in items if item.get("role") == "user"]
    text = f"[mock:{call.model}] {user_texts[-1] if user_texts else ''}"
    started = _response_object(call, call.new_id("resp", sep="_"))
    item_id = call.new_id("msg", sep="_")
    done = {
        **started,
        "status": "completed",
        "output": [_output_message(item_id, text)],
        "usage": _response_usage(prompt, text),
    }
    if call.payload.get("stream") is True:
        return await _stream_named(call.request, _response_events(call, started, done, item_id, text))
    return _json(done)


def _anthropic_usage(prompt: str, text: str) -> Json:
    counts = _usage(prompt, text)
    return {
        "input_tokens": counts["prompt_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": counts["completion_tokens"],
    }


def _anthropic_events(call: Call, message: Json, text: str) -> list[Json]:
    """The named events Anthropic streams for one text block.

    ``message_start`` carries the input usage and, as Anthropic's does, an early ``output_tokens: 1``;
    ``message_delta`` carries the final (cumulative, not additional) output count.
    """
    usage = message["usage"]
    started = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in _pieces(call, text)
    ]
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    return [
        {"type": "message_start", "message": started},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        *deltas,
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}},
        {"type": "message_stop"},
    ]


async def _anthropic_messages(call: Call) -> web.StreamResponse:
    """Anthropic's Messages API: ``[mock:{model}] {last user text}`` as one text block."""
    messages = _messages(call.payload)
    system = _text_of(call.payload.get("system"))
    prompt = " ".join([system, *(_text_of(m.get("content")) for m in messages)])
    text = f"[mock:{call.model}] {_last_user_text(messages)}"
    message = {
        "id": call.new_id("msg", sep="_"),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(prompt, text),
    }
    if call.payload.get("stream") is True:
        return await _stream_named(call.request, _anthropic_events(call, message, text))
    return _json(message)


JSON_ROUTES: Mapping[str, Handler] = MappingProxyType(
    {
        "/chat/completions": _chat,
        "/completions": _completions,
        "/embeddings": _embeddings,
        "/images/generations": _images,
        "/moderations": _moderations,
        "/responses": _responses,
        "/messages": _anthropic_messages,
    }
)

# Routes that speak Anthropic's API (its error shape); also served under ANTHROPIC_MOUNT + "/v1".
ANTHROPIC_ROUTES = frozenset({"/messages"})
ANTHROPIC_MOUNT = "/anthropic"


def _route_path(path: str) -> str:
    """The route a path serves: ``/v1`` is optional; ``/anthropic/v1`` mounts Anthropic's routes only."""
    mounted = path.removeprefix(ANTHROPIC_MOUNT + "/v1")
    if mounted != path:
        return mounted if mounted in ANTHROPIC_ROUTES else path
    return path[3:] if path.startswith("/v1/") else path


def _models() -> web.Response:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in MODELS]
    return _json({"object": "list", "data": data})


def _echo(request: web.Request) -> web.Response:
    return _json(
        {"mock": "echo", "method": request.method, "path": request.path, "query": request.query_string}
    )


def _headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _record(request: web.Request) -> tuple[Json, bytes]:
    received_at = time.time()
    body = await request.read()
    record: Json = {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": _headers(request),
        "body": body.decode("utf-8", errors="replace"),
        "body_base64": base64.b64encode(body).decode("ascii"),
        "json": _loads(body),
        "received_at": received_at,
        "answered_at": None,
        "content_length": request.content_length,
        "chunked": "chunked" in request.headers.get("Transfer-Encoding", "").lower(),
    }
    request.app[RECORDS].append(record)
    return record, body


async def _respond(request: web.Request, record: Json, body: bytes) -> web.StreamResponse:
    delay_ms = _int_header(request, "x-mock-delay-ms", 0)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    route, method = _route_path(request.path), request.method
    status = _int_header(request, "x-mock-status", 0)
    if status >= 400:
        return _status_error(status, route)
    handler = JSON_ROUTES.get(route)
    if method == "POST" and handler is not None:
        payload = record["json"]
        if not isinstance(payload, dict):
            if route in ANTHROPIC_ROUTES:
                return _anthropic_error(400, "request body is not a JSON object")
            return _error(400, "request body is not a JSON object", "invalid_request_error", "invalid_json")
        return await handler(Call(request, payload))
    if method == "POST" and route == "/audio/transcriptions":
        return await _transcription(request, body)
    if method == "GET" and route == "/models":
        return _models()
    return _echo(request)


async def _admin(request: web.Request) -> web.Response:
    records = request.app[RECORDS]
    key = (request.method, request.path)
    if key == ("GET", "/__mock/last"):
        if not records:
            return _error(404, "no request recorded yet", "not_found_error", None)
        return _json(records[-1])
    if key == ("GET", "/__mock/requests"):
        return _json(list(records))
    if key == ("DELETE", "/__mock/requests"):
        cleared = len(records)
        records.clear()
        return _json({"cleared": cleared})
    return _error(404, f"unknown mock control path {request.path}", "not_found_error", None)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/__mock/"):
        return await _admin(request)
    record, body = await _record(request)
    response = await _respond(request, record, body)
    if not response.prepared:
        await response.prepare(request)
    await response.write_eof()
    record["answered_at"] = time.time()
    return response


def build_app() -> web.Application:
    """Build the mock upstream application with an empty request log."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[RECORDS] = deque(maxlen=MAX_RECORDS)
    app[COUNTER] = itertools.count(1)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


async def start(host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving on ``host:port`` (0 picks a free port); return the runner and bound port."""
    runner = web.AppRunner(build_app(), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return runner, bound


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        runner, bound = await start(host, port)
        try:
            print(f"mock-upstream listening on http://{_url_host(host)}:{bound}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def main(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly."""
    asyncio.run(_serve(host, port))

"""The hostile input corpus, as data: one `Case` per request sent through a real Envoy.

Each case says what to send (method, raw path, headers, body, chunked or not, which scripted upstream
answer) and what must come back: the status, the error envelope's `type`/`param`/message fragment, whether
the upstream was reached and with which bytes, and what the client's body must be. `test_corpus.py` runs
them; `python -m tests.hostile.table > tests/hostile/CASES.md` regenerates the list of cases (a test checks
that file is current).

The stack (see `test_corpus.py`): `max_request_bytes: 65536`, `max_json_depth: 32`, the rate limiter
with generous limits, and a handler whose pre-call hook sets `model` to the `x-rewrite-model` header
when it is sent (and otherwise changes nothing), a success hook, a failure hook, a per-chunk streaming
hook and an identity streaming iterator hook. Known bugs are cases with `xfail` set to a diagnosis.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .upstream import ANSWERS, DONE

LIMIT = 65536
DEPTH = 32
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
IMAGES = "/v1/images/generations"
MODERATIONS = "/v1/moderations"
AUDIO = "/v1/audio/transcriptions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
ANTHROPIC = "/anthropic/v1/messages"
ANTHROPIC_PATHS = (MESSAGES, ANTHROPIC)
INVALID = "Invalid JSON payload"
TOO_LARGE = f"Request body too large: the limit is {LIMIT} bytes"
REQ = "invalid_request_error"
REWRITE = {"x-rewrite-model": "rw"}
BOUNDARY = "h0stile-b0undary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
BIG = b"123456789012345678901234567890"  # 30 digits: beyond 64 bits, decoded on the exact (stdlib) path
UNSET: Any = object()


@dataclass(frozen=True)
class Err:
    """The error envelope a case must get: `type`, `param` and a fragment of `message`."""

    type: str
    param: str | None
    fragment: str


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    body: bytes = b""
    status: int = 200
    path: str = CHAT
    method: str = "POST"
    headers: Mapping[str, str | None] = field(default_factory=dict)  # None drops a default header
    chunked: bool = False  # no content-length: the body goes in 1000-byte pieces
    error: Err | None = None  # the envelope the client must get
    upstream: str = "reached"  # "never", "reached" or "exact" (the client's bytes, byte for byte)
    upstream_body: bytes | None = None  # exactly these bytes reached the upstream
    upstream_json: Any = UNSET  # what the upstream decoded (the hook's rewrite, last duplicate key, ...)
    upstream_path: str | None = None
    answer: str | None = None  # the scripted upstream answer (`x-hostile-answer`)
    response: bytes | None = None  # exactly the bytes the client must get
    response_has: tuple[bytes, ...] = ()
    sse_valid: bool = False  # the client's stream parses: every event JSON, one `[DONE]`, last
    reset: bool = False  # the client's response breaks off (the upstream cut the connection)
    max_seconds: float | None = None
    xfail: str | None = None  # a known bug: its diagnosis (the case runs as xfail(strict=True))
    traceback: bool = False  # the sidecar logs a traceback for this request (only with xfail)
    timeout_s: float = 10.0  # the client's read timeout


def refused(
    name: str, category: str, body: bytes, status: int, param: str | None, fragment: str, **kw: Any
) -> Case:
    kind = REQ if status < 500 else "internal_server_error"
    return Case(name, category, body, status, error=Err(kind, param, fragment), upstream="never", **kw)


def invalid(name: str, category: str, body: bytes, fragment: str = INVALID, **kw: Any) -> Case:
    return refused(name, category, body, 400, "request_body", fragment, **kw)


def forwarded(name: str, category: str, body: bytes, **kw: Any) -> Case:
    """Reaches the upstream exactly as sent (no hook changed it); the mock answers 200."""
    return Case(name, category, body, upstream="exact", **kw)


def rewritten(name: str, category: str, body: bytes, upstream_json: Any, **kw: Any) -> Case:
    """The hook sets `model`; the upstream decodes `upstream_json` from the re-encoded body."""
    headers = {**REWRITE, **kw.pop("headers", {})}
    return Case(name, category, body, headers=headers, upstream_json=upstream_json, **kw)


def answered(name: str, path: str = CHAT, body: bytes | None = None, **kw: Any) -> Case:
    """A scripted upstream answer that must reach the client as it came (status, bytes)."""
    answer = ANSWERS[name]
    category = "upstream-sse" if answer.content_type == "text/event-stream" else "upstream-non-json"
    stream = answer.content_type == "text/event-stream"
    if body is None:
        body = b'{"model":"m","stream":true,' + MSGS + b"}" if stream else b'{"model":"m",' + MSGS + b"}"
    kw.setdefault("response", answer.body)
    kw.setdefault("status", answer.status)
    label = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings", AUDIO: "audio"}[path]
    return Case(f"{name}-{label}", category, body, path=path, answer=name, **kw)


# ---- bodies ----
MSGS = b'"messages":[{"role":"user","content":"hi"}]'
MSGS_JSON = [{"role": "user", "content": "hi"}]
OK = b'{"model":"m",' + MSGS + b"}"


def chat(*fields: bytes) -> bytes:
    return b"{" + b",".join((b'"model":"m"', *fields, MSGS)) + b"}"


def sized(size: int, path: str = CHAT) -> bytes:
    """A valid body of exactly `size` bytes for `path`."""
    key = {CHAT: "messages", EMBEDDINGS: "input", RESPONSES: "input", MESSAGES: "messages"}[path]
    base: dict[str, Any] = {"model": "m", key: [{"role": "user", "content": ""}] if key == "messages" else ""}
    filler = "x" * (size - len(orjson.dumps(base)))
    if key == "messages":
        base["messages"][0]["content"] = filler
    else:
        base["input"] = filler
    body = orjson.dumps(base)
    assert len(body) == size
    return body


def arrays(depth: int) -> bytes:
    """`depth` levels in all: the top object, then nested arrays."""
    return chat(b'"x":' + b"[" * (depth - 1) + b"]" * (depth - 1))


def objects(depth: int) -> bytes:
    return chat(b'"x":' + b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1))


def part(name: str | None, value: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    head = b"Content-Disposition: form-data"
    if name is not None:
        head += b'; name="%s"' % name.encode()
    if filename is not None:
        head += b'; filename="%s"' % filename.encode()
    head += b"\r\n"
    if ctype is not None:
        head += b"Content-Type: %s\r\n" % ctype.encode()
    return b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n" + value + b"\r\n"


def form(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (b"--" + BOUNDARY.encode() + b"--\r\n" if close else b"")


WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x00\xff\xfe\r\n--not-the-boundary\r\n\x00"
FILE = part("file", WAV, "speech.wav", "audio/wav")
MODEL = part("model", b"whisper-1")
NO_SEPARATOR = b'--%s\r\nContent-Disposition: form-data; name="x"\r\n--%s--\r\n' % ((BOUNDARY.encode(),) * 2)


def exact_json(value: Any) -> bytes:
    """How the sidecar re-encodes a body holding integers beyond 64 bits (the stdlib, compact)."""
    return json.dumps(value, separators=(",", ":")).encode()


def redos(quotes: int) -> bytes:
    """Enough brackets to trigger the precise depth scan, then an unterminated string of escaped quotes."""
    return b'{"x":' + b"[" * (DEPTH + 8) + b'"' + b'\\"' * quotes


# U+3031 is b"10" in UTF-16-LE: ten of them are a run of 20 ASCII digits in the body's bytes.
UTF16_DIGITS = ('{"model":"m","messages":[],"x":"' + "\u3031" * 10 + '"}').encode("utf-16-le")
assert b"10" * 10 in UTF16_DIGITS


def with_model(body: bytes, model: str = "rw") -> Any:
    """What the upstream decodes once the hook set `model`."""
    return {**orjson.loads(body), "model": model}


CASES: list[Case] = [
    # ---- malformed and truncated JSON ----
    invalid("truncated-object", "malformed-json", b'{"model":"m",'),
    invalid("lone-open-brace", "malformed-json", b"{"),
    invalid("unterminated-string", "malformed-json", b'{"model":"m'),
    invalid("trailing-garbage", "malformed-json", OK + b" trailing", "unexpected content after document"),
    invalid("trailing-comma", "malformed-json", OK[:-1] + b",}"),
    invalid("single-quotes", "malformed-json", b"{'model':'m'}"),
    invalid("unquoted-key", "malformed-json", b'{model:"m",' + MSGS + b"}"),
    invalid("js-comment", "malformed-json", b'{/*c*/"model":"m",' + MSGS + b"}"),
    invalid("trailing-nul-byte", "malformed-json", OK + b"\x00"),
    invalid("raw-control-char-in-string", "malformed-json", chat(b'"x":"a\x01b"')),
    invalid("truncated-after-big-int", "malformed-json", b'{"model":"m","seed":' + BIG + b","),
    invalid("truncated-completions", "malformed-json", b'{"model":"m","prompt":"p', path=COMPLETIONS),
    invalid("truncated-embeddings", "malformed-json", b'{"model":"m","input":["a",', path=EMBEDDINGS),
    invalid("truncated-images", "malformed-json", b'{"prompt":', path=IMAGES),
    invalid("truncated-moderations", "malformed-json", b'{"input"', path=MODERATIONS),
    # ---- JSON that is not an object ----
    invalid("array", "not-an-object", b"[1,2]", f"{INVALID}: expected an object, got an array"),
    invalid("array-of-request", "not-an-object", b"[" + OK + b"]", "got an array"),
    invalid("string", "not-an-object", b'"hello"', "got a string"),
    invalid("number", "not-an-object", b"42", "got a number"),
    invalid("float", "not-an-object", b"-1.5e3", "got a number"),
    invalid("null", "not-an-object", b"null", "got null"),
    invalid("true", "not-an-object", b"true", "got a boolean"),
    invalid("false", "not-an-object", b"false", "got a boolean"),
    invalid("array-embeddings", "not-an-object", b'["a"]', "got an array", path=EMBEDDINGS),
    invalid("string-moderations", "not-an-object", b'"x"', "got a string", path=MODERATIONS),
    # ---- wrongly typed well-known fields ----
    refused(
        "messages-string",
        "wrong-types",
        b'{"model":"m","messages":"hi"}',
        400,
        "messages",
        "expected an array",
    ),
    refused(
        "messages-object", "wrong-types", b'{"model":"m","messages":{}}', 400, "messages", "expected an array"
    ),
    refused(
        "messages-number", "wrong-types", b'{"model":"m","messages":3}', 400, "messages", "expected an array"
    ),
    refused(
        "messages-null",
        "wrong-types",
        b'{"model":"m","messages":null}',
        400,
        "messages",
        "messages",
    ),
    refused(
        "model-number", "wrong-types", b'{"model":5,' + MSGS + b"}", 400, "model", "Invalid type for 'model'"
    ),
    refused("model-list", "wrong-types", b'{"model":["a"],' + MSGS + b"}", 400, "model", "expected a string"),
    refused("model-object", "wrong-types", b'{"model":{},' + MSGS + b"}", 400, "model", "expected a string"),
    refused("model-bool", "wrong-types", b'{"model":true,' + MSGS + b"}", 400, "model", "expected a string"),
    refused("stream-yes", "wrong-types", chat(b'"stream":"yes"'), 400, "stream", "expected a boolean"),
    refused("stream-one", "wrong-types", chat(b'"stream":1'), 400, "stream", "expected a boolean"),
    refused("user-number", "wrong-types", chat(b'"user":5'), 400, "user", "Invalid type for 'user'"),
    refused("user-list", "wrong-types", chat(b'"user":["u"]'), 400, "user", "expected a string"),
    refused("user-object", "wrong-types", chat(b'"user":{"id":1}'), 400, "user", "expected a string"),
    refused(
        "model-number-embeddings",
        "wrong-types",
        b'{"model":1,"input":"x"}',
        400,
        "model",
        "expected a string",
        path=EMBEDDINGS,
    ),
    refused(
        "user-number-moderations",
        "wrong-types",
        b'{"input":"x","user":1}',
        400,
        "user",
        "expected a string",
        path=MODERATIONS,
    ),
    refused(
        "stream-yes-images",
        "wrong-types",
        b'{"prompt":"p","stream":"yes"}',
        400,
        "stream",
        "expected a boolean",
        path=IMAGES,
    ),
    refused(
        "stream-one-completions",
        "wrong-types",
        b'{"model":"m","prompt":"p","stream":1}',
        400,
        "stream",
        "expected a boolean",
        path=COMPLETIONS,
    ),
    forwarded("stream-null-is-unset", "wrong-types", chat(b'"stream":null')),
    forwarded(
        "messages-items-of-any-type", "wrong-types", b'{"model":"m","messages":[1,"x",null,{"content":{}}]}'
    ),
    forwarded("prompt-token-ids", "wrong-types", b'{"model":"m","prompt":[1,2,3]}', path=COMPLETIONS),
    forwarded("input-token-arrays", "wrong-types", b'{"model":"m","input":[[1,2],[3]]}', path=EMBEDDINGS),
    forwarded("max-tokens-not-a-number", "wrong-types", chat(b'"max_tokens":"abc"')),
    forwarded("max-tokens-list", "wrong-types", chat(b'"max_tokens":[1]')),
    # ---- missing required parameters ----
    refused(
        "chat-without-messages",
        "missing-required",
        b'{"model":"m"}',
        400,
        "messages",
        "/chat/completions: Missing required parameter: 'messages'.",
    ),
    refused(
        "completions-without-prompt",
        "missing-required",
        b'{"model":"m"}',
        400,
        "prompt",
        "'prompt'",
        path=COMPLETIONS,
    ),
    refused(
        "embeddings-without-input",
        "missing-required",
        b'{"model":"m"}',
        400,
        "input",
        "'input'",
        path=EMBEDDINGS,
    ),
    refused(
        "images-without-prompt", "missing-required", b'{"model":"m"}', 400, "prompt", "'prompt'", path=IMAGES
    ),
    refused(
        "moderations-without-input", "missing-required", b"{}", 400, "input", "'input'", path=MODERATIONS
    ),
    refused(
        "embeddings-input-null",
        "missing-required",
        b'{"model":"m","input":null}',
        400,
        "input",
        "input",
        path=EMBEDDINGS,
    ),
    # ---- sizes around max_request_bytes ----
    forwarded("chat-exactly-at-limit", "size", sized(LIMIT)),
    forwarded("chat-exactly-at-limit-chunked", "size", sized(LIMIT), chunked=True),
    forwarded("embeddings-exactly-at-limit", "size", sized(LIMIT, EMBEDDINGS), path=EMBEDDINGS),
    refused("chat-one-over-limit", "size", sized(LIMIT + 1), 413, "request_body", TOO_LARGE),
    refused(
        "chat-one-over-limit-chunked", "size", sized(LIMIT + 1), 413, "request_body", TOO_LARGE, chunked=True
    ),
    refused("chat-300k", "size", sized(300_000), 413, "request_body", TOO_LARGE),
    refused("chat-300k-chunked", "size", sized(300_000), 413, "request_body", TOO_LARGE, chunked=True),
    refused(
        "embeddings-over-limit",
        "size",
        sized(LIMIT + 10, EMBEDDINGS),
        413,
        "request_body",
        TOO_LARGE,
        path=EMBEDDINGS,
    ),
    rewritten(
        "just-under-limit-rewritten", "size", sized(LIMIT - 1), with_model(sized(LIMIT - 1))
    ),  # grows to the limit
    rewritten(
        "at-limit-rewrite-grows-past-it",
        "size",
        sized(LIMIT),
        with_model(sized(LIMIT)),
    ),
    # ---- nesting depth (max_json_depth: 32) ----
    forwarded("arrays-at-depth-limit", "depth", arrays(DEPTH)),
    forwarded("objects-at-depth-limit", "depth", objects(DEPTH)),
    refused(
        "arrays-over-depth-limit",
        "depth",
        arrays(DEPTH + 1),
        400,
        "request_body",
        "nested deeper than 32 levels",
    ),
    refused(
        "objects-over-depth-limit",
        "depth",
        objects(DEPTH + 1),
        400,
        "request_body",
        "nested deeper than 32 levels",
    ),
    refused("arrays-1000-deep", "depth", arrays(1000), 400, "request_body", "nested deeper than 32 levels"),
    refused(
        "mixed-over-depth-limit",
        "depth",
        chat(b'"x":' + b'[{"a":' * 16 + b"1" + b"}]" * 16),
        400,
        "request_body",
        "nested deeper",
    ),
    refused(
        "over-depth-limit-embeddings",
        "depth",
        b'{"model":"m","input":' + b"[" * 40 + b"]" * 40 + b"}",
        400,
        "request_body",
        "nested deeper",
        path=EMBEDDINGS,
    ),
    forwarded("brackets-inside-strings", "depth", chat(b'"x":"' + b"[{" * 100 + b'"')),
    forwarded("brackets-after-escaped-quote", "depth", chat(b'"x":"\\"' + b"[" * 100 + b'"')),
    forwarded("brackets-inside-keys", "depth", chat(b'"' + b"[" * 50 + b'":1')),
    refused(
        "escaped-backslash-then-real-nesting",
        "depth",
        chat(b'"x":"\\\\","y":' + b"[" * 40 + b"]" * 40),
        400,
        "request_body",
        "nested deeper",
    ),
    invalid("unbalanced-closing-brackets", "depth", b"]" * 40 + OK),
    invalid(
        "depth-scan-is-linear",
        "depth",
        redos(8000),
        "Invalid JSON payload",
        max_seconds=0.25,
    ),
    # ---- duplicate keys (last wins) ----
    forwarded(
        "duplicate-model-untouched",
        "duplicate-keys",
        b'{"model":"a","model":"b",' + MSGS + b"}",
        upstream_json={"model": "b", "messages": MSGS_JSON},
    ),
    Case(
        "duplicate-model-rewritten",
        "duplicate-keys",
        b'{"model":"a","model":"b",' + MSGS + b"}",
        headers=REWRITE,
        upstream_body=orjson.dumps({"model": "rw", "messages": MSGS_JSON}),
    ),
    Case(
        "duplicate-user-rewritten",
        "duplicate-keys",
        b'{"user":"a","model":"m","user":"b",' + MSGS + b"}",
        headers=REWRITE,
        upstream_body=orjson.dumps({"user": "b", "model": "rw", "messages": MSGS_JSON}),
    ),
    forwarded(
        "duplicate-messages-untouched",
        "duplicate-keys",
        b'{"model":"m","messages":[{"role":"user","content":"first"}],' + MSGS + b"}",
        upstream_json={"model": "m", "messages": MSGS_JSON},
    ),
    # ---- NaN and Infinity ----
    invalid("nan", "nan-infinity", chat(b'"temperature":NaN')),
    invalid("infinity", "nan-infinity", chat(b'"temperature":Infinity')),
    invalid("minus-infinity", "nan-infinity", chat(b'"temperature":-Infinity')),
    invalid("lowercase-nan", "nan-infinity", chat(b'"temperature":nan')),
    invalid("overflowing-float", "nan-infinity", chat(b'"temperature":1e400'), "number is infinity"),
    invalid(
        "nan-with-big-int", "nan-infinity", chat(b'"temperature":NaN,"seed":' + BIG), "Invalid JSON payload"
    ),
    invalid("infinity-with-big-int", "nan-infinity", chat(b'"temperature":Infinity,"seed":' + BIG)),
    invalid(
        "overflowing-float-with-big-int",
        "nan-infinity",
        chat(b'"temperature":1e400,"seed":' + BIG),
    ),
    # ---- integers beyond 64 bits ----
    forwarded("big-int-untouched", "big-int", chat(b'"seed":' + BIG)),
    forwarded("negative-big-int-untouched", "big-int", chat(b'"seed":-' + BIG)),
    forwarded("u64-max-plus-one-untouched", "big-int", chat(b'"seed":18446744073709551616')),
    forwarded(
        "big-int-token-ids-untouched", "big-int", b'{"model":"m","input":[' + BIG + b",1]}", path=EMBEDDINGS
    ),
    forwarded("big-int-in-string-untouched", "big-int", chat(b'"x":"' + BIG + b'"')),
    Case(
        "big-int-rewritten",
        "big-int",
        chat(b'"seed":' + BIG),
        headers=REWRITE,
        upstream_body=exact_json({"model": "rw", "seed": int(BIG), "messages": MSGS_JSON}),
    ),
    Case(
        "u64-max-rewritten",
        "big-int",
        chat(b'"seed":18446744073709551615'),
        headers=REWRITE,
        upstream_body=exact_json({"model": "rw", "seed": 18446744073709551615, "messages": MSGS_JSON}),
    ),
    Case(
        "i64-max-rewritten",
        "big-int",
        chat(b'"seed":9223372036854775807'),
        headers=REWRITE,
        upstream_body=orjson.dumps({"model": "rw", "seed": 9223372036854775807, "messages": MSGS_JSON}),
    ),
    Case(
        "below-i64-min-rewritten",
        "big-int",
        chat(b'"seed":-9223372036854775809'),
        headers=REWRITE,
        upstream_body=exact_json({"model": "rw", "seed": -9223372036854775809, "messages": MSGS_JSON}),
    ),
    Case(
        "big-int-deep-in-messages-rewritten",
        "big-int",
        b'{"model":"m","messages":[{"role":"user","content":"hi","n":[-' + BIG + b"]}]}",
        headers=REWRITE,
        upstream_body=exact_json(
            {"model": "rw", "messages": [{"role": "user", "content": "hi", "n": [-int(BIG)]}]}
        ),
    ),
    invalid("int-of-5000-digits", "big-int", chat(b'"seed":' + b"7" * 5000), "Invalid JSON payload"),
    # ---- invalid UTF-8 ----
    invalid("invalid-utf8-ff", "invalid-utf8", chat(b'"x":"\xff"')),
    invalid("invalid-utf8-overlong", "invalid-utf8", chat(b'"x":"\xc0\xaf"')),
    invalid("invalid-utf8-encoded-surrogate", "invalid-utf8", chat(b'"x":"\xed\xa0\x80"')),
    invalid("invalid-utf8-above-max-code-point", "invalid-utf8", chat(b'"x":"\xf4\x90\x80\x80"')),
    invalid("invalid-utf8-truncated-sequence", "invalid-utf8", chat(b'"x":"\xe2\x82"')),
    invalid("invalid-utf8-in-key", "invalid-utf8", chat(b'"\xfe":1')),
    invalid(
        "latin1-declared-charset",
        "invalid-utf8",
        chat(b'"x":"caf\xe9"'),
        headers={"content-type": "application/json; charset=latin-1"},
    ),
    invalid(
        "invalid-utf8-encoded-surrogate-with-big-int",
        "invalid-utf8",
        chat(b'"x":"\xed\xa0\x80","seed":' + BIG),
    ),
    forwarded(
        "valid-non-ascii-untouched", "invalid-utf8", chat('"x":"héllo wörld \U0001f600 مرحبا"'.encode())
    ),
    rewritten(
        "valid-non-ascii-rewritten",
        "invalid-utf8",
        chat('"x":"\U0001f600 \\u00e9\\/"'.encode()),
        {"model": "rw", "x": "\U0001f600 é/", "messages": MSGS_JSON},
    ),
    rewritten(
        "nul-escape-rewritten",
        "invalid-utf8",
        chat(b'"x":"a\\u0000b"'),
        {"model": "rw", "x": "a\x00b", "messages": MSGS_JSON},
    ),
    # ---- lone surrogate escapes ----
    invalid("lone-high-surrogate-escape", "surrogates", chat(b'"x":"\\ud800"')),
    invalid("lone-low-surrogate-escape", "surrogates", chat(b'"x":"\\udc00"')),
    invalid("reversed-surrogate-pair", "surrogates", chat(b'"x":"\\udc00\\ud800"')),
    invalid("high-surrogate-then-text", "surrogates", chat(b'"x":"\\ud800abc"')),
    forwarded("valid-surrogate-pair-untouched", "surrogates", chat(b'"x":"\\ud83d\\ude00"')),
    invalid(
        "lone-surrogate-escape-with-big-int",
        "surrogates",
        chat(b'"x":"\\ud800","seed":' + BIG),
    ),
    # ---- byte order marks and other encodings ----
    invalid("utf8-bom", "bom", b"\xef\xbb\xbf" + OK, "byte order mark"),
    invalid("utf8-bom-only", "bom", b"\xef\xbb\xbf"),
    invalid("utf16-body", "bom", b'{"model":"m","messages":[]}'.decode().encode("utf-16-le")),
    invalid("utf16-body-with-bom", "bom", b'{"model":"m","messages":[]}'.decode().encode("utf-16")),
    invalid(
        "utf8-bom-with-big-int",
        "bom",
        b"\xef\xbb\xbf" + chat(b'"seed":' + BIG),
    ),
    invalid(
        "utf16-body-whose-bytes-hold-20-digits",
        "bom",
        UTF16_DIGITS,
    ),
    # ---- content types ----
    refused(
        "text-plain",
        "content-type",
        OK,
        415,
        "content-type",
        "Unsupported content-type 'text/plain'",
        headers={"content-type": "text/plain"},
    ),
    refused(
        "form-urlencoded",
        "content-type",
        b"model=m&messages=x",
        415,
        "content-type",
        "application/x-www-form-urlencoded",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    refused(
        "application-xml",
        "content-type",
        b"<model>m</model>",
        415,
        "content-type",
        "application/xml",
        headers={"content-type": "application/xml"},
    ),
    refused(
        "json-lookalike",
        "content-type",
        OK,
        415,
        "content-type",
        "send application/json",
        headers={"content-type": "application/jsonx"},
    ),
    refused(
        "multipart-on-chat",
        "content-type",
        OK,
        415,
        "content-type",
        "send application/json",
        headers=MULTIPART,
    ),
    refused(
        "text-plain-embeddings",
        "content-type",
        b'{"model":"m","input":"x"}',
        415,
        "content-type",
        "/embeddings",
        path=EMBEDDINGS,
        headers={"content-type": "text/plain"},
    ),
    refused(
        "json-on-audio",
        "content-type",
        b'{"model":"whisper-1","file":"x"}',
        415,
        "content-type",
        "send multipart/form-data",
        path=AUDIO,
    ),
    forwarded("no-content-type-is-json", "content-type", OK, headers={"content-type": None}),
    forwarded(
        "json-with-charset", "content-type", OK, headers={"content-type": "application/json; charset=utf-8"}
    ),
    forwarded("json-suffix-type", "content-type", OK, headers={"content-type": "application/vnd.api+json"}),
    forwarded("uppercase-json-type", "content-type", OK, headers={"content-type": "APPLICATION/JSON"}),
    # ---- content encodings ----
    refused(
        "gzip-body",
        "content-encoding",
        gzip.compress(OK),
        415,
        "content-encoding",
        "Unsupported content-encoding 'gzip'",
        headers={"content-encoding": "gzip"},
    ),
    refused(
        "gzip-uppercase",
        "content-encoding",
        gzip.compress(OK),
        415,
        "content-encoding",
        "'gzip'",
        headers={"content-encoding": "GZIP"},
    ),
    refused(
        "brotli-label",
        "content-encoding",
        OK,
        415,
        "content-encoding",
        "'br'",
        headers={"content-encoding": "br"},
    ),
    refused(
        "gzip-multipart",
        "content-encoding",
        gzip.compress(form(MODEL, FILE)),
        415,
        "content-encoding",
        "gzip",
        path=AUDIO,
        headers={**MULTIPART, "content-encoding": "gzip"},
    ),
    forwarded("identity-encoding", "content-encoding", OK, headers={"content-encoding": "identity"}),
    # ---- multipart (audio transcriptions) ----
    forwarded("multipart-untouched", "multipart", form(MODEL, FILE), path=AUDIO, headers=MULTIPART),
    forwarded(
        "multipart-quoted-boundary",
        "multipart",
        form(MODEL, FILE),
        path=AUDIO,
        headers={"content-type": f'multipart/form-data; boundary="{BOUNDARY}"'},
    ),
    forwarded(
        "multipart-preamble-and-epilogue",
        "multipart",
        b"preamble\r\n" + form(MODEL, FILE) + b"epilogue",
        path=AUDIO,
        headers=MULTIPART,
    ),
    Case(
        "multipart-rewritten-keeps-file",
        "multipart",
        form(MODEL, part("timestamp_granularities[]", b"word"), FILE),
        path=AUDIO,
        headers={**MULTIPART, **REWRITE},
        upstream_body=form(part("model", b"rw"), part("timestamp_granularities[]", b"word"), FILE),
    ),
    Case(
        "multipart-utf8-field-name-rewritten",
        "multipart",
        form(MODEL, part("langue-é", b"fr"), FILE),
        path=AUDIO,
        headers={**MULTIPART, **REWRITE},
        upstream_body=form(part("model", b"rw"), part("langue-é", b"fr"), FILE),
    ),
    refused(
        "multipart-missing-file",
        "multipart",
        form(MODEL),
        400,
        "file",
        "Missing required parameter: 'file'",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-missing-boundary",
        "multipart",
        form(MODEL, FILE),
        "has no boundary",
        path=AUDIO,
        headers={"content-type": "multipart/form-data"},
    ),
    invalid(
        "multipart-wrong-boundary",
        "multipart",
        form(MODEL, FILE),
        "does not contain its boundary",
        path=AUDIO,
        headers={"content-type": "multipart/form-data; boundary=other"},
    ),
    invalid(
        "multipart-duplicate-model",
        "multipart",
        form(MODEL, part("model", b"b"), FILE),
        "'model' appears more than once",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-truncated",
        "multipart",
        form(MODEL, FILE, close=False),
        "no closing boundary",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-truncated-mid-part",
        "multipart",
        form(MODEL, FILE)[:-40],
        "no closing boundary",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-part-without-name",
        "multipart",
        form(part(None, b"x"), MODEL, FILE),
        "a part has no name",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-non-utf8-field",
        "multipart",
        form(part("model", b"\xff\xfe"), FILE),
        "'model' is not valid UTF-8",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-part-without-separator",
        "multipart",
        NO_SEPARATOR,
        "no header/body separator",
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-empty-body",
        "multipart",
        b"",
        "the request body is empty",  # refused by Envoy, before its content type is read
        path=AUDIO,
        headers=MULTIPART,
    ),
    invalid(
        "multipart-garbage",
        "multipart",
        b"garbage",
        "does not contain its boundary",
        path=AUDIO,
        headers=MULTIPART,
    ),
    refused(
        "multipart-model-as-file",
        "multipart",
        form(part("model", b"x", "m.txt"), FILE),
        400,
        "model",
        "Invalid type for 'model'",
        path=AUDIO,
        headers=MULTIPART,
    ),
    refused(
        "multipart-oversized-file",
        "multipart",
        form(MODEL, part("file", b"\x00" * 70_000, "a.wav", "audio/wav")),
        413,
        "request_body",
        TOO_LARGE,
        path=AUDIO,
        headers=MULTIPART,
    ),
    refused(
        "multipart-oversized-chunked",
        "multipart",
        form(MODEL, part("file", b"\x00" * 70_000, "a.wav", "audio/wav")),
        413,
        "request_body",
        TOO_LARGE,
        path=AUDIO,
        headers=MULTIPART,
        chunked=True,
    ),
    forwarded(
        "multipart-stream-field",
        "multipart",
        form(MODEL, part("stream", b"true"), FILE),
        path=AUDIO,
        headers=MULTIPART,
    ),
    # ---- empty and blank bodies ----
    # No body at all: Envoy refuses it before any ext_proc message (one message per request, the default).
    invalid("empty-body", "empty", b"", "Invalid request: the request body is empty"),
    invalid("empty-body-chunked", "empty", b"", "the request body is empty", chunked=True),
    invalid("whitespace-only", "empty", b" \t\r\n  ", "the request body is empty"),
    invalid("empty-embeddings", "empty", b"", "the request body is empty", path=EMBEDDINGS),
    invalid("newlines-only-moderations", "empty", b"\n\n", "the request body is empty", path=MODERATIONS),
    # ---- query strings and path tricks: still hooked (the rewrite reaches the upstream) ----
    rewritten(
        "query-junk-percent-ff",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path=CHAT + "?x=%ff&y=%00&&=&z",
    ),
    rewritten(
        "double-leading-slash",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="//v1/chat/completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "inner-double-slash",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1//chat//completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "escaped-slash",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/chat%2Fcompletions",
        upstream_path=CHAT,
    ),
    rewritten(
        "escaped-slash-lowercase",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1%2fchat%2fcompletions",
        upstream_path=CHAT,
    ),
    rewritten(
        "trailing-slash",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path=CHAT + "/",
        upstream_path=CHAT + "/",
    ),
    rewritten(
        "escaped-letter",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/chat/%63ompletions",
        upstream_path=CHAT,
    ),
    rewritten(
        "escaped-prefix",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/%76%31/chat/completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "dot-dot-segment",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/x/../chat/completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "escaped-dot-dot-segment",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/chat/x/%2e%2e/completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "dot-segment",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/./chat/completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "backslash",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/v1/chat\\completions",
        upstream_path=CHAT,
    ),
    rewritten(
        "no-v1-prefix",
        "path",
        OK,
        {"model": "rw", "messages": MSGS_JSON},
        path="/chat/completions",
        upstream_path="/chat/completions",
    ),
    rewritten(
        "embeddings-query-junk",
        "path",
        b'{"model":"m","input":"x"}',
        {"model": "rw", "input": "x"},
        path=EMBEDDINGS + "?%zz=%",
    ),
    Case(
        "escaped-nul-in-path",
        "path",
        OK,
        400,
        path=CHAT + "%00",
        error=Err(REQ, None, ""),
        upstream="never",
    ),
    Case(
        "get-is-not-hooked", "path", b"{", method="GET", upstream="exact", response_has=(b'"method":"GET"',)
    ),
    # ---- the Responses and Messages APIs: malformed items, wrong block types, huge inputs ----
    invalid("responses-truncated", "agent-apis", b'{"model":"m","input":[{"role":"user",', path=RESPONSES),
    invalid("messages-truncated", "agent-apis", b'{"model":"m","messages":[', path=MESSAGES),
    invalid("messages-array-body", "agent-apis", b"[1]", "got an array", path=ANTHROPIC),
    refused(
        "responses-input-a-number",
        "agent-apis",
        b'{"model":"m","input":42}',
        400,
        "input",
        "/responses: Invalid type for 'input': expected a string or an array.",
        path=RESPONSES,
    ),
    refused(
        "messages-without-messages",
        "agent-apis",
        b'{"model":"m","max_tokens":8}',
        400,
        "messages",
        "messages: Field required",
        path=MESSAGES,
    ),
    refused(
        "messages-system-a-number",
        "agent-apis",
        b'{"model":"m","max_tokens":8,"system":5,' + MSGS + b"}",
        400,
        "system",
        "system: Input should be a string or an array of content blocks",
        path=MESSAGES,
    ),
    refused(
        "messages-max-tokens-a-boolean",
        "agent-apis",
        b'{"model":"m","max_tokens":true,' + MSGS + b"}",
        400,
        "max_tokens",
        "max_tokens: Input should be an integer",
        path=ANTHROPIC,
    ),
    forwarded(  # the upstream judges items it knows; the sidecar reads what it can and passes the rest
        "responses-malformed-items",
        "agent-apis",
        b'{"model":"m","input":[1,null,"x",{"type":"weird"},{"role":"user","content":[7,{"type":"input_text"}]}]}',
        path=RESPONSES,
    ),
    forwarded(
        "messages-wrong-block-types",
        "agent-apis",
        b'{"model":"m","max_tokens":8,"messages":[{"role":"user","content":[5,{"type":"image","source":"x"},'
        b'{"type":"text","text":7},{"type":"tool_result","content":{"a":1}}]}]}',
        path=MESSAGES,
    ),
    forwarded("responses-at-limit", "agent-apis", sized(LIMIT, RESPONSES), path=RESPONSES),
    refused(
        "responses-over-limit", "agent-apis", sized(LIMIT + 1, RESPONSES), 413, "request_body", TOO_LARGE,
        path=RESPONSES,
    ),
    refused(
        "messages-300k-chunked", "agent-apis", sized(300_000, MESSAGES), 413, "request_body", TOO_LARGE,
        path=MESSAGES, chunked=True,
    ),
    rewritten(
        "responses-rewritten",
        "agent-apis",
        b'{"model":"m","input":"hi","metadata":{"k":"v"}}',
        {"model": "rw", "input": "hi", "metadata": {"k": "v"}},
        path=RESPONSES,
    ),
    rewritten(
        "messages-rewritten-keeps-client-metadata",
        "agent-apis",
        b'{"model":"m","max_tokens":8,"metadata":{"user_id":"u"},' + MSGS + b"}",
        {"model": "rw", "max_tokens": 8, "metadata": {"user_id": "u"}, "messages": MSGS_JSON},
        path=ANTHROPIC,
    ),
    # ---- upstream answers that are not JSON, with success and failure hooks configured ----
    answered("text-200"),
    answered("text-500"),
    answered("html-502"),
    answered("json-truncated-200"),
    answered("json-garbage-500"),
    answered("json-array-200"),
    answered("json-nan-200"),
    answered("json-bigint-200"),
    answered("empty-200"),
    answered("empty-500"),
    answered("text-200", EMBEDDINGS, b'{"model":"m","input":"x"}'),
    answered("text-500", AUDIO, form(MODEL, FILE), headers=MULTIPART),
    answered("json-deep-200"),
    answered("json-deep-500"),
    answered("json-bigint-400"),
    answered("json-huge-usage-200"),
    # ---- SSE answers through the streaming hooks (FULL_DUPLEX_STREAMED) ----
    answered("sse-ok", sse_valid=True),
    answered("sse-ok", COMPLETIONS, b'{"model":"m","prompt":"p","stream":true}', sse_valid=True),
    answered("sse-malformed"),  # what no hook can read goes on as it came
    answered("sse-split-mid-event", sse_valid=True),
    answered("sse-crlf-and-cr"),
    answered("sse-status-500"),  # an error status: the failure path, passed through as it came
    answered("sse-no-done", response=ANSWERS["sse-no-done"].body + DONE, sse_valid=True),
    answered("sse-error-event", response=ANSWERS["sse-error-event"].body + DONE),
    answered(
        "sse-no-final-blank-line",
        response=None,
        sse_valid=True,
    ),
    answered(
        "sse-huge-event",
        response=None,
        response_has=(b"exceeds the limit of 65536", b'"code":"500"'),
        sse_valid=True,
    ),
    answered("sse-truncated-mid-event", response=None, reset=True),
    answered("sse-truncated-between-events", response=None, reset=True),
]


def by_category() -> dict[str, list[Case]]:
    out: dict[str, list[Case]] = {}
    for case in CASES:
        out.setdefault(case.category, []).append(case)
    return out


ATTACKS = Path(__file__).parent / "attacks"
_FINDING = re.compile(r"^([SML]\d+)\.\s+(.*)")


def attacks() -> list[tuple[str, str, str, str]]:
    """(module, finding, test, what must hold) for every attack test whose docstring names a finding."""
    found = []
    for path in sorted(ATTACKS.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                doc = ast.get_docstring(node) or ""
                match = _FINDING.match(" ".join(doc.split()))
                if match:
                    found.append((path.stem.removeprefix("test_"), match[1], node.name, match[2]))
    return found


def _render_attacks() -> list[str]:
    found = attacks()
    lines = [
        "# Attacks and faults",
        "",
        f"{len(found)} tests in `tests/hostile/attacks/`, each with a stack of its own, named by the finding",
        "it guards.",
    ]
    area = None
    for module, finding, test, holds in found:
        if module != area:
            area = module
            lines += ["", f"## {module}", ""]
        lines.append(f"- **{finding}** `{test}`: {holds}")
    return [*lines, ""]


def render() -> str:
    """CASES.md: the corpus by category, then the attack tests (regenerate with
    `python -m tests.hostile.table`)."""
    groups = by_category()
    known = sum(1 for case in CASES if case.xfail)
    lines = [
        "# Hostile input corpus",
        "",
        "Generated from `tests/hostile/table.py` by `python -m tests.hostile.table > tests/hostile/CASES.md`;",
        "`tests/hostile/test_corpus.py` fails when this file is not current.",
        "",
        f"{len(CASES)} cases in {len(groups)} categories; {known} known bugs (xfail, strict).",
        "",
    ]
    for category, cases in groups.items():
        lines.append(f"## {category} ({len(cases)})")
        lines.append("")
        for case in cases:
            outcome = f"{case.status}"
            if case.error is not None:
                outcome += f" {case.error.type} param={case.error.param}"
            elif case.reset:
                outcome = "stream cut"
            if case.upstream == "never":
                outcome += ", upstream not reached"
            elif case.upstream == "exact":
                outcome += ", reaches upstream byte-exact"
            flag = " **known bug**" if case.xfail else ""
            lines.append(f"- `{case.name}`: {case.method} `{case.path}` -> {outcome}{flag}")
        lines.append("")
    return "\n".join(lines + _render_attacks())


if __name__ == "__main__":
    print(render(), end="")

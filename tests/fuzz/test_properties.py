"""Property tests: the error envelope for any status and detail, and the body codecs' round trips.

(The SSE decoder's properties live in tests/unit/test_sse.py.) Inputs that once broke the code are
pinned down as explicit examples below each property.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from extproc.api.codecs import JsonCodec, MultipartCodec
from extproc.api.openai import reply_for
from extproc.api.openai import reply_for as from_exception
from extproc.errors import (
    ClientDisconnected,
    HTTPException,
    ProxyException,
    RejectedRequestError,
    UpstreamError,
    error_type,
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I64_MIN, U64_MAX = -(2**63), 2**64 - 1

# ---- JSON-shaped values (what a hook's `detail` or a request body holds) ----
text = st.text(max_size=30)
numbers = st.integers(I64_MIN, U64_MAX) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=25,
)
json_objects = st.dictionaries(text, json_values, max_size=6)


def check_envelope(body: bytes, status: int) -> dict[str, Any]:
    document = orjson.loads(body)
    assert set(document) == {"error"}, document
    error = document["error"]
    assert (
        {"message", "type", "param", "code"}
        <= set(error)
        <= {
            "message",
            "type",
            "param",
            "code",
            "provider_specific_fields",
        }
    ), error
    assert isinstance(error["message"], str)
    assert error["code"] == str(status)
    assert error["type"] == error_type(status)
    assert error["param"] is None or isinstance(error["param"], str)
    result: dict[str, Any] = error
    return result


# ---- the error mapper ----
details = (
    st.none()
    | text
    | st.integers()  # a plain number becomes its text, whatever its size
    | st.floats()
    | json_objects
    | st.builds(lambda error, rest: {"error": error, **rest}, json_values, json_objects)
    | st.builds(lambda message, rest: {"error": {"message": message, **rest}}, json_values, json_objects)
)


# Response headers a hook may set: RFC 9110 names, no framing or connection headers, no CR/LF/NUL.
FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
FRAMING |= {"proxy-connection", "host"}


def settable(name: str, value: str) -> bool:
    return bool(FIELD_NAME.fullmatch(name)) and name not in FRAMING and not set(value) & {"\r", "\n", "\0"}


@FAST
@given(status=st.integers(400, 599), detail=details, headers=st.dictionaries(text, text, max_size=3))
def test_any_http_exception_maps_to_an_envelope(status, detail, headers):
    reply = from_exception(HTTPException(status, detail, headers))
    assert reply.status == status
    error = check_envelope(reply.body, status)
    if isinstance(detail, dict):
        assert error["provider_specific_fields"] == orjson.loads(orjson.dumps(detail))
        inner = detail.get("error", detail)
        if isinstance(inner, str):
            assert error["message"] == inner
    else:
        assert "provider_specific_fields" not in error
        assert error["message"] == (
            "" if detail is None else detail if isinstance(detail, str) else str(detail)
        )
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    assert dict(reply.headers) == {k: v for k, v in lowered.items() if settable(k, v)}


@FAST
@given(status=st.integers().filter(lambda s: not 400 <= s <= 599), detail=details)
def test_a_status_that_is_not_an_error_becomes_500(status, detail):
    reply = from_exception(HTTPException(status, detail))
    assert reply.status == 500
    check_envelope(reply.body, 500)


class DuckTyped(Exception):
    """fastapi's and starlette's exceptions are recognised by shape only."""

    def __init__(self, status_code: Any, detail: Any) -> None:
        super().__init__("duck")
        self.status_code = status_code
        self.detail = detail


@FAST
@given(status=st.integers(-(10**6), 10**6) | st.booleans(), detail=details)
def test_duck_typed_exceptions_map_to_an_envelope(status, detail):
    reply = reply_for(DuckTyped(status, detail))
    expected = int(status) if 400 <= int(status) <= 599 else 500
    assert reply.status == expected
    check_envelope(reply.body, expected)


@FAST
@given(message=text, status=st.integers(100, 599), param=st.none() | text, kind=st.none() | text)
def test_proxy_exceptions_keep_their_fields(message, status, param, kind):
    reply = reply_for(ProxyException(message, status, param, kind))
    document = orjson.loads(reply.body)["error"]
    assert reply.status == status
    assert document == {
        "message": message,
        "type": kind or error_type(status),
        "param": param,
        "code": str(status),
    }


@FAST
@given(
    exc=st.builds(ValueError, text)
    | st.builds(RuntimeError, text)
    | st.builds(KeyError, text)
    | st.builds(lambda m, d: RejectedRequestError(m, d), text, json_objects)
    | st.builds(lambda s, b: UpstreamError(s, b), st.integers(400, 599), json_values)
    | st.just(ClientDisconnected())
)
def test_any_other_exception_maps_to_an_envelope(exc):
    reply = reply_for(exc)
    expected = getattr(exc, "status_code", None) if hasattr(exc, "detail") else 500
    assert reply.status == (expected or 500)
    error = check_envelope(reply.body, reply.status)
    assert error["message"]  # never empty: the exception's text or its type's name


@pytest.mark.parametrize(
    "detail",
    [
        pytest.param({403: "forbidden"}, id="int-dict-key"),
        pytest.param({"error": "x", "limit": 2**64}, id="int-beyond-64-bits"),
        pytest.param({"error": "x", "tags": {"a", "b"}}, id="a-set"),
        pytest.param({"error": b"raw bytes"}, id="bytes-message"),
        pytest.param("\ud800 lone surrogate", id="lone-surrogate-str"),
    ],
)
def test_a_detail_orjson_cannot_encode_still_maps_to_an_envelope(detail):
    reply = from_exception(HTTPException(403, detail))
    check_envelope(reply.body, 403)


# ---- codecs ----
JSON_TYPE = "application/json"


@FAST
@given(json_objects)
def test_json_codec_round_trips_any_object(obj):
    codec = JsonCodec(max_depth=64)
    body = orjson.dumps(obj)
    decoded = codec.decode(body, JSON_TYPE)
    assert decoded == obj
    assert codec.decode(codec.encode(decoded, JSON_TYPE), JSON_TYPE) == obj


exact_ints = st.integers(I64_MIN, U64_MAX) | st.integers(min_value=10**19) | st.integers(max_value=-(10**19))
exact_values = st.recursive(
    st.none() | exact_ints | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=15,
)


@FAST
@given(st.dictionaries(text, exact_values, min_size=1, max_size=4))
def test_json_codec_keeps_integers_exact(obj):
    """Integers beyond 64 bits decode and re-encode exactly (the stdlib writes them; orjson cannot)."""
    codec = JsonCodec(max_depth=64)
    body = json.dumps(obj, separators=(",", ":")).encode()
    decoded = codec.decode(body, JSON_TYPE)
    assert decoded == obj and _same_types(decoded, obj)
    again = codec.decode(codec.encode(decoded, JSON_TYPE), JSON_TYPE)
    assert again == obj and _same_types(again, obj)


def _same_types(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b)


@pytest.mark.parametrize(
    "value", [I64_MIN - 1, -(10**19) + 1], ids=["i64-min-minus-one", "19-nines-negative"]
)
def test_negative_integers_below_i64_stay_exact(value):
    codec = JsonCodec(max_depth=8)
    decoded = codec.decode(b'{"seed":%d}' % value, JSON_TYPE)
    assert decoded["seed"] == value and isinstance(decoded["seed"], int)
    assert codec.encode(decoded, JSON_TYPE) == b'{"seed":%d}' % value


BOUNDARY = "fuzz-b0undary"
MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
DELIMITER = b"\r\n--" + BOUNDARY.encode()
# ASCII field and file names, without quote, backslash or line break, and no `[]` list suffix (non-ASCII
# and escaped names are the explicit examples below).
names = st.text(st.characters(codec="ascii", exclude_characters='"\\\r\n'), min_size=1, max_size=12).filter(
    lambda n: not n.endswith("[]") and n != "file"
)


def multipart_body(fields: dict[str, str], filename: str, file_type: str, content: bytes) -> bytes:
    out = b""
    for name, value in fields.items():
        out += b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
            BOUNDARY.encode(),
            name.encode(),
            value.encode(),
        )
    out += (
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
        % (
            BOUNDARY.encode(),
            filename.encode(),
            file_type.encode(),
        )
    )
    return out + content + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"


@FAST
@given(
    fields=st.dictionaries(names, st.text(max_size=40), max_size=5),
    filename=names,
    file_type=st.sampled_from(["audio/wav", "audio/mpeg", "application/octet-stream"]),
    content=st.binary(max_size=300),
    new_model=st.text(max_size=20),
)
def test_multipart_round_trips_byte_identically(fields, filename, file_type, content, new_model):
    body = multipart_body(fields, filename, file_type, content)
    assume(all(DELIMITER not in piece for piece in [content, *(v.encode() for v in fields.values())]))
    assume(all(b"--" + BOUNDARY.encode() not in v.encode() for v in [new_model, *fields.values()]))
    codec = MultipartCodec()
    data = codec.decode(body, MULTIPART_TYPE)
    assert {k: v for k, v in data.items() if k != "file"} == fields
    assert (data["file"].filename, data["file"].content_type, data["file"].content) == (
        filename,
        file_type,
        content,
    )
    assert codec.encode(data, MULTIPART_TYPE) == body
    # A changed field is written back, every other part as it came.
    data["model"] = new_model
    changed = codec.decode(codec.encode(data, MULTIPART_TYPE), MULTIPART_TYPE)
    assert changed["model"] == new_model
    assert changed["file"].content == content
    assert {k: v for k, v in changed.items() if k not in ("file", "model")} == {
        k: v for k, v in fields.items() if k != "model"
    }


def test_a_field_name_with_an_escaped_quote_round_trips():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="a\\"b"\r\n\r\nv\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nX\r\n--B--\r\n'
    )
    codec = MultipartCodec()
    data = codec.decode(body, "multipart/form-data; boundary=B")
    assert 'a"b' in data
    assert codec.encode(data, "multipart/form-data; boundary=B") == body


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        pytest.param("langue-é", "speech.wav", id="utf8-field-name"),
        pytest.param("x", "résumé.mp3", id="utf8-filename"),
    ],
)
def test_utf8_names_decode_and_round_trip(name, filename):
    body = multipart_body({name: "v"}, filename, "audio/wav", b"RIFF")
    codec = MultipartCodec()
    data = codec.decode(body, MULTIPART_TYPE)
    assert name in data and data["file"].filename == filename
    data["model"] = "changed"
    assert codec.decode(codec.encode(data, MULTIPART_TYPE), MULTIPART_TYPE)[name] == "v"


RAISES_UNENCODABLE = """
from extproc import CustomLogger, HTTPException


class Refuser(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        raise HTTPException(status_code=403, detail={403: "forbidden", "error": "no access"})


handler = Refuser()
"""


class NoOutbox:
    async def push(self, reply: Any) -> bool:
        return False

    async def extend_timeout(self, seconds: float) -> None:
        return None

    async def stream(self, body: bytes, end_of_stream: bool, metadata: Any = None) -> bool:
        return False


async def test_a_hooks_unencodable_detail_keeps_its_status(tmp_path):
    from extproc.decisions import Message, Reply
    from extproc.request import pipeline
    from extproc.request.session import Session
    from extproc.types import Phase

    (tmp_path / "refuser.py").write_text(RAISES_UNENCODABLE)
    (tmp_path / "config.yaml").write_text("litellm_settings:\n  callbacks: refuser.handler\n")
    session = Session(pipeline.load(tmp_path / "config.yaml"), NoOutbox())
    headers = {":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json"}
    await session.handle(Phase.REQUEST_HEADERS, Message(headers, b"", False))
    try:
        decision, more = await session.handle(
            Phase.REQUEST_BODY, Message({}, b'{"model":"m","messages":[]}', True)
        )
    finally:
        session.close()
    assert isinstance(decision, Reply) and decision.status == 403 and not more
    check_envelope(decision.body, 403)

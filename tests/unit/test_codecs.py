import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.api.codecs import BodyError, JsonCodec, MultipartCodec, depth_of
from extproc.api.endpoints import RouteTable, unhooked_llm_call
from extproc.api.multipart import MultipartBody, MultipartError, UploadedFile
from extproc.types import CallType

BOUNDARY = "----b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(*parts: tuple[str, str | tuple[str, str, bytes]]) -> bytes:
    out = b""
    for name, value in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        if isinstance(value, tuple):
            filename, ctype, content = value
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n"
            ).encode() + content
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
        out += b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


AUDIO = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"


def reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(alphabet='ab{}[]"\\ \n'),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='k{["\\'), children, max_size=3)
    ),
    max_leaves=30,
)


@given(json_values)
def test_depth_matches_the_structure(value):
    assert depth_of(value) == reference_depth(value)


def test_a_body_built_to_make_a_string_scan_quadratic_is_answered_at_once():
    import time

    body = b"{" + b"[" * 40 + b'"' + b'\\"' * 200_000  # unterminated: a backtracking string scan is O(n^2)
    started = time.process_time()
    with pytest.raises(BodyError):
        JsonCodec(max_depth=32).decode(body, "application/json")
    assert time.process_time() - started < 0.5


def test_json_codec_rejects_what_it_must():
    codec = JsonCodec(max_depth=5)
    for body, fragment in [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"{not json", "Invalid JSON payload"),
        (b"[1, 2]", "expected an object, got an array"),
        (b'"s"', "got a string"),
        (b"\xff\xfe{}", "Invalid JSON payload"),
        (b'{"a":' * 6 + b"1" + b"}" * 6, "nested deeper than 5"),
        (b'{"x": NaN}', "Invalid JSON payload"),
    ]:
        with pytest.raises(BodyError) as info:
            codec.decode(body, "application/json")
        assert info.value.status == 400
        assert fragment in info.value.message


def test_json_codec_brackets_inside_strings_do_not_count():
    codec = JsonCodec(max_depth=3)
    assert codec.decode(b'{"a": "[[[[[[{{{{{{"}', "application/json") == {"a": "[[[[[[{{{{{{"}


@pytest.mark.parametrize(
    "ctype",
    [
        "application/json",
        "application/json; charset=utf-8",
        "",
        "application/vnd.api+json",
        "Application/JSON",
    ],
)
def test_json_codec_accepts(ctype):
    assert JsonCodec(8).accepts(ctype)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_codec_refuses(ctype):
    assert not JsonCodec(8).accepts(ctype)


def test_multipart_parses_fields_and_keeps_file_bytes():
    body = multipart(("model", "whisper-1"), ("file", ("a.wav", "audio/wav", AUDIO)), ("language", "en"))
    data = MultipartCodec().decode(body, CONTENT_TYPE)
    assert data["model"] == "whisper-1" and data["language"] == "en"
    upload = data["file"]
    assert isinstance(upload, UploadedFile)
    assert (upload.filename, upload.content_type, upload.content) == ("a.wav", "audio/wav", AUDIO)


def test_multipart_round_trip_is_byte_identical():
    body = multipart(
        ("model", "whisper-1"),
        ("file", ("a.wav", "audio/wav", AUDIO)),
        ("timestamp_granularities[]", "word"),
        ("timestamp_granularities[]", "segment"),
    )
    codec = MultipartCodec()
    data = codec.decode(body, CONTENT_TYPE)
    assert data["timestamp_granularities[]"] == ["word", "segment"]
    assert codec.encode(data, CONTENT_TYPE) == body


def test_multipart_changed_field_keeps_file_part():
    body = multipart(("model", "whisper-1"), ("file", ("a.wav", "audio/wav", AUDIO)))
    codec = MultipartCodec()
    data = codec.decode(body, CONTENT_TYPE)
    data["model"] = "whisper-large"
    new = codec.encode(data, CONTENT_TYPE)
    again = codec.decode(new, CONTENT_TYPE)
    assert again["model"] == "whisper-large" and again["file"].content == AUDIO
    assert new == multipart(("model", "whisper-large"), ("file", ("a.wav", "audio/wav", AUDIO)))


@pytest.mark.parametrize(
    ("body", "ctype", "fragment"),
    [
        (multipart(("a", "1"), ("a", "2")), CONTENT_TYPE, "more than once"),
        (multipart(("a", "1"))[:-10], CONTENT_TYPE, "truncated"),
        (b"no boundary here", CONTENT_TYPE, "does not contain its boundary"),
        (multipart(("a", "1")), "multipart/form-data", "no boundary"),
        (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
            CONTENT_TYPE,
            "no name",
        ),
        (multipart(("a", "1")).replace(b"1", b"\xff"), CONTENT_TYPE, "not valid UTF-8"),
    ],
)
def test_multipart_errors(body, ctype, fragment):
    with pytest.raises(BodyError) as info:
        MultipartCodec().decode(body, ctype)
    assert info.value.status == 400 and fragment in info.value.message


def test_multipart_refuses_a_value_containing_the_boundary():
    parsed = MultipartBody.parse(multipart(("a", "1")), CONTENT_TYPE)
    parsed.fields[0] = ("a", f"x\r\n--{BOUNDARY}\r\n")
    with pytest.raises(MultipartError):
        parsed.encode()


@pytest.mark.parametrize(
    ("path", "call_type"),
    [
        ("/v1/chat/completions", CallType.COMPLETION),
        ("/chat/completions", CallType.COMPLETION),
        ("/v1/chat/completions?api-version=1", CallType.COMPLETION),
        ("/v1/chat/completions/", CallType.COMPLETION),
        ("/v1/completions", CallType.TEXT_COMPLETION),
        ("/embeddings", CallType.EMBEDDINGS),
        ("/v1/images/generations", CallType.IMAGE_GENERATION),
        ("/v1/moderations", CallType.MODERATION),
        ("/v1/audio/transcriptions", CallType.AUDIO_TRANSCRIPTION),
    ],
)
def test_route_table_matches(path, call_type):
    endpoint = RouteTable(8).match(path)
    assert endpoint is not None and endpoint.call_type is call_type


@pytest.mark.parametrize(
    "path", ["/v1/models", "/v2/chat/completions", "/v1/chat", "/", "/v1/chat/completionsx"]
)
def test_route_table_leaves_other_paths(path):
    assert RouteTable(8).match(path) is None


def test_big_integers_survive_decode_and_encode():
    codec = JsonCodec(max_depth=8)
    body = b'{"seed": 123456789012345678901234567890, "n": -98765432109876543210, "f": 1.5}'
    data = codec.decode(body, "application/json")
    assert data["seed"] == 123456789012345678901234567890 and data["n"] == -98765432109876543210
    data["model"] = "x"
    assert b'"seed":123456789012345678901234567890' in codec.encode(data, "application/json")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 12345678901234567890123, "b": NaN}',
        b'{"a": 123456789012345678901, "b": Infinity}',
        b'{"a": 123456789012345678901234,}',
        b'{"a": 123456789012345678901234, "b": "\\xff"}'.replace(b"\\xff", b"\xff"),
    ],
)
def test_the_exact_path_refuses_what_orjson_refuses(body):
    with pytest.raises(BodyError) as info:
        JsonCodec(8).decode(body, "application/json")
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("path", "method", "refused"),
    [
        ("/v1/chat/completions", "POST", False),  # hooked
        ("/V1/Chat/Completions?x=1", "POST", True),  # another spelling of a hooked endpoint
        ("/v1/chat/completions.json", "POST", True),
        ("/v1/chat/completions", "PUT", True),
        ("/v1/chat/completions", "GET", False),  # bodyless methods carry no request for a model
        ("/v1/responses/resp_1", "DELETE", False),
        ("/api/orders", "POST", False),  # not an LLM path
    ],
)
def test_the_sidecar_refuses_what_the_generated_routes_refuse(path, method, refused):
    hooked = RouteTable(64).match(path) is not None
    assert unhooked_llm_call(path, method, hooked) is refused

import orjson
import pytest

from extproc.api.openai import envelope
from extproc.api.openai import reply_for as from_exception
from extproc.errors import HTTPException, error_type


def body_of(reply):
    return orjson.loads(reply.body)["error"]


def test_http_exception_with_error_dict_detail():
    reply = from_exception(HTTPException(400, {"error": "Violated content safety policy"}))
    error = body_of(reply)
    assert reply.status == 400
    assert error["message"] == "Violated content safety policy"
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "400"
    assert error["param"] is None
    assert error["provider_specific_fields"] == {"error": "Violated content safety policy"}


def test_http_exception_with_string_detail_has_no_provider_fields():
    reply = from_exception(HTTPException(403, "not yours"))
    error = body_of(reply)
    assert (reply.status, error["message"], error["type"]) == (403, "not yours", "permission_error")
    assert "provider_specific_fields" not in error


def test_duck_typed_http_exception_like_fastapis():
    class FastAPIHTTPException(Exception):
        def __init__(self, status_code, detail=None, headers=None):
            self.status_code, self.detail, self.headers = status_code, detail, headers

    reply = from_exception(FastAPIHTTPException(429, "slow down", {"Retry-After": "3"}))
    assert reply.status == 429
    assert body_of(reply)["type"] == "throttling_error"
    assert ("retry-after", "3") in reply.headers


def test_plain_exception_is_500_with_its_text():
    reply = from_exception(ValueError("boom"))
    error = body_of(reply)
    assert (reply.status, error["message"], error["type"]) == (500, "boom", "internal_server_error")


def test_out_of_range_status_becomes_500():
    assert from_exception(HTTPException(42, "odd")).status == 500


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "auth_error"),
        (403, "permission_error"),
        (429, "throttling_error"),
        (404, "invalid_request_error"),
        (500, "internal_server_error"),
        (503, "internal_server_error"),
    ],
)
def test_type_by_status(status, kind):
    assert error_type(status) == kind


def test_envelope_shape_is_exact():
    body = envelope(400, "bad", param="messages")
    assert orjson.loads(body) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": "400"}
    }

"""Which key a request names: one key, however many headers carry it; two different keys are refused."""

import pytest

from extproc.errors import ProxyException
from extproc.settings.auth import raw_key_of


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({"authorization": "Bearer sk-1"}, "sk-1"),
        ({"authorization": "bearer  sk-1 "}, "sk-1"),
        ({"api-key": "sk-1"}, "sk-1"),
        ({"x-api-key": "sk-1", "authorization": "Bearer sk-1"}, "sk-1"),
        ({}, None),
    ],
)
def test_one_key(headers, key):
    assert raw_key_of(headers) == key


@pytest.mark.parametrize(
    "headers",
    [
        {"api-key": "sk-1", "authorization": "Bearer junk"},
        {"x-api-key": "sk-1", "api-key": "sk-2"},
        {"authorization": "Bearer sk-1,Bearer junk"},  # Envoy joins a repeated header with a comma
    ],
)
def test_two_keys_are_refused(headers):
    with pytest.raises(ProxyException) as info:
        raw_key_of(headers)
    assert info.value.status_code == 401

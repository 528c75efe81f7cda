"""Structured logs: the JSON shape, request ids through contextvars, and secrets scrubbed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime

import pytest

from extproc.telemetry.logs import (
    REDACTED,
    REQUEST_ID,
    bind_request_id,
    current_request_id,
    scrub,
    setup_logging,
)

log = logging.getLogger("extproc.test_logs")


@pytest.fixture
def output():
    """Our handler on the root logger, writing to a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        if handler not in saved_handlers:
            root.removeHandler(handler)
    root.setLevel(saved_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line(output):
    setup_logging("info", json=True, stream=output)
    log.info("hello %s", "world")
    log.debug("not at info level")
    (line,) = lines(output)
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == ("info", "extproc.test_logs", "hello world")
    assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0


def test_exceptions_go_in_an_exc_field(output):
    setup_logging("info", json=True, stream=output)
    try:
        raise ValueError("the handler broke with key sk-abcdefghijklmnop1234")
    except ValueError:
        log.exception("hook failed")
    (line,) = lines(output)
    assert line["message"] == "hook failed"
    assert line["exc"].startswith("Traceback (most recent call last)")
    assert "ValueError: the handler broke with key sk-" in line["exc"]
    assert "abcdefghijklmnop1234" not in line["exc"]


def test_extra_fields_are_written_and_scrubbed(output):
    setup_logging("info", json=True, stream=output)
    log.info("reloaded", extra={"reloads": 3, "headers": {"x-api-key": "k-123456789"}})
    (line,) = lines(output)
    assert line["reloads"] == 3
    assert line["headers"] == {"x-api-key": REDACTED}


def test_request_id_follows_each_request_across_awaits(output):
    setup_logging("info", json=True, stream=output)

    async def background() -> None:
        await asyncio.sleep(0)
        log.info("from a task the request started")

    async def request(request_id: str, delay: float) -> None:
        bind_request_id(request_id)
        await asyncio.sleep(delay)
        log.info("after an await")
        await asyncio.create_task(background())  # tasks copy the context they start in

    async def main() -> None:
        await asyncio.gather(request("req-a", 0.02), request("req-b", 0.0))
        log.info("outside any request")

    asyncio.run(main())
    seen = [(line.get("request_id"), line["message"]) for line in lines(output)]
    assert seen == [
        ("req-b", "after an await"),
        ("req-b", "from a task the request started"),
        ("req-a", "after an await"),
        ("req-a", "from a task the request started"),
        (None, "outside any request"),
    ]
    assert current_request_id() is None


def test_an_explicit_request_id_wins(output):
    setup_logging("info", json=True, stream=output)
    token = bind_request_id("bound")
    try:
        log.info("explicit", extra={"request_id": "given"})
        log.info("bound")
    finally:
        REQUEST_ID.reset(token)
    assert [line["request_id"] for line in lines(output)] == ["given", "bound"]


SECRETS = [
    ("Authorization: Bearer abcDEF123.456-xyz", "abcDEF123.456-xyz"),
    ("calling with sk-proj-AbCdEf0123456789xyz", "AbCdEf0123456789xyz"),
    ("key=sk-ant-api03-abcdefghijkl", "api03-abcdefghijkl"),
    ("{'x-api-key': 'plainsecret42', 'content-type': 'application/json'}", "plainsecret42"),
    ('{"api-key": "another-secret"}', "another-secret"),
    ("api_key=zzz999yyy", "zzz999yyy"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "eyJzdWIiOiIxIn0"),
    ("proxy-authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_scrub_removes_credentials(text, secret):
    scrubbed = scrub(text)
    assert secret not in scrubbed
    assert REDACTED in scrubbed


@pytest.mark.parametrize(
    "text",
    ["task-runner finished", "use sk-learn", "content-type: application/json", "model gpt-4o, 12 tokens"],
)
def test_scrub_leaves_ordinary_text_alone(text):
    assert scrub(text) == text


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_no_secret_reaches_either_format(output, text, secret):
    setup_logging("info", json=True, stream=output)
    log.warning("upstream said: %s", text)
    setup_logging("info", json=False, stream=output)
    log.warning("upstream said: %s", text)
    assert secret not in output.getvalue()
    assert output.getvalue().count(REDACTED) >= 2


def test_text_format_for_humans(output):
    setup_logging("warning", json=False, stream=output)
    token = bind_request_id("req-9")
    try:
        log.warning("slow hook")
        log.info("below the level")
    finally:
        REQUEST_ID.reset(token)
    (line,) = output.getvalue().splitlines()
    assert line.endswith(" WARNING extproc.test_logs [req-9] slow hook")


def test_setting_up_again_replaces_the_handler(output):
    root = logging.getLogger()
    before = len(root.handlers)
    setup_logging("info", json=True, stream=output)
    setup_logging("info", json=True, stream=output)
    assert len(root.handlers) == before + 1
    log.info("once")
    assert len(lines(output)) == 1

"""`llm-extproc try`: the real Session on a saved request and answer, without Envoy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from helpers import SEED_MODERATION

from extproc.devtools import trial

MODEL_REWRITE = """
from extproc import CustomLogger

class MyCustomHandler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "my-new-model"
        return data

proxy_handler_instance = MyCustomHandler()
"""

STRING_REFUSAL = """
from extproc import CustomLogger

class Refuser(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if "forbidden" in str(data.get("messages")):
            return "I can't help with that."
        return data

proxy_handler_instance = Refuser()
"""


SUCCESS = """
from extproc import CustomLogger

class Exclaim(CustomLogger):
    async def async_post_call_success_hook(self, data, user_api_key_dict, response):
        response.choices[0].message.content += "!"

    async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response):
        return {"x-checked": "yes"}

proxy_handler_instance = Exclaim()
"""

ITERATOR = """
from extproc import CustomLogger

class Upper(CustomLogger):
    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        async for item in response:
            if item.choices and item.choices[0].delta.content:
                item.choices[0].delta.content = item.choices[0].delta.content.upper()
            yield item

class Breaks(CustomLogger):
    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        async for item in response:
            yield item
            raise ValueError("the stream hook broke")

upper, breaks = Upper(), Breaks()
"""

PER_CHUNK = """
from extproc import CustomLogger

class Count(CustomLogger):
    async def async_post_call_streaming_hook(self, user_api_key_dict, response):
        return f"<{len(response)}>"

proxy_handler_instance = Count()
"""

COUNTER = """
from extproc import CustomLogger

class Counter(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = f"call-{await cache.async_increment_cache('calls', 1)}"
        return data

proxy_handler_instance = Counter()
"""

FAILURE_SEEN = """
from extproc import CustomLogger

class Seen(CustomLogger):
    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict):
        return None

proxy_handler_instance = Seen()
"""


def chat(content: str, **extra) -> bytes:
    return orjson.dumps(
        {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": content}], **extra}
    )


def completion(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "gpt-3.5-turbo",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


def sse(*contents: str) -> bytes:
    events = [
        b"data: "
        + orjson.dumps(
            {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": c}}]}
        )
        + b"\n\n"
        for c in contents
    ]
    return b"".join(events) + b"data: [DONE]\n\n"


def streamed_contents(body: str) -> list[str]:
    out = []
    for line in body.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[len("data: ") :])
            if "choices" in chunk:
                out.append(chunk["choices"][0]["delta"]["content"])
    return out


def write(folder: Path, callbacks: str, files: dict[str, str], extra: str = "") -> Path:
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source))
    path = folder / "config.yaml"
    path.write_text(f"litellm_settings:\n  callbacks: {callbacks}\n{extra}")
    return path


def hooks_of(report) -> list[str]:
    return [call["hook"] for call in report["hooks"]]


async def test_model_rewrite_shows_the_changed_body(tmp_path):
    config = write(tmp_path, "h.proxy_handler_instance", {"h.py": MODEL_REWRITE})
    report = await trial.run(config, chat("hi"))
    assert report["exit_code"] == 0
    assert report["refusal"] is None
    assert hooks_of(report) == ["h.proxy_handler_instance.async_pre_call_hook"]
    upstream = report["upstream_request"]
    assert upstream["changed"] is True
    assert upstream["body"] == {**orjson.loads(chat("hi")), "model": "my-new-model"}
    sent = orjson.dumps(upstream["body"])
    assert upstream["headers_set"] == {"content-length": str(len(sent))}
    assert report["metadata"]["verdict"] == "modified"
    assert report["metadata"]["upstream_model"] == "my-new-model"


async def test_untouched_body_is_reported_unchanged(tmp_path):
    config = write(tmp_path, "h.proxy_handler_instance", {"h.py": STRING_REFUSAL})
    body = b'{"model":"m",  "messages":[{"role":"user","content":"fine"}]}'
    report = await trial.run(config, body)
    assert report["exit_code"] == 0
    assert report["upstream_request"]["changed"] is False
    assert report["upstream_request"]["body"] == orjson.loads(body)
    assert "sent upstream: unchanged" in trial.render(report)


async def test_string_refusal_names_the_hook_and_the_answer(tmp_path):
    config = write(
        tmp_path,
        "[h.proxy_handler_instance, seen.proxy_handler_instance]",
        {"h.py": STRING_REFUSAL, "seen.py": FAILURE_SEEN},
    )
    report = await trial.run(config, chat("something forbidden"))
    assert report["exit_code"] == trial.REFUSED_EXIT
    assert report["upstream_request"] is None
    refusal = report["refusal"]
    assert refusal["by"] == "h.proxy_handler_instance.async_pre_call_hook"
    assert (refusal["phase"], refusal["verdict"], refusal["status"]) == ("request", "refused", 200)
    assert refusal["body"]["object"] == "chat.completion"
    assert refusal["body"]["choices"][0]["message"]["content"] == "I can't help with that."
    # The failure hooks are told about the refusal, after the pre-call hook.
    assert hooks_of(report) == [
        "h.proxy_handler_instance.async_pre_call_hook",
        "seen.proxy_handler_instance.async_post_call_failure_hook",
    ]
    assert report["hooks"][0]["outcome"] == 'returned a string: "I can\'t help with that."'


@pytest.mark.parametrize("with_response", [False, True])
async def test_seed_moderation_refusal(tmp_path, with_response):
    config = write(tmp_path, "m.proxy_handler_instance", {"m.py": SEED_MODERATION})
    response = completion("hi there") if with_response else None
    report = await trial.run(config, chat("hello world"), response=response)
    assert report["exit_code"] == trial.REFUSED_EXIT
    refusal = report["refusal"]
    assert refusal["status"] == 400
    assert refusal["by"] == "m.proxy_handler_instance.async_moderation_hook"
    assert refusal["body"]["error"]["provider_specific_fields"] == {"error": "Violated content safety policy"}
    assert report["response"] is None  # no byte of the answer reaches the client
    outcome = "raised HTTPException: 400: {'error': 'Violated content safety policy'}"
    assert report["hooks"] == [{"hook": "m.proxy_handler_instance.async_moderation_hook", "outcome": outcome}]


async def test_moderation_pass_goes_through(tmp_path):
    config = write(tmp_path, "m.proxy_handler_instance", {"m.py": SEED_MODERATION})
    report = await trial.run(config, chat("hello there"), response=completion("hi"))
    assert report["exit_code"] == 0
    assert report["refusal"] is None
    assert report["response"]["changed"] is False
    assert report["hooks"] == [
        {"hook": "m.proxy_handler_instance.async_moderation_hook", "outcome": "returned None"}
    ]


async def test_success_hook_changes_the_response_and_adds_headers(tmp_path):
    config = write(tmp_path, "s.proxy_handler_instance", {"s.py": SUCCESS})
    report = await trial.run(config, chat("hi"), response=completion("hello"))
    assert report["exit_code"] == 0
    response = report["response"]
    assert response["body_mode"] == "BUFFERED"
    assert response["changed"] is True
    assert response["body"]["choices"][0]["message"]["content"] == "hello!"
    assert response["headers_added"] == {"x-checked": "yes"}
    assert report["metadata"]["total_tokens"] == 5
    assert hooks_of(report) == [
        "s.proxy_handler_instance.async_post_call_success_hook",
        "s.proxy_handler_instance.async_post_call_response_headers_hook",
    ]
    text = trial.render(report)
    assert "response to the client: 200, changed (BUFFERED)" in text
    assert "header added: x-checked: yes" in text


async def test_iterator_hook_on_an_sse_file(tmp_path):
    config = write(tmp_path, "i.upper", {"i.py": ITERATOR})
    report = await trial.run(config, chat("hi", stream=True), response=sse("hel", "lo"), sse=True)
    assert report["exit_code"] == 0
    response = report["response"]
    assert response["body_mode"] == "FULL_DUPLEX_STREAMED"
    assert streamed_contents(response["body"]) == ["HEL", "LO"]
    assert response["body"].endswith("data: [DONE]\n\n")
    assert response["stream_error"] is False
    assert report["hooks"] == [
        {"hook": "i.upper.async_post_call_streaming_iterator_hook", "outcome": "started"}
    ]


async def test_iterator_hook_that_breaks_ends_the_stream_with_an_error(tmp_path):
    config = write(tmp_path, "i.breaks", {"i.py": ITERATOR})
    report = await trial.run(config, chat("hi", stream=True), response=sse("a", "b", "c"), sse=True)
    assert report["exit_code"] == trial.REFUSED_EXIT
    response = report["response"]
    assert response["stream_error"] is True
    assert streamed_contents(response["body"]) == ["a"]
    assert "the stream hook broke" in response["body"]
    assert report["hooks"][1:] == [
        {
            "hook": "i.breaks.async_post_call_streaming_iterator_hook",
            "outcome": "raised ValueError: the stream hook broke",
            "at": [f"{tmp_path / 'i.py'}:15 in async_post_call_streaming_iterator_hook"],  # a crash: where
        }
    ]


async def test_per_chunk_hook_streams_chunk_by_chunk(tmp_path):
    config = write(tmp_path, "p.proxy_handler_instance", {"p.py": PER_CHUNK})
    report = await trial.run(config, chat("hi", stream=True), response=sse("ab", "cde"), sse=True)
    response = report["response"]
    assert response["body_mode"] == "STREAMED"
    assert streamed_contents(response["body"]) == ["<2>", "<5>"]
    assert len(report["hooks"]) == 2


async def test_a_path_that_is_not_hooked(tmp_path):
    config = write(tmp_path, "h.proxy_handler_instance", {"h.py": MODEL_REWRITE})
    report = await trial.run(config, b"{}", path="/v1/models")
    assert (report["hooked"], report["exit_code"], report["hooks"]) == (False, 0, [])
    assert "not hooked" in trial.render(report)


async def test_multipart_request_is_detected(tmp_path):
    config = write(tmp_path, "h.proxy_handler_instance", {"h.py": MODEL_REWRITE})
    body = (
        b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n'
        b"Content-Type: audio/mpeg\r\n\r\n\x00\x01\xff\r\n"
        b'--bnd\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--bnd--\r\n'
    )
    report = await trial.run(config, body, path="/v1/audio/transcriptions")
    assert report["request"]["headers"]["content-type"] == "multipart/form-data; boundary=bnd"
    assert report["exit_code"] == 0
    assert report["upstream_request"]["changed"] is True
    sent = report["upstream_request"]["body"]
    assert "my-new-model" in sent and "whisper-1" not in sent
    assert "\x00\x01\\xff" in sent  # the file part as it came, undecodable bytes escaped


async def test_a_trial_never_uses_the_shared_cache(tmp_path):
    extra = "extproc:\n  cache: {redis_url: 'redis://127.0.0.1:1', on_unavailable: deny}\n"
    config = write(tmp_path, "c.proxy_handler_instance", {"c.py": COUNTER}, extra)
    first = await trial.run(config, chat("hi"))
    second = await trial.run(config, chat("hi"))
    assert first["upstream_request"]["body"]["model"] == "call-1"
    assert second["upstream_request"]["body"]["model"] == "call-1"  # a fresh cache per trial


# ---- as a command ----
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "extproc", "try", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def files(tmp_path):
    config = write(
        tmp_path,
        "[h.proxy_handler_instance, m.proxy_handler_instance]",
        {"h.py": STRING_REFUSAL, "m.py": SEED_MODERATION},
    )
    (tmp_path / "ok.json").write_bytes(chat("fine"))
    (tmp_path / "forbidden.json").write_bytes(chat("forbidden words"))
    (tmp_path / "flagged.json").write_bytes(chat("hello world"))
    (tmp_path / "answer.json").write_bytes(completion("sure"))
    return tmp_path, config


def test_cli_exit_codes_follow_the_policy(files):
    folder, config = files
    ok = run_cli("--config", str(config), str(folder / "ok.json"), "--response", str(folder / "answer.json"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "result: goes through (verdict: pass, exit 0)"
    refused = run_cli("--config", str(config), str(folder / "forbidden.json"))
    assert refused.returncode == 3, refused.stderr
    assert "refused at the request phase, by h.proxy_handler_instance.async_pre_call_hook" in refused.stdout
    flagged = run_cli("--config", str(config), str(folder / "flagged.json"))
    assert flagged.returncode == 3, flagged.stderr
    assert (
        "failed at the moderation phase, by m.proxy_handler_instance.async_moderation_hook" in flagged.stdout
    )
    assert "the client gets: 400 application/json" in flagged.stdout


def test_cli_json_report(files):
    folder, config = files
    result = run_cli(
        "--config", str(config), str(folder / "forbidden.json"), "--json", "--header", "x-team-id: t1"
    )
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["refusal"]["by"] == "h.proxy_handler_instance.async_pre_call_hook"
    assert report["request"]["headers"]["x-team-id"] == "t1"
    assert report["exit_code"] == 3


def test_cli_usage_and_config_errors(files, tmp_path):
    folder, config = files
    missing = run_cli("--config", str(config), str(folder / "nope.json"))
    assert missing.returncode == 2
    assert "cannot read the request file" in missing.stderr
    bad_header = run_cli("--config", str(config), str(folder / "ok.json"), "--header", "no-colon")
    assert bad_header.returncode == 2
    assert "expected NAME:VALUE" in bad_header.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    bad_config = write(broken, "nowhere.handler", {})
    failed = run_cli("--config", str(bad_config), str(folder / "ok.json"))
    assert failed.returncode == 1
    assert "nowhere" in failed.stderr

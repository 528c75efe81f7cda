"""Hot reload: a running sidecar picks up edited config and handler files, refuses broken ones."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from extproc.ops.reload import fingerprint
from extproc.ops.server import Sidecar
from extproc.request import pipeline

from .harness import Harness, body_request, headers_request

INTERVAL_S = 0.05
DEADLINE_S = 10.0
CONFIG = "litellm_settings:\n  callbacks: h.proxy_handler_instance\nextproc:\n  hook_timeout_ms: 20000\n"

MODEL = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "{model}"
        return data

proxy_handler_instance = H()
"""

HELD = """
import asyncio
import pathlib

from extproc import CustomLogger

RELEASE = pathlib.Path(__file__).with_name("release")

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "hold":
            while not RELEASE.exists():  # held open until the test says so
                await asyncio.sleep(0.01)
        data["model"] = "v1"
        return data

proxy_handler_instance = H()
"""

COUNTER = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = f"{version}-{{await cache.async_increment_cache('calls', 1)}}"
        return data

proxy_handler_instance = H()
"""


def chat(content: str = "hi") -> bytes:
    return orjson.dumps({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": content}]})


def write(path: Path, text: str) -> None:
    """Atomically, as editors and kubelet do: the poller never reads half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(textwrap.dedent(text))
    os.replace(temporary, path)


class ReloadHarness(Harness):
    def __init__(self, built, interval: float = INTERVAL_S):
        self.sidecar = Sidecar(built, ("127.0.0.1:0",), interval)


def model_of(answers) -> str | None:
    body = answers[1].request_body.response.body_mutation.body
    return orjson.loads(body)["model"] if body else None


async def model_sent(harness, content: str = "hi") -> str | None:
    return model_of(await harness.exchange(headers_request(), body_request(chat(content))))


async def until(probe, what: str):
    """Poll a probe (sync or async) until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.02)


def make(folder: Path, handler: str, config: str = CONFIG):
    write(folder / "h.py", handler)
    write(folder / "config.yaml", config)
    return pipeline.load(folder / "config.yaml")


def reload_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "extproc.reload"]


async def test_an_edited_handler_serves_new_requests(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="extproc.reload")
    async with ReloadHarness(make(tmp_path, MODEL.format(model="v1"))) as harness:
        assert await model_sent(harness) == "v1"
        write(tmp_path / "h.py", MODEL.format(model="v2"))
        await until(lambda: model_is(harness, "v2"), "the edited handler answers")
        assert (harness.sidecar.reloads, harness.sidecar.reload_failures) == (1, 0)
    (record,) = reload_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"reloaded {tmp_path / 'config.yaml'} in ")


async def model_is(harness, expected: str) -> bool:
    return await model_sent(harness) == expected


@pytest.mark.parametrize(
    ("file", "broken", "named"),
    [
        ("h.py", "def broken(:\n", "SyntaxError"),
        ("h.py", MODEL.format(model="x").replace("async def", "def"), "must be 'async def'"),
        ("config.yaml", "litellm_settings: [unclosed\n", "not valid YAML"),
        ("config.yaml", "litellm_settings:\n  callbacks: missing.handler\n", "'missing' not found"),
    ],
)
async def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    tmp_path, caplog, file, broken, named
):
    caplog.set_level(logging.INFO, logger="extproc.reload")
    async with ReloadHarness(make(tmp_path, MODEL.format(model="v1"))) as harness:
        write(tmp_path / file, broken)
        await until(lambda: harness.sidecar.reload_failures == 1, "the failure counted")
        assert harness.sidecar.reloads == 0
        for _ in range(3):
            assert await model_sent(harness) == "v1"
        (record,) = reload_records(caplog)
        assert record.levelno == logging.ERROR
        assert "previous config keeps serving" in record.getMessage()
        assert named in record.getMessage()
        # Fixed: the next good version is taken.
        make(tmp_path, MODEL.format(model="v3"))
        await until(lambda: model_is(harness, "v3"), "the fixed handler answers")
        assert (harness.sidecar.reloads, harness.sidecar.reload_failures) == (1, 1)


async def test_a_same_size_edit_within_the_second_is_not_hidden_by_cached_bytecode(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    async with ReloadHarness(make(tmp_path, MODEL.format(model="v1"))) as harness:
        assert not (tmp_path / "__pycache__").exists()  # handler files are compiled from source, never cached
        write(tmp_path / "h.py", MODEL.format(model="v2"))  # same size, same second as the first version
        await until(lambda: model_is(harness, "v2"), "the edited handler answers, not its old bytecode")


async def test_kubernetes_configmap_symlink_swap(tmp_path):
    first = tmp_path / "..2024_01_01_00_00_00.1"
    first.mkdir()
    write(first / "config.yaml", CONFIG)
    write(first / "h.py", MODEL.format(model="v1"))
    os.symlink(first.name, tmp_path / "..data")
    for name in ("config.yaml", "h.py"):
        os.symlink(f"..data/{name}", tmp_path / name)
    built = pipeline.load(tmp_path / "config.yaml")
    async with ReloadHarness(built) as harness:
        assert await model_sent(harness) == "v1"
        second = tmp_path / "..2024_01_01_00_01_00.2"
        second.mkdir()
        write(second / "config.yaml", CONFIG)
        write(second / "h.py", MODEL.format(model="v2"))
        os.symlink(second.name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # kubelet's atomic swap
        shutil.rmtree(first)
        await until(lambda: model_is(harness, "v2"), "the swapped-in handler answers")
        assert (harness.sidecar.reloads, harness.sidecar.reload_failures) == (1, 0)


async def test_a_request_in_flight_finishes_with_the_chain_it_started_with(tmp_path):
    async with ReloadHarness(make(tmp_path, HELD)) as harness:
        held = harness.open()
        await held.write(headers_request())
        first = await held.read()  # the session exists: it took the pipeline of its start
        assert first.HasField("request_headers")
        await held.write(body_request(chat("hold")))
        write(tmp_path / "h.py", MODEL.format(model="v2"))
        await until(lambda: model_is(harness, "v2"), "new requests get the new chain")
        (tmp_path / "release").touch()
        answer = await asyncio.wait_for(held.read(), DEADLINE_S)
        assert orjson.loads(answer.request_body.response.body_mutation.body)["model"] == "v1"
        await held.done_writing()
        held.cancel()


async def _model_starting(harness, prefix: str) -> str | None:
    model = await model_sent(harness)
    return model if model and model.startswith(prefix) else None


async def test_the_cache_survives_a_reload_unless_its_settings_change(tmp_path):
    async with ReloadHarness(make(tmp_path, COUNTER.format(version="v1"))) as harness:
        assert [await model_sent(harness) for _ in range(2)] == ["v1-1", "v1-2"]
        write(tmp_path / "h.py", COUNTER.format(version="v2"))
        first_v2 = await until(lambda: _model_starting(harness, "v2-"), "the v2 handler answers")
        assert int(first_v2.split("-")[1]) >= 3  # the counter went on: the same cache
        make(tmp_path, COUNTER.format(version="v3"), CONFIG + "  cache: {timeout_ms: 300}\n")
        first_v3 = await until(lambda: _model_starting(harness, "v3-"), "the v3 handler answers")
        assert first_v3 == "v3-1"  # new cache settings: a new cache


async def test_sighup_style_request_reloads_with_polling_off(tmp_path):
    async with ReloadHarness(make(tmp_path, MODEL.format(model="v1")), interval=0) as harness:
        write(tmp_path / "h.py", MODEL.format(model="v2"))
        harness.sidecar.request_reload()
        await until(lambda: harness.sidecar.reloads == 1, "the requested reload")
        assert await model_sent(harness) == "v2"


async def test_reloading_is_off_unless_asked(tmp_path):
    sidecar = Sidecar(make(tmp_path, MODEL.format(model="v1")), ("127.0.0.1:0",))
    assert sidecar.reloader is None
    assert (sidecar.reloads, sidecar.reload_failures) == (0, 0)


def test_fingerprint_sees_content_not_just_stat(tmp_path):
    write(tmp_path / "config.yaml", CONFIG)
    handler = tmp_path / "h.py"
    handler.write_text("A = 1\n")
    stat = handler.stat()
    before = fingerprint(tmp_path / "config.yaml")
    handler.write_text("A = 2\n")  # same size
    os.utime(handler, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert fingerprint(tmp_path / "config.yaml") != before


def test_fingerprint_watches_python_files_under_the_folder_only(tmp_path):
    write(tmp_path / "config.yaml", CONFIG)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    for skipped in (".venv", "__pycache__", "node_modules"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.py").write_text("")
    names = [
        Path(path).relative_to(tmp_path).as_posix() for path, _, _ in fingerprint(tmp_path / "config.yaml")
    ]
    assert names == ["config.yaml", "pkg/mod.py"]


def test_serve_reloads_on_sighup_with_polling_off(tmp_path):
    """`llm-extproc serve --reload-interval 0`: only SIGHUP reloads; its logs are JSON lines."""
    make(tmp_path, MODEL.format(model="v1"))
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "extproc", "serve", "--config", str(tmp_path / "config.yaml")]
    command += ["--listen", "127.0.0.1:0", "--reload-interval", "0"]
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log_path, lambda line: line.startswith("llm-extproc serving on "))
        write(tmp_path / "h.py", MODEL.format(model="v2"))
        process.send_signal(signal.SIGHUP)
        line = wait_for_line(log_path, lambda line: "reloaded" in line)
        record = json.loads(line)
        assert (record["level"], record["logger"], record["reloads"]) == ("info", "extproc.reload", 1)
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
    assert process.returncode == 0


def wait_for_line(path: Path, wanted) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if wanted(line):
                return line
        time.sleep(0.02)
    raise AssertionError(f"no such line in {path}:\n{path.read_text()}")

"""Hot reload through a real Envoy: edit the handler next to the running sidecar's config."""

from __future__ import annotations

import json
import os
import textwrap
from functools import partial
from pathlib import Path

import pytest
from helpers import poll as poll_until

pytestmark = pytest.mark.e2e
DEADLINE_S = 15.0
poll = partial(poll_until, deadline_s=DEADLINE_S)
CONFIG = "litellm_settings:\n  callbacks: reload_h.proxy_handler_instance\n"
HANDLER = """
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        data["model"] = "{model}"
        return data

proxy_handler_instance = H()
"""
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


def write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(textwrap.dedent(text))
    os.replace(temporary, path)


def answer_model(stack) -> str:
    response = stack.http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    return str(response.json()["model"])


def sidecar_log_lines(stack) -> list[dict]:
    lines = []
    for line in stack.sidecar_log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_an_edited_handler_takes_over_and_a_broken_one_is_refused(e2e_stack):
    stack = e2e_stack(CONFIG, {"reload_h.py": HANDLER.format(model="first-model")})
    assert answer_model(stack) == "first-model"
    handler = stack.folder / "reload_h.py"
    write(handler, HANDLER.format(model="second-model"))
    poll(lambda: answer_model(stack) == "second-model", "Envoy's requests reach the edited handler")
    assert stack.mock_last()["json"]["model"] == "second-model"

    write(handler, "this is not python\n")
    refused = poll(
        lambda: [e for e in sidecar_log_lines(stack) if "reload refused" in e["message"]],
        "the refusal in the sidecar's JSON log",
    )
    assert refused[0]["level"] == "error"
    assert "reload_h.py" in refused[0]["message"]
    for _ in range(3):
        assert answer_model(stack) == "second-model"  # the previous pipeline keeps serving
    reloaded = [e for e in sidecar_log_lines(stack) if e["message"].startswith("reloaded ")]
    assert len(reloaded) == 1
    assert reloaded[0]["logger"] == "extproc.reload"


SLOW_HANDLER = """
import asyncio, pathlib
from extproc import CustomLogger

class H(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        if data["messages"][0]["content"] == "slow":
            pathlib.Path(__file__).with_name("inside.flag").write_text("1")
            await asyncio.sleep(4.0)
        data["model"] = "{model}"
        return data

proxy_handler_instance = H()
"""


def test_a_request_in_flight_finishes_on_the_chain_it_started_with(e2e_stack):
    import concurrent.futures

    import httpx

    stack = e2e_stack(
        "litellm_settings:\n  callbacks: reload_slow.proxy_handler_instance\nextproc:\n  hook_timeout_ms: 10000\n",
        {"reload_slow.py": textwrap.dedent(SLOW_HANDLER.replace("{model}", "old-chain"))},
    )
    folder = stack.stack.config_path.parent
    flag = folder / "inside.flag"

    def slow_request():
        with httpx.Client(base_url=stack.url, trust_env=False, timeout=20) as client:
            body = {**CHAT, "messages": [{"role": "user", "content": "slow"}]}
            return client.post("/v1/chat/completions", json=body)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(slow_request)
        poll(flag.exists, "the slow request is inside the old chain's hook")
        write(folder / "reload_slow.py", SLOW_HANDLER.replace("{model}", "new-chain"))
        poll(lambda: answer_model(stack) == "new-chain", "new requests use the new chain")
        assert not in_flight.done()  # the reload happened while the old request was inside its hook
        assert in_flight.result().json()["model"] == "old-chain"

"""`call_type` names through a real Envoy, and `llm-extproc check --strict` as a real subprocess.

Hooks receive LiteLLM's proxy names (`acompletion`) by default and the documented ones (`completion`)
with `extproc.call_types: documented`; a string refusal on chat is the 200 chat completion either way,
because the endpoint decides it, never the name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.e2e

HANDLER = """
import json
from pathlib import Path

from extproc import CustomLogger

CALLS = Path(__file__).with_name("calls.jsonl")


class Recorder(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        with CALLS.open("a") as calls:
            calls.write(json.dumps({"request_id": data["litellm_call_id"], "call_type": call_type}) + "\\n")
        if "refuse me" in str(data.get("messages") or data.get("prompt") or data.get("input")):
            return "Refused by policy."
        return None


handler = Recorder()
"""
NAMINGS = {
    "proxy": ("", {"/v1/chat/completions": "acompletion", "/v1/embeddings": "aembedding"}),
    "documented": (
        "extproc:\n  call_types: documented\n",
        {"/v1/chat/completions": "completion", "/v1/embeddings": "embeddings"},
    ),
}


def calls_of(stack: Any, client_request_id: str) -> list[str]:
    envoy_id = stack.request_id_of(client_request_id)
    return [call["call_type"] for call in stack.hook_calls() if call["request_id"] == envoy_id]


@pytest.fixture(params=list(NAMINGS))
def naming(request: pytest.FixtureRequest, e2e_stack: Any) -> tuple[Any, dict[str, str]]:
    extra, expected = NAMINGS[request.param]
    config = "litellm_settings:\n  callbacks: recorder.handler\n" + extra
    return e2e_stack(config, {"recorder.py": HANDLER}), expected


def test_hooks_receive_the_names_in_force(naming, request_id):
    stack, expected = naming
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
    response = stack.http.post("/v1/chat/completions", json=chat, headers={"x-request-id": request_id})
    assert response.status_code == 200, response.text
    assert calls_of(stack, request_id) == [expected["/v1/chat/completions"]]
    embed_id = request_id + "-e"
    body = {"model": "text-embedding-3-small", "input": "hello"}
    response = stack.http.post("/v1/embeddings", json=body, headers={"x-request-id": embed_id})
    assert response.status_code == 200, response.text
    assert calls_of(stack, embed_id) == [expected["/v1/embeddings"]]


def test_a_string_refusal_on_chat_is_a_chat_completion_under_either_naming(naming):
    stack, _ = naming
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "please refuse me"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Refused by policy."
    assert completion.choices[0].finish_reason == "stop"
    # and on embeddings the same string is the 400 error envelope
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="text-embedding-3-small", input="refuse me")
    assert refused.value.status_code == 400
    assert "Refused by policy." in str(refused.value)


# ---- llm-extproc check --strict ----
DOCUMENTED_HANDLER = (
    "from extproc import CustomLogger\n"
    "class H(CustomLogger):\n"
    "    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n"
    "        if call_type == 'completion':\n"
    "            return 'no'\n"
    "h = H()\n"
)


def check(folder: Path, config: str, *flags: str) -> subprocess.CompletedProcess[str]:
    (folder / "hooks_for_docs.py").write_text(DOCUMENTED_HANDLER)
    path = folder / "config.yaml"
    path.write_text(config)
    command = [sys.executable, "-m", "extproc", "check", "--config", str(path), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_strict_fails_on_a_warning_and_prints_it(tmp_path):
    config = "litellm_settings:\n  callbacks: [hooks_for_docs.h]\n  success_callback: [langfuse]\n"
    lenient = check(tmp_path, config)
    assert lenient.returncode == 0, lenient.stderr
    assert "warning: litellm_settings.success_callback: langfuse: ignored" in lenient.stdout
    assert "hooks_for_docs.py:4: call_type compared with 'completion'" in lenient.stdout
    strict = check(tmp_path, config, "--strict")
    assert strict.returncode == 1
    assert "warning: litellm_settings.success_callback: langfuse: ignored" in strict.stdout
    assert "hooks_for_docs.py:4: call_type compared with 'completion'" in strict.stdout
    assert "--strict: 2 warning(s)" in strict.stderr
    assert "ok" not in strict.stdout.splitlines()


def test_strict_passes_a_clean_config_with_prometheus_mapped(tmp_path):
    config = (
        "litellm_settings:\n  callbacks: [prometheus, hooks_for_docs.h]\n"
        "extproc:\n  call_types: documented\n  metrics_listen: 127.0.0.1:0\n"
    )
    strict = check(tmp_path, config, "--strict")
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert "note: litellm_settings.callbacks: prometheus" in strict.stdout
    assert "warning:" not in strict.stdout
    assert strict.stdout.splitlines()[-1] == "ok"


def test_an_enforcement_key_stops_check_naming_it(tmp_path):
    result = check(tmp_path, "general_settings:\n  custom_auth: my_auth.user_api_key_auth\n")
    assert result.returncode == 1
    assert "general_settings.custom_auth: not supported by llm-extproc" in result.stderr
    assert "jwt_authn" in result.stderr

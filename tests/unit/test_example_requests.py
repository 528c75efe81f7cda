"""The sample requests of `examples/requests/` go through `llm-extproc try` against examples/config.yaml.

The commands are taken from the README's table and run as written (the real command, from the
repository's root), so a sample that rots, a README command that does not work, or an API family that
stops being hooked fails here. Each must reach the upstream with the example handler's change.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = ROOT / "examples" / "requests"
EXAMPLE_HOOK = "custom_callbacks.proxy_handler_instance.async_pre_call_hook"


def readme_commands() -> list[str]:
    """The `llm-extproc try ... examples/requests/...` commands of the README's sample table."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^\|[^\n]*\| `(llm-extproc try [^`]*examples/requests/[^`]*)` \|$", text, re.MULTILINE)


COMMANDS = readme_commands()


def run(command: str) -> dict:
    words = shlex.split(command)
    assert words[:2] == ["llm-extproc", "try"]
    argv = [sys.executable, "-m", "extproc", *words[1:], "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict = json.loads(done.stdout)
    return report


def test_every_sample_file_is_in_a_readme_command():
    used = {Path(word).name for command in COMMANDS for word in shlex.split(command) if "requests/" in word}
    assert used == {path.name for path in REQUESTS.iterdir()}
    paths = {shlex.split(c)[shlex.split(c).index("--path") + 1] for c in COMMANDS if "--path" in c}
    assert paths == {"/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"}


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_goes_through_the_example_hook(command):
    report = run(command)
    assert report["hooked"] is True
    assert report["refusal"] is None
    assert [call["hook"] for call in report["hooks"]] == [EXAMPLE_HOOK]
    upstream = report["upstream_request"]
    assert upstream["changed"] is True
    assert upstream["body"]["model"] == "my-new-model"
    if "--response" in command:
        answer = REQUESTS / Path(shlex.split(command)[-1]).name
        response = report["response"]
        assert response["status"] == 200
        assert response["stream_error"] is False
        assert response["changed"] is False  # the example has no response hook: the answer passes as is
        text = answer.read_text()
        assert response["body"] == (json.loads(text) if answer.suffix == ".json" else text)

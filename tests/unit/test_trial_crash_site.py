"""`llm-extproc try` on a hook that crashes: the report names the file and line of the crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CRASHING = """\
from extproc import CustomLogger


def helper(data):
    return data["missing"]


class Crashing(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        helper(data)
        return data


handler = Crashing()
"""
CONFIG = """\
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo}
litellm_settings:
  callbacks: [crashing.handler]
"""


def run_try(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    (folder / "config.yaml").write_text(CONFIG)
    (folder / "crashing.py").write_text(CRASHING)
    (folder / "request.json").write_text('{"model": "gpt-3.5-turbo", "messages": []}')
    command = [sys.executable, "-m", "extproc", "try", "--config", str(folder / "config.yaml")]
    return subprocess.run(
        [*command, str(folder / "request.json"), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_report_points_at_the_crashing_line(tmp_path):
    done = run_try(tmp_path)
    assert done.returncode == 3, done.stderr
    source = tmp_path / "crashing.py"
    lines = done.stdout.splitlines()
    call = lines.index("  crashing.handler.async_pre_call_hook: raised KeyError: 'missing'")
    assert lines[call + 1 : call + 3] == [
        f"    at {source}:10 in async_pre_call_hook",
        f"    at {source}:5 in helper",
    ]
    # the warning on stderr carries the whole traceback too, as `serve` logs it
    assert f'File "{source}", line 5, in helper' in done.stderr


def test_json_report_lists_the_frames_of_the_hook_only(tmp_path):
    done = run_try(tmp_path, "--json")
    report = json.loads(done.stdout)
    source = tmp_path / "crashing.py"
    (call,) = report["hooks"]
    assert call["at"] == [f"{source}:10 in async_pre_call_hook", f"{source}:5 in helper"]
    assert report["refusal"]["status"] == 500

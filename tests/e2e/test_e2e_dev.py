"""`DevStack` as `dev` runs it: taken ports refused before anything starts, the sidecar's log echoed
with a prefix (hook prints, a crashing hook's traceback with file and line), and the run folder kept."""

from __future__ import annotations

import io
import json
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers import complete_lines

from extproc.cli import LOG_FORMAT_ENV
from extproc.devtools.dev import DevStack, StackError

pytestmark = pytest.mark.e2e

PRINTER = """\
from extproc import CustomLogger


class Printer(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        print("pre-call saw", data["model"])
        if data.get("user") == "crash":
            raise RuntimeError("boom")
        return data


handler = Printer()
"""
CONFIG = """\
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params: {model: gpt-3.5-turbo}
litellm_settings:
  callbacks: [printer.handler]
"""


def write_config(folder: Path, extra: str = "") -> Path:
    (folder / "printer.py").write_text(PRINTER)
    config = folder / "config.yaml"
    config.write_text(CONFIG + extra)
    return config


def chat(url: str, user: str) -> httpx.Response:
    body = {"model": "gpt-3.5-turbo", "user": user, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_sidecar_log_is_echoed_with_a_prefix_and_the_crash_site(tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_FORMAT_ENV, "text")  # as `dev` sets it for its sidecar
    config = write_config(tmp_path)
    out = io.StringIO()
    run_dir = tmp_path / "run"
    with DevStack(config, run_dir=run_dir, show_logs=True, log_out=out) as stack:
        assert chat(stack.url, "alice").status_code == 200
        assert chat(stack.url, "crash").status_code == 500
    # stop() printed every line the sidecar wrote, its shutdown lines included
    echoed = out.getvalue().splitlines()
    assert all(line.startswith("sidecar | ") for line in echoed), echoed
    assert echoed.count("sidecar | pre-call saw gpt-3.5-turbo") == 2
    assert any("failed: 500 boom (in printer.handler.async_pre_call_hook)" in line for line in echoed)
    assert f'sidecar |   File "{tmp_path / "printer.py"}", line 8, in async_pre_call_hook' in echoed
    assert "sidecar | RuntimeError: boom" in echoed
    assert any("stopping" in line for line in echoed)
    assert "pre-call saw gpt-3.5-turbo" in (run_dir / "sidecar.log").read_text()  # the file keeps all


def test_programmatic_stacks_echo_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)  # `serve`'s default: JSON lines
    with DevStack(write_config(tmp_path)) as stack:
        assert chat(stack.url, "alice").status_code == 200
        assert chat(stack.url, "crash").status_code == 500
        run_dir = stack.run_dir
        # logged before the reply left the sidecar, so it is in the file once the client has its 500
        records = [
            json.loads(line) for line in complete_lines(stack.children["sidecar"].output()) if line[:1] == "{"
        ]
    (failure,) = [r for r in records if "failed: 500 boom" in r["message"]]
    assert f'File "{tmp_path / "printer.py"}", line 8, in async_pre_call_hook' in failure["exc"]
    captured = capsys.readouterr()
    assert "sidecar |" not in captured.out + captured.err
    assert not run_dir.exists()  # no run_dir given: removed


def test_a_port_held_by_a_running_envoy_is_refused(tmp_path):
    """Envoy binds with SO_REUSEPORT: without the check, a second stack would share the port."""
    config = write_config(tmp_path)
    with DevStack(config) as first:
        port = urlsplit(first.url).port
        assert port is not None
        second = DevStack(config, port=port)
        with pytest.raises(StackError) as refused:
            second.start()
        assert second.children == {}  # nothing was started
        assert chat(first.url, "alice").status_code == 200
    assert (
        str(refused.value)
        == f"127.0.0.1:{port} (Envoy's listener, --port) is not free: in use by another process"
    )


def test_a_taken_metrics_port_is_named(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, f"extproc:\n  metrics_listen: 127.0.0.1:{port}\n")
        stack = DevStack(config, run_dir=tmp_path / "run")
        with pytest.raises(StackError) as refused:
            stack.start()
    message = str(refused.value)
    assert message == (
        f"127.0.0.1:{port} (the sidecar's metrics, extproc.metrics_listen in config.yaml) is not free: "
        "in use by another process"
    )
    shutil.rmtree(tmp_path / "run", ignore_errors=True)

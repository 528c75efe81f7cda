"""`llm-extproc check` and `llm-extproc dev` as real subprocesses."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import httpx
import pytest
from helpers import children_of, free_port

from extproc.devtools import dev

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

ASYNC_HOOK = "    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n"
HANDLERS = {
    "sync": "    def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):\n",
    "signature": "    async def async_pre_call_hook(self, data):\n",
}


def check(config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "extproc", "check", "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def write_config(folder: Path, yaml_text: str, handler_def: str | None = None) -> Path:
    if handler_def is not None:
        source = f"from extproc import CustomLogger\n\n\nclass H(CustomLogger):\n{handler_def}        return None\n\n\nh = H()\n"
        (folder / "my_handler.py").write_text(source)
    path = folder / "config.yaml"
    path.write_text(yaml_text)
    return path


def test_version_names_the_installed_release():
    """The installed console script (what `make run` prints the path of) reports pyproject's version."""
    script = Path(sysconfig.get_path("scripts")) / "llm-extproc"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"llm-extproc {version}\n"


def test_check_accepts_the_example():
    result = check(EXAMPLES / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "ok"
    assert "custom_callbacks.proxy_handler_instance" in result.stdout


@pytest.mark.parametrize(
    ("extproc", "phases", "messages"),
    [
        ("{}", "request_body", "one, the body with the headers as Envoy metadata (the default); hooks see every"),
        ("{messages: two}", "request_headers, request_body", "two, request headers then body (extproc.messages: two)"),
        ("{routing: true}", "request_headers, request_body", "two, request headers then body (extproc.routing"),
        ("{forward_headers: [x-team]}", "request_body", "hooks see content-type, content-encoding, x-request-id, x-team"),
    ],
)  # fmt: skip
def test_check_says_how_many_messages_a_request_takes_and_why(tmp_path, extproc, phases, messages):
    text = (
        "model_list: [{model_name: m, litellm_params: {model: openai/m}}]\n"
        f"litellm_settings:\n  callbacks: my_handler.h\nextproc: {extproc}\n"
    )
    result = check(write_config(tmp_path, text, ASYNC_HOOK))
    assert result.returncode == 0, result.stderr
    assert f"phases asked of Envoy: {phases}\n" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("messages per request: "))
    assert messages in line, line


def test_a_routing_config_that_asks_for_one_message_is_refused(tmp_path):
    text = "model_list: [{model_name: m, litellm_params: {model: openai/m}}]\nextproc: {routing: true, messages: one}\n"
    result = check(write_config(tmp_path, text))
    assert result.returncode != 0
    assert "extproc.routing: not supported in one-message mode" in result.stderr


def test_check_accepts_a_valid_handler(tmp_path):
    result = check(write_config(tmp_path, "litellm_settings:\n  callbacks: my_handler.h\n", ASYNC_HOOK))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("yaml_text", "handler_def", "expected"),
    [
        pytest.param(
            "litellm_settings:\n  callbacks: no_such_module.handler\n", None, ["no_such_module", "not found"],
            id="missing-module",
        ),
        pytest.param(
            "litellm_settings:\n  callbacks: my_handler.h\n", HANDLERS["sync"],
            ["my_handler.h.async_pre_call_hook", "must be 'async def'"], id="sync-def",
        ),
        pytest.param(
            "litellm_settings:\n  callbacks: my_handler.h\n", HANDLERS["signature"],
            ["my_handler.h.async_pre_call_hook", "must accept (user_api_key_dict, cache, data, call_type)"],
            id="wrong-signature",
        ),
        pytest.param(
            "extproc:\n  listen: ['localhost']\n", None, ["extproc.listen", "'localhost'"], id="bad-listen",
        ),
    ],
)  # fmt: skip
def test_check_names_the_problem(tmp_path, yaml_text, handler_def, expected):
    result = check(write_config(tmp_path, yaml_text, handler_def))
    assert result.returncode != 0
    assert "ok" not in result.stdout.splitlines()
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


def test_dev_rejects_a_bad_upstream(capsys):
    assert dev.run(str(EXAMPLES / "config.yaml"), port=0, upstream="ftp://example.com") == 2
    assert "expected http(s)://host[:port]" in capsys.readouterr().err


def kept_run_dir(stderr: str) -> Path:
    """The run folder named in the log tail `dev` prints when a process fails."""
    return Path(stderr.split("--- last lines of ")[1].split()[0]).parent


def test_dev_refuses_a_taken_port_before_starting_anything(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = dev.run(str(EXAMPLES / "config.yaml"), port=port)
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: 127.0.0.1:{port} (Envoy's listener, --port) is not free: in use by another process" in err
    assert "logs kept" not in err  # nothing ran, nothing to keep


def logs_kept_in(stderr: str) -> Path:
    """The run folder `dev` names when it stops: its logs stay for the user to read."""
    return Path(stderr.split("logs kept in ")[1].split()[0])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output within {timeout} s")
    return process.stdout.readline().decode()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


class DevProcess:
    """`llm-extproc dev` on a free port, killed with whatever it left behind if a test fails."""

    def __init__(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "extproc", "dev", "--config", str(EXAMPLES / "config.yaml")]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.children: list[int] = []

    def wait_ready(self) -> None:
        assert read_line(self.process, 30) == f"ready: http://127.0.0.1:{self.port}\n"
        self.children = children_of(self.process.pid)

    def child(self, word: str) -> int:
        return next(pid for pid in self.children if word in cmdline(pid))

    def finish(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=15)
        return self.process.returncode, stdout.decode(), stderr.decode()

    def cleanup(self) -> None:
        if self.process.poll() is None:  # a failed test: let dev stop its children and clean up
            self.process.terminate()
            try:
                self.process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
        for pid in self.children:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture()
def dev_process():
    process = DevProcess()
    try:
        yield process
    finally:
        process.cleanup()


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_dev_command_runs_and_stops_cleanly(dev_process, signum):
    dev_process.wait_ready()
    assert len(dev_process.children) == 3
    assert [dev_process.child(word) for word in ("mock-upstream", "serve", "envoy")]
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "user": "dev"}
    response = httpx.post(f"http://127.0.0.1:{dev_process.port}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "my-new-model"
    dev_process.process.send_signal(signum)
    code, stdout, stderr = dev_process.finish()
    assert code == 0, stderr
    assert stdout == ""  # the ready line was the only one
    assert [pid for pid in dev_process.children if alive(pid)] == []
    assert "sidecar | llm-extproc serving on unix:" in stderr  # the sidecar's log, echoed
    run_dir = logs_kept_in(stderr)
    assert "serving on" in (run_dir / "sidecar.log").read_text()
    assert (run_dir / "envoy.log").is_file() and (run_dir / "mock.log").is_file()
    shutil.rmtree(run_dir)


@pytest.mark.e2e
def test_dev_command_stops_when_a_child_dies(dev_process):
    dev_process.wait_ready()
    os.kill(dev_process.child("mock-upstream"), signal.SIGKILL)
    code, _, stderr = dev_process.finish()
    assert code != 0
    assert "mock exited with -9" in stderr
    assert "mock-upstream listening on" in stderr  # the tail of its log
    assert [pid for pid in dev_process.children if alive(pid)] == []
    run_dir = kept_run_dir(stderr)
    assert logs_kept_in(stderr) == run_dir
    assert (run_dir / "mock.log").is_file()  # kept for the user to read
    shutil.rmtree(run_dir)

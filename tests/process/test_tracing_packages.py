"""Traces switched on where OpenTelemetry's SDK and exporter are not installed (the image before it had the
`otel` extra): `serve`, `serve` with several workers and `check` stop at once with one config error naming
the extra, no traceback and no worker restarted in a loop.

The installation without them is this environment with a folder first on PYTHONPATH holding what an
install without the extra has: the `opentelemetry` package of xds-protos, with only its `proto` files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import opentelemetry.proto
import pytest

ERROR = "error: extproc.tracing: traces need OpenTelemetry's SDK and OTLP gRPC exporter"
CONFIGS = {
    "callbacks-otel": "litellm_settings:\n  callbacks: [otel]\n",
    "tracing-section": "extproc:\n  tracing: {endpoint: 'http://127.0.0.1:4317'}\n",
    "workers": "litellm_settings:\n  callbacks: [otel]\nextproc:\n  workers: 2\n  listen: unix:{folder}/s.sock\n",
}


def without_opentelemetry(folder: Path) -> dict[str, str]:
    package = folder / "shadow/opentelemetry"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "proto").symlink_to(Path(opentelemetry.proto.__file__).parent)
    return {"PYTHONPATH": str(folder / "shadow"), "PATH": "/usr/bin:/bin", "HOME": str(folder)}


def run(folder: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "extproc", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=folder, check=False)


@pytest.mark.parametrize("name", CONFIGS)
def test_traces_without_opentelemetry_stop_with_a_config_error(tmp_path, name):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIGS[name].replace("{folder}", str(tmp_path)))
    env = without_opentelemetry(tmp_path)
    commands = {
        "check": ["check", "--config", str(config)],
        "serve": ["serve", "--config", str(config), "--listen", f"unix:{tmp_path}/a.sock"],
    }
    for command, args in commands.items():
        result = run(tmp_path, *args, env=env)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert ERROR in result.stderr and "pip install 'llm-extproc[otel]'" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "restarting" not in result.stderr, result.stderr
        assert result.stderr.count(ERROR) == 1, result.stderr


def test_the_same_configs_pass_check_where_opentelemetry_is_installed(tmp_path):
    """The error above is about the installation, not the configs."""
    for name, text in CONFIGS.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(text.replace("{folder}", str(tmp_path)))
        result = run(tmp_path, "check", "--config", str(config), env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, (name, result.stderr)

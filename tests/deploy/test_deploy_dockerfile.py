"""The Dockerfile, read (there is no Docker engine here to build it): base, user, entrypoint, sources,
labels; and `make image`, run against stand-in `docker`/`podman` commands that record what they are asked."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from .helpers import REPO, container, objects, pod_spec

DOCKERFILE = REPO / "Dockerfile"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
OCI = "org.opencontainers.image."


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def only(keyword: str) -> list[str]:
    return [rest for key, rest in instructions() if key == keyword]


def labels() -> dict[str, str]:
    """Every LABEL's key=value pairs, quotes removed (values keep their ${ARG} references)."""
    pairs = [shlex.split(rest) for rest in only("LABEL")]
    return dict(pair.split("=", 1) for group in pairs for pair in group)


def build_args() -> dict[str, str | None]:
    """The ARGs declared after FROM (visible to LABEL and RUN), with their defaults (None: no default)."""
    keys = [key for key, _ in instructions()]
    after_from = instructions()[keys.index("FROM") + 1 :]
    declared: dict[str, str | None] = {}
    for key, rest in after_from:
        if key == "ARG":
            name, has_default, default = rest.partition("=")
            declared[name] = default if has_default else None
    return declared


def test_base_image_user_and_entrypoint():
    (base,) = only("FROM")
    assert base.split("@")[0] == "python:3.11-slim"
    (user,) = only("USER")
    assert user.split(":")[0] == "10001"
    assert json.loads(only("ENTRYPOINT")[0]) == ["llm-extproc"]
    assert json.loads(only("CMD")[0]) == ["serve", "--config", "/etc/llm-extproc/config.yaml"]
    # USER comes after every RUN: nothing runs as root at container start.
    keys = [key for key, _ in instructions()]
    assert keys.index("USER") > max(i for i, key in enumerate(keys) if key == "RUN")
    assert any("--uid 10001" in run for run in only("RUN"))


def test_every_copy_source_exists_and_is_not_dockerignored():
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for rest in only("COPY"):
        *sources, _destination = rest.split()
        assert not any(s.startswith("--") for s in sources), rest
        copied.extend(sources)
    assert sorted(s.rstrip("/") for s in copied) == ["README.md", "extproc", "handlers", "pyproject.toml"]
    for source in copied:
        assert (REPO / source).exists(), source
        assert not any(fnmatch(source.rstrip("/"), pattern) for pattern in ignored), source
    for pattern in (".venv", "tests", "bench", ".git"):
        assert pattern in ignored, pattern


def test_installs_runtime_dependencies_only():
    (install,) = [run for run in only("RUN") if "pip install" in run]
    assert "--no-cache-dir ." in install
    assert "[" not in install  # no extras: dev/test/lint stay out of the image
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llm-extproc"] == "extproc.cli:main"


def test_chart_runs_the_image_as_its_user():
    """The chart's uid and entrypoint assumptions are the image's."""
    docs = objects()
    assert pod_spec(docs)["securityContext"]["runAsUser"] == int(only("USER")[0].split(":")[0])
    sidecar = container(docs, "llm-extproc")
    assert "command" not in sidecar  # the image's ENTRYPOINT, llm-extproc
    assert sidecar["args"][:3] == json.loads(only("CMD")[0])


def test_base_image_is_pinned_by_digest():
    """The tag stays for readers; the digest decides what is pulled, so a rebuild gets the same base."""
    (base,) = only("FROM")
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base
    assert "ARG" not in [key for key, _ in instructions()][: [key for key, _ in instructions()].index("FROM")]


def test_oci_labels_describe_the_release():
    found = labels()
    assert sorted(found) == sorted(
        OCI + name for name in ("title", "description", "version", "source", "licenses", "revision")
    )
    assert found[OCI + "title"] == PROJECT["name"]
    assert found[OCI + "description"] == PROJECT["description"]
    assert found[OCI + "licenses"] == PROJECT["license"]
    args = build_args()
    for name in ("version", "revision", "source"):
        reference = re.fullmatch(r"\$\{(\w+)\}", found[OCI + name])
        assert reference, (name, found[OCI + name])
        assert reference.group(1) in args, f"{name} label refers to an undeclared ARG"
    # A plain `docker build .` (no --build-arg) still labels the image with the release it is.
    assert args["VERSION"] == PROJECT["version"]
    # The labels come after the install: a new revision does not invalidate the pip layer.
    keys = [key for key, _ in instructions()]
    install = max(i for i, (key, rest) in enumerate(instructions()) if key == "RUN" and "pip install" in rest)
    assert keys.index("LABEL") > install


def run_make_image(tmp_path: Path, engines: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`make image` with a PATH holding only the tools it needs plus the given stand-in engines.

    Each engine is a shell script: `info` exits with the given status ("0" answers, "1" does not);
    every call appends its arguments to calls.txt.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sed", "head", "git"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "calls.txt"
    for name, info_status in engines.items():
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\necho "{name} $*" >> {calls}\n[ "$1" = info ] && exit {info_status}\nexit 0\n'
        )
        script.chmod(0o755)
    make = shutil.which("make")
    assert make, "make"
    env = {**os.environ, "PATH": str(bin_dir)}
    env.pop("CONTAINER_ENGINE", None)
    result = subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO), "image"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return result, calls


def test_make_image_without_an_engine_says_so_and_succeeds(tmp_path):
    result, calls = run_make_image(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "no container engine found" in result.stdout
    assert not calls.exists()


def test_make_image_with_an_engine_that_does_not_answer_says_so_and_succeeds(tmp_path):
    result, calls = run_make_image(tmp_path, {"docker": "1"})
    assert result.returncode == 0, result.stderr
    assert "no container engine answers (docker is on PATH" in result.stdout
    assert calls.read_text().splitlines() == ["docker info"]  # asked, never told to build


def test_make_image_builds_with_the_labels_build_args(tmp_path):
    result, calls = run_make_image(tmp_path, {"docker": "1", "podman": "0"})
    assert result.returncode == 0, result.stderr
    build = [line.split() for line in calls.read_text().splitlines() if " build " in line]
    assert len(build) == 1 and build[0][:2] == ["podman", "build"], calls.read_text()
    argv = build[0][2:]
    assert argv[-1] == "."
    assert argv[argv.index("-t") + 1] == f"llm-extproc:{PROJECT['version']}"
    passed = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv) if arg == "--build-arg")
    assert set(passed) == {"VERSION", "REVISION", "SOURCE"}
    assert set(passed) <= set(build_args())  # every build arg is one the Dockerfile declares
    assert passed["VERSION"] == PROJECT["version"]
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert passed["REVISION"] == head.stdout.strip()

"""The Dockerfile, read (there is no Docker engine here to build it): base, user, entrypoint, sources."""

from __future__ import annotations

import json
import re
import tomllib
from fnmatch import fnmatch

from .helpers import REPO, container, objects, pod_spec

DOCKERFILE = REPO / "Dockerfile"


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


def test_base_image_user_and_entrypoint():
    assert only("FROM") == ["python:3.11-slim"]
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

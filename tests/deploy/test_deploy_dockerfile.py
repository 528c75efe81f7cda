"""The Dockerfile, read (there is no Docker engine here to build it): base, user, entrypoint, sources,
labels; and `make image`, run against stand-in `docker`/`podman` commands that record what they are asked."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from packaging.requirements import Requirement

from extproc.telemetry import tracing

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


def install_commands() -> list[list[str]]:
    """The commands of the RUN that installs the project, split at `&&`, each as its words."""
    (install,) = [run for run in only("RUN") if "pip install" in run]
    return [shlex.split(command) for command in install.split("&&")]


def image_extras() -> set[str]:
    """The extras of the project's own `pip install` in the image (the first one: `.` or `.[a,b]`)."""
    first = install_commands()[0]
    assert first[:2] == ["pip", "install"], first
    (target,) = [word for word in first[2:] if not word.startswith("-")]
    found = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target)
    assert found, target
    return set(filter(None, (found.group(1) or "").split(",")))


def _name(requirement: str) -> str:
    return Requirement(requirement).name.lower().replace("_", "-")


def requirements(extras: set[str]) -> set[str]:
    """The distributions pyproject.toml asks for with these extras (`llm-extproc[x]` in an extra expanded)."""
    names = {_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        for requirement in PROJECT["optional-dependencies"][extra]:
            parsed = Requirement(requirement)
            if parsed.name == PROJECT["name"]:
                names |= requirements(set(parsed.extras))
            else:
                names.add(_name(requirement))
    return names


def test_installs_runtime_dependencies_and_the_otel_extra_only():
    # dev/test/lint stay out of the image; `otel` is in, so extproc.tracing works in a pod.
    assert image_extras() == {"otel"}
    assert all(_name(r).startswith("opentelemetry-") for r in PROJECT["optional-dependencies"]["otel"])
    assert "llm-extproc[otel]" in PROJECT["optional-dependencies"]["dev"]  # `make run` traces too
    assert PROJECT["scripts"]["llm-extproc"] == "extproc.cli:main"


def test_the_image_installs_every_package_traces_import():
    """tracing.PACKAGES names what `extproc.tracing` imports, by distribution: each one is in what the
    image's install asks for, and each listed module really is that distribution's (so the list cannot
    drift from the imports either: tracing.start imports nothing else)."""
    installed = requirements(image_extras())
    for distribution, modules in tracing.PACKAGES.items():
        assert distribution in installed, f"the image does not install {distribution}, which traces need"
        files = {str(f) for f in importlib.metadata.files(distribution) or ()}
        for module in modules:
            path = module.replace(".", "/")
            assert f"{path}.py" in files or f"{path}/__init__.py" in files, (module, distribution)
    imported = set(re.findall(r"^\s+from (opentelemetry[\w.]*) import", inspect.getsource(tracing), re.M))
    assert imported <= {m for modules in tracing.PACKAGES.values() for m in modules}
    # Without the extra, the install would miss them: the check above can fail.
    assert not {"opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc"} & requirements(set())
    tracing.require()  # and in this environment (the `dev` extra) they import


def test_the_image_puts_opentelemetry_proto_back_and_checks_that_traces_import():
    """xds-protos ships an older opentelemetry/proto/* and pip keeps whichever package it wrote last (the
    OTLP exporter then fails with `cannot import name 'InstrumentationScope'`): after the install the
    image reinstalls opentelemetry-proto's own files, at the version installed, as the Makefile does,
    then imports everything traces use, so a broken image fails its build, before removing the source."""
    commands = install_commands()
    assert "xds-protos" in requirements(set())
    assert [c[0] for c in commands] == ["pip", "proto=$(python", "pip", "cd", "python", "rm"]
    (install, version, reinstall, cd, check, remove) = (" ".join(c) for c in commands)
    assert "version('opentelemetry-proto')" in version
    assert reinstall.startswith("pip install") and "--no-deps" in reinstall and "--force-reinstall" in reinstall
    assert reinstall.endswith("opentelemetry-proto==$proto")
    assert cd == "cd /"  # the installed package is imported, not /src's copy
    assert check == "python -c from extproc.telemetry import tracing; tracing.require()"
    assert remove == "rm -rf /src"
    assert "--no-cache-dir" in install
    makefile = (REPO / "Makefile").read_text()
    assert "--force-reinstall --no-deps" in makefile and '"opentelemetry-proto==' in makefile


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

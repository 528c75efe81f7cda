"""Shared fixtures.

The end-to-end harness starts `extproc.devtools.dev.DevStack`, exactly what `llm-extproc dev` runs: the mock
upstream, the sidecar on a unix socket and a real Envoy. Stacks are cached per test module and
config, and every process is stopped when the module ends, whether its tests passed or not.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import json_lines
from hypothesis import HealthCheck, settings

from extproc.devtools.dev import DevStack

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
POLL_DEADLINE_S = 10.0
_UNSET: Any = object()

# Property tests judge correctness, not speed: on a loaded 2-core machine Hypothesis' timing health check
# and per-example deadline fail runs that found no bug.
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")


class E2EStack:
    """A running `DevStack` plus clients for Envoy, the mock upstream and Envoy's admin."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.url = stack.url
        self.mock_url = stack.upstream_url
        self.folder = stack.config_path.parent
        self.http = httpx.Client(base_url=self.url, timeout=10, trust_env=False)
        self._mock = httpx.Client(base_url=self.mock_url, timeout=10, trust_env=False)
        self._admin = httpx.Client(base_url=stack.admin_url, timeout=10, trust_env=False)

    def close(self) -> None:
        for client in (self.http, self._mock, self._admin):
            client.close()
        self.stack.stop()

    # ---- the mock upstream ----
    def mock_last(self) -> dict[str, Any] | None:
        response = self._mock.get("/__mock/last")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def mock_requests(self) -> list[dict[str, Any]]:
        response = self._mock.get("/__mock/requests")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def mock_clear(self) -> None:
        self._mock.delete("/__mock/requests").raise_for_status()

    # ---- Envoy ----
    def access_log(self) -> list[dict[str, Any]]:
        path = self.stack.access_log_path
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line Envoy is still writing
                continue
        return entries

    def access_entry(self, request_id: str) -> dict[str, Any]:
        """The access log line of one request; Envoy writes it after the response, so poll for it."""
        deadline = time.monotonic() + POLL_DEADLINE_S
        while True:
            for entry in self.access_log():
                if request_id in (entry.get("request_id"), entry.get("client_request_id")):
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"no access log line for request {request_id}: {self.access_log()}")
            time.sleep(0.02)

    def request_id_of(self, client_request_id: str) -> str:
        """The id Envoy gave the request the client sent with `x-request-id: client_request_id` (hooks
        see it as `litellm_call_id`, the sidecar logs it)."""
        envoy_id: str = self.access_entry(client_request_id)["request_id"]
        return envoy_id

    def stat(self, name: str) -> int:
        response = self._admin.get("/stats", params={"filter": f"^{name}$"})
        response.raise_for_status()
        for line in response.text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        raise AssertionError(f"no Envoy stat {name!r}")

    # ---- the sidecar ----
    def sidecar_log(self) -> str:
        return self.stack.children["sidecar"].output()

    def hook_calls(self) -> list[dict[str, Any]]:
        """Lines a test handler appended to `calls.jsonl` next to its config (a test convention)."""
        return json_lines(self.folder / "calls.jsonl")


StackFactory = Callable[..., E2EStack]


@pytest.fixture(scope="module")
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """`e2e_stack(config_yaml, {"file.py": source})` or `e2e_stack(path_to_config)`: a running stack.

    Keyword options go to `DevStack` (e.g. `upstream="http://127.0.0.1:8000"`).
    One stack per distinct config within a module; all are stopped at the module's end.
    """
    stacks: dict[tuple[Any, ...], E2EStack] = {}

    def make(config: str | Path, files: Mapping[str, str] | None = None, **options: Any) -> E2EStack:
        key = (str(config), tuple(sorted((files or {}).items())), tuple(sorted(options.items())))
        if key in stacks:
            return stacks[key]
        if isinstance(config, Path):
            config_path = config
        else:
            folder = tmp_path_factory.mktemp("stack")
            for name, source in (files or {}).items():
                (folder / name).write_text(source)
            config_path = folder / "config.yaml"
            config_path.write_text(config)
        stack = E2EStack(DevStack(config_path, **options).start())
        stacks[key] = stack
        return stack

    try:
        yield make
    finally:
        for stack in stacks.values():
            stack.close()


@pytest.fixture()
def request_id() -> str:
    """A fresh `x-request-id`: Envoy makes its own, but logs the client's as `client_request_id`, so
    access log lines can be found by it."""
    return f"e2e-{uuid.uuid4().hex}"


def check_error(
    response: httpx.Response,
    status: int,
    message: str | None = None,
    kind: str | None = None,
    param: Any = _UNSET,
) -> dict[str, Any]:
    """Assert an OpenAI error envelope with this status (and message/type/param when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert error["code"] == str(status), error
    if message is not None:
        assert error["message"] == message, error
    if kind is not None:
        assert error["type"] == kind, error
    if param is not _UNSET:
        assert error["param"] == param, error
    result: dict[str, Any] = error
    return result


@pytest.fixture(scope="session")
def assert_error() -> Callable[..., dict[str, Any]]:
    """`assert_error(response, status, message=..., kind=..., param=...)` -> the envelope's `error`."""
    return check_error

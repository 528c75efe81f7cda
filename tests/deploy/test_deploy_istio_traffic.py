"""Requests through the chart's Istio EnvoyFilter: its patches spliced into a static bootstrap whose routes are
a mesh proxy's (one catch-all route to the upstream, none of the generated bootstrap's own routes or local
replies), a real Envoy, the sidecar, and an upstream that answers as soon as it has a request's headers.

A POST to a hooked endpoint is one ext_proc message, held from the upstream until the hooks decide; every
other request goes through the headers-first filter, where the sidecar refuses what looks like an LLM
call it does not hook and passes the rest."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import EagerUpstream, ext_proc_phases, json_lines, poll

from extproc.devtools.dev import DevStack
from extproc.envoy import envoy_config
from extproc.request.pipeline import Pipeline

from .helpers import ISTIO, by_kind, hcm, merge, objects, write_configmap
from .test_deploy_envoy import splice

pytestmark = pytest.mark.e2e

HANDLER = """\
import json
from pathlib import Path

from extproc import CustomLogger, HTTPException

SEEN = Path(__file__).with_name("seen.jsonl")


class Handler(CustomLogger):
    async def async_pre_call_hook(self, user_api_key_dict, cache, data, call_type):
        with SEEN.open("a") as seen:
            seen.write(json.dumps({"content": data["messages"][-1]["content"], "call_type": call_type}) + "\\n")
        if data["messages"][-1]["content"] == "forbidden":
            raise HTTPException(status_code=403, detail={"error": "refused by the hook"})
        return data


handler = Handler()
"""
VALUES = merge(
    ISTIO,
    {
        "config": {"litellm_settings": {"callbacks": ["custom_callbacks.handler"]}},
        "handlers": {"custom_callbacks.py": HANDLER},
    },
)
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


class MeshStack(DevStack):
    """The dev stack with Envoy configured as the mesh proxy the EnvoyFilter patches."""

    def __init__(self, envoy_filter: dict[str, Any], config_path: Path, upstream: str) -> None:
        super().__init__(config_path, upstream=upstream)
        self.envoy_filter = envoy_filter

    def bootstrap(self, pipeline: Pipeline) -> dict[str, Any]:
        generated = super().bootstrap(dataclasses.replace(pipeline, one_message=False))
        spliced = splice(self.envoy_filter, generated)
        manager = hcm(spliced)
        manager.pop("local_reply_config")  # the mesh's own HCM has none of ours
        route = {"match": {"prefix": "/"}, "route": {"cluster": envoy_config.UPSTREAM_CLUSTER, "timeout": "0s"}}
        virtual_host = {"name": "mesh", "domains": ["*"], "routes": [route]}
        manager["route_config"] = {"name": "mesh", "virtual_hosts": [virtual_host]}
        return spliced


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshStack, EagerUpstream]]:
    folder = tmp_path_factory.mktemp("mesh")
    docs = objects(VALUES)
    config_path = write_configmap(docs, folder)
    upstream = EagerUpstream()
    stack = MeshStack(by_kind(docs, "EnvoyFilter"), config_path, upstream.url).start()
    try:
        yield stack, upstream
    finally:
        stack.stop()
        upstream.close()


def seen(stack: MeshStack) -> list[dict[str, Any]]:
    return json_lines(stack.config_path.with_name("seen.jsonl"))


def logged(stack: MeshStack, path: str) -> dict[str, Any]:
    """The access log entry of the last request on `path`."""
    entries = poll(lambda: [e for e in json_lines(stack.access_log_path) if e["path"] == path], path)
    entry: dict[str, Any] = entries[-1]
    return entry


def test_a_hooked_post_is_one_message_held_until_the_hooks_decide(mesh):
    stack, upstream = mesh
    before = upstream.accepted
    refused = httpx.post(stack.url + "/v1/chat/completions", json={**CHAT, "messages": [
        {"role": "user", "content": "forbidden"}]}, timeout=10)  # fmt: skip
    assert refused.status_code == 403 and refused.json()["error"]["message"] == "refused by the hook"
    assert upstream.accepted == before  # not even the headers went up
    passed = httpx.post(stack.url + "/v1/chat/completions?trace=1", json=CHAT, timeout=10)
    assert passed.status_code == 200 and passed.json()["model"] == "eager"
    assert [s["content"] for s in seen(stack)][-2:] == ["forbidden", "hi"]
    # One message: the request body alone (no request-headers message) on the one-message filter.
    assert ext_proc_phases(logged(stack, "/v1/chat/completions")) == {"rb": 1}


def test_a_hooked_post_without_a_body_is_refused_in_the_familys_shape(mesh):
    stack, upstream = mesh
    before = upstream.accepted
    openai = httpx.post(stack.url + "/v1/chat/completions", timeout=10)
    assert openai.status_code == 400 and openai.headers["content-type"] == "application/json"
    assert openai.json()["error"]["param"] == "request_body"
    anthropic = httpx.post(stack.url + "/v1/messages?beta=true", timeout=10)
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "invalid_request_error"
    assert upstream.accepted == before


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/V1/Chat/Completions"), ("PUT", "/v1/chat/completions"), ("POST", "/v1/chat/completions.json")],
)
def test_what_looks_like_an_unhooked_llm_call_is_refused_by_the_sidecar(mesh, method, path):
    stack, upstream = mesh
    before, hooked = upstream.accepted, len(seen(stack))
    answer = httpx.request(method, stack.url + path, content=json.dumps(CHAT), timeout=10)
    assert answer.status_code == 404, answer.text
    assert "the hooks do not cover" in answer.json()["error"]["message"]
    assert upstream.accepted == before and len(seen(stack)) == hooked


@pytest.mark.parametrize(("method", "path"), [("GET", "/healthz"), ("POST", "/api/orders"), ("GET", "/v1/models")])
def test_other_traffic_passes_unhooked(mesh, method, path):
    stack, _ = mesh
    hooked = len(seen(stack))
    answer = httpx.request(method, stack.url + path, content=b"{}" if method == "POST" else None, timeout=10)
    assert answer.status_code == 200 and answer.json()["model"] == "eager"
    assert len(seen(stack)) == hooked
    assert "rb" not in ext_proc_phases(logged(stack, path))  # the one-message filter skipped it

"""`llm-extproc try`: the configured hooks on a saved request (and upstream answer), without Envoy.

It drives the real `Session` through `Session.handle`, the entry point the transport uses, with an
outbox that records what would be pushed or streamed and the chain's tracer recording every hook call:
the report is what Envoy would be told. A fresh in-process `DualCache`
is used, so a trial never touches the counters of a shared (Redis) cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import orjson

import extproc
from extproc.decisions import BodyMode, Continue, Decision, Message, Reply
from extproc.errors import is_http_exception
from extproc.hooks.hook import Hook
from extproc.request import pipeline as pipeline_module
from extproc.request.session import Session
from extproc.state.cache import DualCache
from extproc.types import HookKind, Phase

REFUSED_EXIT = 3
_FAILURE_HOOK = HookKind.POST_CALL_FAILURE.value
_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)")
_SSE_START = (b"data:", b"event:", b"id:", b":")
JSONDoc = dict[str, Any]
_PACKAGE_DIR = str(Path(extproc.__file__).parent)


def crash_site(exc: BaseException) -> list[str]:
    """Where a hook raised, innermost last: `file:line in function` for each frame outside llm-extproc
    (the hook's own code and what it called), so the report points at the line to fix."""
    frames = traceback.extract_tb(exc.__traceback__)
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in frames if not f.filename.startswith(_PACKAGE_DIR)]


class Recorder:
    """An `Outbox` that records a pushed reply and the full-duplex body bytes."""

    def __init__(self) -> None:
        self.pushed: list[Reply] = []
        self.streamed: list[bytes] = []
        self.metadata: dict[str, Any] = {}
        self.finished = asyncio.Event()

    async def push(self, reply: Reply) -> bool:
        if self.pushed:
            return False
        self.pushed.append(reply)
        return True

    async def extend_timeout(self, seconds: float) -> None:
        return None

    async def stream(self, body: bytes, end_of_stream: bool, metadata: dict[str, Any] | None = None) -> bool:
        self.streamed.append(body)
        self.metadata.update(metadata or {})
        if end_of_stream:
            self.finished.set()
        return True


def request_content_type(body: bytes) -> str:
    """JSON, or multipart when the body starts with a boundary line (its boundary named)."""
    if body.startswith(b"--"):
        boundary = body.split(b"\n", 1)[0][2:].strip().decode("latin-1")
        return f"multipart/form-data; boundary={boundary}"
    return "application/json"


def is_sse(path: Path, body: bytes) -> bool:
    return path.suffix == ".sse" or body.lstrip().startswith(_SSE_START)


def shown(body: bytes) -> Any:
    """A body for the report: decoded JSON, else text (undecodable bytes escaped)."""
    try:
        return orjson.loads(body)
    except ValueError:
        return body.decode("utf-8", "backslashreplace")


def _reply(reply: Reply, phase: str) -> JSONDoc:
    meta = reply.metadata or {}
    return {
        "phase": phase,
        "by": meta.get("refused_by") or meta.get("failed_in"),
        "verdict": meta.get("verdict"),
        "status": reply.status,
        "content_type": reply.content_type,
        "headers": dict(reply.headers),
        "details": reply.details,
        "body": shown(reply.body),
    }


class Trial:
    """One request (and maybe its answer) through a fresh pipeline; `document` is the report."""

    def __init__(self, config_path: str | Path, response_status: int = 200) -> None:
        self.status = response_status
        self.pipeline = pipeline_module.load(config_path, cache=DualCache())
        self.calls: list[JSONDoc] = []
        self.pipeline.chain.tracer = self._traced
        self.outbox = Recorder()
        self.session = Session(self.pipeline, self.outbox)
        self.metadata: dict[str, Any] = {}
        self.document: JSONDoc = {"config": str(self.pipeline.config.path), "hooks": self.calls}

    def _traced(self, hook: Hook, outcome: str) -> None:
        """The chain's tracer; it is called inside the `except` that caught a hook's exception, so a
        crash's traceback is at hand: its frames in the hook's files go in the report."""
        call: JSONDoc = {"hook": hook.label, "outcome": outcome}
        raised = sys.exc_info()[1]
        if outcome.startswith("raised ") and raised is not None and not is_http_exception(raised):
            call["at"] = crash_site(raised)  # a crash, not a deliberate refusal
        self.calls.append(call)

    async def _send(
        self, phase: Phase, headers: dict[str, str], body: bytes, end_of_stream: bool
    ) -> Decision:
        decision, _ = await self.session.handle(phase, Message(headers, body, end_of_stream))
        return self._note(decision)

    def _note(self, decision: Decision) -> Decision:
        if isinstance(decision, Continue | Reply) and decision.metadata:
            self.metadata.update(decision.metadata)
        return decision

    def _refused(self, decision: Decision, phase: str) -> bool:
        """Record the client's answer when it is a pushed or immediate reply."""
        reply = self.outbox.pushed[0] if self.outbox.pushed else decision
        if not isinstance(reply, Reply):
            return False
        self._note(reply)
        refusal = self.document["refusal"] = _reply(reply, "moderation" if self.outbox.pushed else phase)
        if refusal["by"] not in {call["hook"] for call in self.calls}:  # e.g. "moderation": which hook?
            raised = (c["hook"] for c in self.calls if c["outcome"].startswith("raised "))
            refusal["by"] = next((h for h in raised if not h.endswith(_FAILURE_HOOK)), refusal["by"])
        return True

    async def run(self, body: bytes, headers: dict[str, str], response: bytes | None, sse: bool) -> JSONDoc:
        session, doc = self.session, self.document
        doc.update(
            request={"headers": headers}, hooked=True, upstream_request=None, refusal=None, response=None
        )
        decision = await self._send(Phase.REQUEST_HEADERS, headers, b"", False)
        if session.passthrough:
            doc["hooked"] = False
        else:
            if not isinstance(decision, Reply):
                decision = await self._send(Phase.REQUEST_BODY, {}, body, True)
            if not self._refused(decision, "request"):
                assert isinstance(decision, Continue)
                sent = decision.body if decision.body is not None else body
                doc["upstream_request"] = {
                    "changed": decision.body is not None,
                    "headers_set": dict(decision.set_headers),
                    "body": shown(sent),
                }
                if response is not None:
                    await self._respond(response, sse)
                elif session.moderation is not None:
                    self._refused(await session.moderation.verdict() or Continue(), "moderation")
            if response is not None or session.ending.ended:
                session.close()
        await self._settle()
        refused = doc["refusal"] is not None and doc["refusal"]["verdict"] != "upstream_error"
        stream_error = doc["response"] is not None and doc["response"]["stream_error"]
        doc["metadata"] = self.metadata
        doc["exit_code"] = REFUSED_EXIT if refused or stream_error else 0
        return doc

    async def _respond(self, body: bytes, sse: bool) -> None:
        content_type = "text/event-stream" if sse else "application/json"
        headers = {":status": str(self.status), "content-type": content_type}
        decision = await self._send(Phase.RESPONSE_HEADERS, headers, b"", False)
        if self._refused(decision, "response"):
            return
        assert isinstance(decision, Continue)
        added = dict(decision.set_headers)
        mode = decision.mode.response_body if decision.mode else BodyMode.NONE
        chunks = [part for part in _EVENT_END.split(body) if part] if sse else [body]
        out = [body] if mode is BodyMode.NONE else []
        for index, chunk in enumerate(chunks if mode is not BodyMode.NONE else ()):
            answer = await self._send(Phase.RESPONSE_BODY, {}, chunk, index == len(chunks) - 1)
            if self._refused(answer, "response"):
                return
            if isinstance(answer, Continue):
                added.update(answer.set_headers)
                out.append(chunk if answer.body is None else answer.body)
        if mode is BodyMode.FULL_DUPLEX_STREAMED:
            with contextlib.suppress(TimeoutError):  # a generator that never ends: report what it sent
                await asyncio.wait_for(self.outbox.finished.wait(), self._timeout_s)
            out = self.outbox.streamed
            self.metadata.update(self.outbox.metadata)
        sent = b"".join(out)
        self.document["response"] = {
            "status": self.status,
            "body_mode": mode.name,
            "changed": sent != body,
            "headers_added": {k: v for k, v in added.items() if k != "content-length"},
            "headers_removed": list(decision.remove_headers),
            "stream_error": sse and any(line.startswith(b'data: {"error"') for line in sent.splitlines()),
            "body": shown(sent),
        }

    @property
    def _timeout_s(self) -> float:
        return self.pipeline.config.sidecar.hook_timeout_ms / 1000 + 1

    async def _settle(self) -> None:
        """Let background work (logging hooks, endings) finish, so its calls are reported."""
        background = self.pipeline.chain.background
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout_s):
                await asyncio.sleep(0)
                while background:
                    await asyncio.wait(set(background))


async def run(
    config_path: str | Path,
    body: bytes,
    *,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
    response: bytes | None = None,
    sse: bool = False,
    response_status: int = 200,
) -> JSONDoc:
    """The report of one request (and answer) through the hooks of `config_path`."""
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    content_type = extra.pop("content-type", request_content_type(body))
    request_headers = {":path": path, ":method": "POST", ":scheme": "http", ":authority": "try"}
    request_headers |= {
        "content-type": content_type,
        "content-length": str(len(body)),
        "x-request-id": "try-1",
    }
    return await Trial(config_path, response_status).run(body, request_headers | extra, response, sse)


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def render(doc: JSONDoc) -> str:
    """The report for humans."""
    headers = doc["request"]["headers"]
    lines = [f"config: {doc['config']}", f"request: POST {headers[':path']} (x-request-id: try-1)"]
    if not doc["hooked"]:
        lines.append("not hooked: not an LLM route, or no hook needs the sidecar; it passes untouched")
    lines.append("hooks, in the order they ran:" if doc["hooks"] else "hooks: none ran")
    for call in doc["hooks"]:
        lines.append(f"  {call['hook']}: {call['outcome']}")
        lines += [f"    at {site}" for site in call.get("at", ())]
    upstream, refusal, response = doc["upstream_request"], doc["refusal"], doc["response"]
    if upstream is not None:
        if upstream["changed"]:
            set_headers = ", ".join(f"{k}: {v}" for k, v in upstream["headers_set"].items())
            lines += [f"sent upstream, changed ({set_headers}):", _pretty(upstream["body"])]
        else:
            lines.append("sent upstream: unchanged (the original bytes)")
    if response is not None:
        change = "changed" if response["changed"] else "unchanged"
        lines.append(f"response to the client: {response['status']}, {change} ({response['body_mode']})")
        lines += [f"  header added: {k}: {v}" for k, v in response["headers_added"].items()]
        if response["changed"]:
            lines.append(_pretty(response["body"]))
        if response["stream_error"]:
            lines.append("the stream ends with an error event")
    if refusal is not None:
        what = "refused" if refusal["verdict"] == "refused" else "failed"
        by = refusal["by"] or "the sidecar itself (no hook)"
        lines.append(f"{what} at the {refusal['phase']} phase, by {by}")
        lines.append(f"the client gets: {refusal['status']} {refusal['content_type']}")
        lines += [f"  header: {k}: {v}" for k, v in refusal["headers"].items()]
        lines.append(_pretty(refusal["body"]))
    verdict = doc["metadata"].get("verdict", "pass" if doc["hooked"] else "not hooked")
    result = "refused or failed" if doc["exit_code"] else "goes through"
    lines.append(f"result: {result} (verdict: {verdict}, exit {doc['exit_code']})")
    return "\n".join(lines)

"""`Session`: one HTTP request's state and decisions, phase by phase, free of protobuf.

A session is created per gRPC stream (one stream = one HTTP request) and dies with it. It
takes the `Pipeline` current at its start, so a reload never changes a request in flight.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from extproc.chain import HookFailed
from extproc.codecs import BodyError
from extproc.decisions import CONTINUE, PASS_THROUGH_MODE, Continue, Decision, Reply
from extproc.endpoints import Endpoint, field_problem
from extproc.errors import ErrorReply, envelope, from_exception
from extproc.multipart import MultipartError
from extproc.pipeline import Pipeline
from extproc.refusals import refusal_reply
from extproc.types import Headers, JSONDict

log = logging.getLogger("extproc.session")

PASS_THROUGH = Continue(mode=PASS_THROUGH_MODE)
ENFORCE_USER_MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"
# Keys the sidecar adds to `data` for hooks (as LiteLLM does); never sent upstream.
SIDECAR_KEYS = ("metadata", "litellm_call_id", "proxy_server_request")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})


def public_headers(headers: Headers) -> Headers:
    """Request headers for hooks and logs: no pseudo-headers, no credentials."""
    return {k: v for k, v in headers.items() if k[0] != ":" and k not in SECRET_HEADERS}


class Session:
    """The state of one request, from its headers to its last response byte."""

    __slots__ = ("endpoint", "headers", "metadata", "passthrough", "pipeline", "request_id", "started")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.endpoint: Endpoint | None = None
        self.headers: Headers = {}
        self.metadata: dict[str, Any] = {}
        self.passthrough = False
        self.request_id = ""
        self.started = time.monotonic()

    # ---- request side ----
    async def request_headers(
        self, headers: Headers, end_of_stream: bool, metadata: dict[str, Any]
    ) -> Decision:
        pipeline = self.pipeline
        endpoint = pipeline.routes.match(headers.get(":path", ""))
        if endpoint is None or headers.get(":method") != "POST" or not pipeline.needs_sidecar:
            self.passthrough = True
            return PASS_THROUGH
        self.endpoint = endpoint
        self.headers = headers
        self.metadata = metadata
        self.request_id = headers.get("x-request-id", "")
        content_type = headers.get("content-type", "")
        if not endpoint.codec.accepts(content_type):
            expected = (
                "multipart/form-data" if endpoint.codec.accepts("multipart/form-data") else "application/json"
            )
            return self._error(
                415,
                f"Unsupported content-type {content_type!r} for {endpoint.path}: send {expected}",
                "content-type",
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            return self._error(
                415,
                f"Unsupported content-encoding {encoding!r}: send the body uncompressed",
                "content-encoding",
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > pipeline.config.sidecar.max_request_bytes:
            return self._too_large()
        if end_of_stream:
            return await self._body(b"")
        return Continue(mode=pipeline.request_mode)

    async def request_body(self, body: bytes, end_of_stream: bool) -> Decision:
        if self.passthrough or self.endpoint is None:
            return CONTINUE
        if not end_of_stream:
            log.error("request body arrived in parts: configure Envoy's request_body_mode as BUFFERED")
            self.passthrough = True
            return CONTINUE
        return await self._body(body)

    # ---- response side (no response-side hooks yet: pass through) ----
    async def response_headers(self, headers: Headers, end_of_stream: bool) -> Decision:
        return CONTINUE

    async def response_body(self, body: bytes, end_of_stream: bool) -> Decision:
        return CONTINUE

    def close(self) -> None:
        """Release per-request state; called once when the gRPC stream ends, however it ends."""
        self.headers = {}
        self.metadata = {}

    # ---- the request body: decode, enforce, run pre-call hooks, re-encode if changed ----
    async def _body(self, body: bytes) -> Decision:
        pipeline = self.pipeline
        endpoint = self.endpoint
        assert endpoint is not None
        if len(body) > pipeline.config.sidecar.max_request_bytes:
            return self._too_large()
        content_type = self.headers.get("content-type", "")
        try:
            data = endpoint.codec.decode(body, content_type)
        except BodyError as exc:
            return self._error(exc.status, exc.message, exc.param)
        if pipeline.config.enforce_user_param and "user" not in data:
            return self._error(401, ENFORCE_USER_MESSAGE, None, kind="auth_error")
        problem = field_problem(endpoint, data)
        if problem is not None:
            return self._error(400, *problem)
        chain = pipeline.chain
        if not chain.pre_call_hooks:
            return CONTINUE
        end_user = data.get("user")
        user = pipeline.config.sidecar.auth.build(
            self.headers, self.metadata, end_user if isinstance(end_user, str) else None, endpoint.path
        )
        pristine = endpoint.codec.decode(body, content_type)
        self._add_sidecar_keys(data, user.api_key)
        try:
            result = await chain.pre_call(user, pipeline.cache, data, endpoint.call_type.value)
        except HookFailed as failure:
            log.warning("request %s failed in %s: %r", self.request_id, failure.hook.label, failure.cause)
            return self._reply(from_exception(failure.cause), "pre_call_error")
        data = result.data
        if result.refusal is not None:
            log.info("request %s refused by %s", self.request_id, result.refused_by)
            stream = data.get("stream") is True
            return refusal_reply(endpoint.call_type, stream, result.refusal)
        _restore_sidecar_keys(data, pristine)
        if data == pristine:
            return CONTINUE
        try:
            new_body = endpoint.codec.encode(data, content_type)
        except (TypeError, MultipartError) as exc:
            # orjson raises TypeError for values that are not JSON (a hook put one in `data`).
            log.warning("request %s: the hooks' data cannot be encoded: %s", self.request_id, exc)
            return self._error(
                500, f"llm-extproc: the request changed by hooks cannot be encoded: {exc}", None
            )
        return Continue(set_headers=(("content-length", str(len(new_body))),), body=new_body)

    def _add_sidecar_keys(self, data: JSONDict, key_hash: str | None) -> None:
        client_metadata = data.get("metadata")
        headers = public_headers(self.headers)
        metadata: JSONDict = dict(client_metadata) if isinstance(client_metadata, dict) else {}
        metadata.update(
            headers=headers,
            user_api_key=key_hash,
            user_api_key_hash=key_hash,
            endpoint=self.headers.get(":path", ""),
            request_id=self.request_id,
        )
        data["metadata"] = metadata
        data["litellm_call_id"] = self.request_id
        data["proxy_server_request"] = {
            "url": self.headers.get(":path", ""),
            "method": "POST",
            "headers": headers,
        }

    # ---- local replies ----
    def _too_large(self) -> Reply:
        limit = self.pipeline.config.sidecar.max_request_bytes
        return self._error(413, f"Request body too large: the limit is {limit} bytes", "request_body")

    def _error(self, status: int, message: str, param: str | None, kind: str | None = None) -> Reply:
        log.info("request %s rejected: %d %s", self.request_id, status, message)
        return self._reply(envelope(status, message, param=param, kind=kind), "invalid_request")

    @staticmethod
    def _reply(error: ErrorReply, details: str) -> Reply:
        return Reply(error.status, error.body, error.headers, details)


def _restore_sidecar_keys(data: JSONDict, pristine: JSONDict) -> None:
    for key in SIDECAR_KEYS:
        if key in pristine:
            data[key] = pristine[key]
        else:
            data.pop(key, None)

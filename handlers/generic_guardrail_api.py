"""LiteLLM's Generic Guardrail API: a guardrail service of your own, reached over HTTP.

```yaml
guardrails:
  - guardrail_name: my-service
    litellm_params:
      guardrail: generic_guardrail_api
      mode: [pre_call, post_call]
      api_base: http://guard:8080          # `/beta/litellm_basic_guardrail_api` is appended
      api_key: os.environ/GUARD_KEY        # sent as `x-api-key`
      headers: {x-tenant: a}               # more headers sent to the service
      extra_headers: [x-request-source]    # client headers whose values the service may see
      additional_provider_specific_params: {threshold: 0.8}
```

For each request (and, with `post_call`, each answer) the service gets one JSON POST: `texts`, `images`,
`tools`, `tool_calls`, `structured_messages`, `model`, `input_type` (`request` or `response`),
`request_data` (the caller's `user_api_key_*` fields), `request_headers` (the client's headers: values
only for a short allow list and `extra_headers`, `[present]` for the others), `litellm_call_id`,
`litellm_trace_id` and `additional_provider_specific_params` (the configured ones, overlaid by the
request's `guardrails: [{<name>: {"extra_body": {...}}}]`). It answers `{"action": ...}`:
- `BLOCKED`: the client gets 400 with `blocked_reason` (default "Content violates policy");
- `NONE`: nothing changes;
- `GUARDRAIL_INTERVENED`: the returned `texts` (and `images`, `tools`, `tool_calls`) replace the ones sent,
  one for one, and the sidecar writes them back where they came from.

Failures, told apart as LiteLLM tells them apart: a service that cannot be reached (refused or reset
connection, DNS, the `timeout` below passing) or a gateway in front of it answering 502, 503 or 504 raises
`extproc.errors.GuardrailUnreachable`, which `unreachable_fallback: fail_open` lets through; any other
status, or an answer that is not one of the three actions, is an error (`fail_on_error` decides).
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx
import orjson

from extproc.errors import GuardrailUnreachable
from extproc.hooks.guardrail import CustomGuardrail

if TYPE_CHECKING:
    from extproc.api.guardrail_inputs import GenericGuardrailAPIInputs

ENDPOINT = "/beta/litellm_basic_guardrail_api"
ACTIONS = ("BLOCKED", "NONE", "GUARDRAIL_INTERVENED")
DEFAULT_BLOCK_REASON = "Content violates policy"
# Below the default hook timeout (5 s), so a hung service counts as unreachable before the hook's deadline.
DEFAULT_TIMEOUT_S = 4.0
# A gateway's answers meaning the service behind it is down or slow: unreachable, as LiteLLM counts them.
UNREACHABLE_STATUSES = frozenset({502, 503, 504})
# Client headers whose values the service sees; every other header is sent as "[present]".
HEADER_VALUES_SENT = ("host", "accept", "accept-encoding", "connection", "content-type", "content-length",
                      "user-agent", "x-stainless-*", "x-litellm-*")  # fmt: skip
HEADER_PRESENT = "[present]"
# The caller's fields the service gets as `request_data` (LiteLLM's `GenericGuardrailAPIMetadata`).
CALLER_FIELDS = ("user_api_key_hash", "user_api_key_alias", "user_api_key_user_id", "user_api_key_user_email",
                 "user_api_key_team_id", "user_api_key_team_alias", "user_api_key_end_user_id",
                 "user_api_key_org_id")  # fmt: skip
# LiteLLM's streaming options: the sidecar always gives the service a streamed answer's whole text at
# its end and writes a rewrite back, which these options only approximate; accepted, nothing to do.
STREAMING_OPTIONS = frozenset(
    {"streaming_end_of_stream_only", "streaming_sampling_rate", "streaming_transform_mode"}
)
# LiteLLM options that change what is checked or whether a verdict counts: refused, never ignored.
UNSUPPORTED_OPTIONS = frozenset({
    "fire_and_forget", "fire_and_forget_max_inflight", "send_images", "exclude_payload_fields",
    "max_messages", "max_text_chars", "strip_patterns", "skip_if_system_prompt_matches",
    "skip_if_first_role_in", "skip_if_key_alias_in", "skip_if_team_id_in", "run_only_on_call_types",
    "skip_call_types", "guardrail_information_scope",
})  # fmt: skip


class GuardrailRaisedException(Exception):
    """The service refused (`BLOCKED`): the client gets 400 with the service's reason as the message.

    LiteLLM's name and fields (`guardrail_name`, `status_code`, `message`); `detail` makes it an HTTP
    exception for the sidecar's error answers."""

    def __init__(self, guardrail_name: str | None, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.guardrail_name = guardrail_name
        self.message = message
        self.status_code = status_code
        self.detail = message


class GenericGuardrailAPIError(Exception):
    """The service answered, but not with a verdict: an error status, or a body that is not one."""


def _endpoint(api_base: Any) -> str:
    if not isinstance(api_base, str) or not re.match(r"https?://[^/\s]+", api_base):
        raise ValueError(
            "api_base: required, the service's http(s) URL such as http://guard:8080 "
            f"(or GENERIC_GUARDRAIL_API_BASE), not {api_base!r}"
        )
    base = api_base.rstrip("/")
    return base if base.endswith(ENDPOINT) else f"{base}{ENDPOINT}"


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{where}: expected a mapping of header name to value, not {value!r}")
    return {name: str(v) for name, v in value.items()}


def _header_names(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"extra_headers: expected a list of client header names to pass on, not {value!r}")
    return frozenset(name.lower() for name in value)


def _positive_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"timeout: expected a positive number of seconds, not {value!r}")
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class GenericGuardrailAPI(CustomGuardrail):
    """`guardrail: generic_guardrail_api`: the texts of requests and answers checked by an HTTP service."""

    def __init__(
        self,
        api_base: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        extra_headers: list[str] | None = None,
        additional_provider_specific_params: Mapping[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        unsupported = sorted(UNSUPPORTED_OPTIONS & kwargs.keys())
        if unsupported:
            raise ValueError(
                f"{', '.join(unsupported)}: LiteLLM's generic_guardrail_api option(s) that llm-extproc does "
                "not have; remove them (or put the logic in the guardrail service)"
            )
        for option in STREAMING_OPTIONS:
            kwargs.pop(option, None)
        self.api_base = _endpoint(api_base or os.environ.get("GENERIC_GUARDRAIL_API_BASE"))
        self.headers = {"content-type": "application/json", **_string_map(headers, "headers")}
        if api_key is not None:
            if not isinstance(api_key, str) or not api_key:
                raise ValueError("api_key: expected a non-empty string")
            self.headers["x-api-key"] = api_key
        self.extra_headers = _header_names(extra_headers)
        if additional_provider_specific_params is not None and not isinstance(
            additional_provider_specific_params, Mapping
        ):
            raise ValueError(
                "additional_provider_specific_params: expected a mapping, "
                f"not {additional_provider_specific_params!r}"
            )
        self.additional_provider_specific_params = dict(additional_provider_specific_params or {})
        self.timeout_s = _positive_seconds(timeout)
        kwargs.setdefault("supported_event_hooks", ["pre_call", "during_call", "post_call"])
        super().__init__(**kwargs)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        """One client per guardrail, made inside the running loop (again if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(headers=self.headers, timeout=self.timeout_s, trust_env=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def caller_fields(self, request_data: dict[str, Any]) -> dict[str, Any]:
        """The `user_api_key_*` fields the sidecar put in the request's metadata."""
        metadata = {**_dict(request_data.get("metadata")), **_dict(request_data.get("litellm_metadata"))}
        fields = {name: metadata[name] for name in CALLER_FIELDS if metadata.get(name) is not None}
        if metadata.get("user_api_key_token") is not None:
            fields["user_api_key_hash"] = metadata["user_api_key_token"]
        return fields

    def client_headers(self, request_data: dict[str, Any]) -> dict[str, str] | None:
        """The client's headers: values only where allowed, `[present]` for the others."""
        headers = _dict(_dict(request_data.get("proxy_server_request")).get("headers")) or _dict(
            _dict(request_data.get("metadata")).get("headers")
        )
        shown: dict[str, str] = {}
        for name, value in headers.items():
            lower = str(name).lower()
            allowed = lower in self.extra_headers or any(
                fnmatch.fnmatch(lower, p) for p in HEADER_VALUES_SENT
            )
            shown[str(name)] = str(value) if allowed else HEADER_PRESENT
        return shown or None

    def provider_params(self, request_data: dict[str, Any]) -> dict[str, Any]:
        """The configured params, overlaid by the request's `extra_body` for this guardrail."""
        dynamic = self.get_guardrail_dynamic_request_body_params(request_data)
        if not dynamic and isinstance(request_data.get("body"), dict):
            dynamic = self.get_guardrail_dynamic_request_body_params(request_data["body"])
        return {**self.additional_provider_specific_params, **dynamic}

    def payload(
        self,
        inputs: GenericGuardrailAPIInputs,
        request_data: dict[str, Any],
        input_type: Literal["request", "response"],
        logging_obj: Any,
    ) -> dict[str, Any]:
        """The JSON body the service gets."""
        metadata = _dict(request_data.get("metadata"))
        call_id = getattr(logging_obj, "litellm_call_id", None) or request_data.get("litellm_call_id")
        trace_id = (
            getattr(logging_obj, "litellm_trace_id", None)
            or request_data.get("litellm_trace_id")
            or metadata.get("trace_id")
        )
        return {
            "texts": list(inputs.get("texts") or []),
            "images": inputs.get("images"),
            "tools": inputs.get("tools"),
            "tool_calls": inputs.get("tool_calls"),
            "structured_messages": inputs.get("structured_messages"),
            "model": inputs.get("model") or request_data.get("model"),
            "request_data": self.caller_fields(request_data),
            "request_headers": self.client_headers(request_data),
            "input_type": input_type,
            "litellm_call_id": call_id,
            "litellm_trace_id": trace_id,
            "additional_provider_specific_params": self.provider_params(request_data),
        }

    async def _post(self, body: bytes) -> httpx.Response:
        """POST the body; a service not reached within the timeout, or not at all, is unreachable."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._http().post(self.api_base, content=body)
        except (httpx.TransportError, TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise GuardrailUnreachable(
                f"Generic Guardrail API {self.guardrail_name or ''} at {self.api_base} unreachable: {reason}"
            ) from exc

    def _verdict(self, response: httpx.Response) -> dict[str, Any]:
        where = f"Generic Guardrail API {self.guardrail_name or ''} at {self.api_base}"
        if response.status_code in UNREACHABLE_STATUSES:
            raise GuardrailUnreachable(f"{where} unavailable: HTTP {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise GenericGuardrailAPIError(
                f"{where} failed: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            verdict = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            verdict = None
        if not isinstance(verdict, dict) or verdict.get("action") not in ACTIONS:
            raise GenericGuardrailAPIError(
                f'{where} failed: expected {{"action": {" | ".join(ACTIONS)}}}, got {response.text[:200]!r}'
            )
        return verdict

    def _changed(
        self, inputs: GenericGuardrailAPIInputs, verdict: dict[str, Any]
    ) -> GenericGuardrailAPIInputs:
        """`GUARDRAIL_INTERVENED`: the inputs with what the service returned in place of what it got."""
        result: GenericGuardrailAPIInputs = {**inputs}
        sent = list(inputs.get("texts") or [])
        texts = verdict.get("texts")
        if texts is not None:
            if (
                not isinstance(texts, list)
                or not all(isinstance(t, str) for t in texts)
                or len(texts) != len(sent)
            ):
                raise GenericGuardrailAPIError(
                    f"Generic Guardrail API {self.guardrail_name or ''} failed: GUARDRAIL_INTERVENED must "
                    f"return one text for each of the {len(sent)} sent, got {str(texts)[:200]}"
                )
            result["texts"] = texts
        for key in ("images", "tools", "tool_calls"):
            value = verdict.get(key)
            if isinstance(value, list):
                result[key] = value
        return result

    async def apply_guardrail(
        self,
        inputs: GenericGuardrailAPIInputs,
        request_data: dict[str, Any],
        input_type: Literal["request", "response"],
        logging_obj: Any = None,
    ) -> GenericGuardrailAPIInputs:
        """Ask the service about these texts; return them as they go on, or raise to refuse."""
        request_data = request_data if isinstance(request_data, dict) else {}
        body = orjson.dumps(
            self.payload(inputs, request_data, input_type, logging_obj), option=orjson.OPT_NON_STR_KEYS
        )
        verdict = self._verdict(await self._post(body))
        if verdict["action"] == "BLOCKED":
            reason = verdict.get("blocked_reason")
            message = reason if isinstance(reason, str) and reason else DEFAULT_BLOCK_REASON
            raise GuardrailRaisedException(self.guardrail_name, message)
        if verdict["action"] == "NONE":
            return inputs
        return self._changed(inputs, verdict)

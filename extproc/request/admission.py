"""The request side's rules, as plain functions that raise `ProxyException`: what is checked before any
hook runs, what the sidecar adds to `data` for hooks, and what goes upstream.

- Headers: content type, content encoding and declared length (415, 413).
- Body: decoded once by the family's codec (400, 413); `enforce_user_param` (401) and the family's
  required and typed fields (400) before any hook; the key's allowed models (403).
- `data` for hooks carries LiteLLM's `metadata`, `litellm_call_id` and `proxy_server_request`; none of it
  goes upstream (`upstream_data`), and the body is re-encoded only when what goes upstream changed.
"""

from __future__ import annotations

from typing import Any

from extproc.api.family import ApiFamily
from extproc.errors import BodyError, MultipartError, ProxyException
from extproc.request.routing import allowed
from extproc.request.state import RequestState
from extproc.settings.auth import CREDENTIAL_HEADERS, UserAPIKeyAuth
from extproc.types import Headers, JSONDict

ENFORCE_USER_MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"
# Keys the sidecar adds to `data` for hooks (as LiteLLM does); never sent upstream. `litellm_metadata` is
# the sidecar's on every family (a client's own value is kept from hooks and goes upstream as sent);
# `metadata` is the sidecar's where the family says so, else the client's own field.
OTHER_SIDECAR_KEYS = ("litellm_metadata", "litellm_call_id", "proxy_server_request")


_WITH_METADATA = ("metadata", *OTHER_SIDECAR_KEYS)


def sidecar_keys(family: ApiFamily) -> tuple[str, ...]:
    """The keys of `data` the sidecar owns on this family's requests."""
    return _WITH_METADATA if family.metadata_key == "metadata" else OTHER_SIDECAR_KEYS


# The default credential headers; `extproc.auth.credential_headers` adds to them (RequestState passes them).
SECRET_HEADERS = frozenset(CREDENTIAL_HEADERS)
# The keys the sidecar sets in `metadata` for hooks (LiteLLM's names), and the ones LiteLLM's proxy or our
# guardrails fill in later: hooks trust them, so a client's own values under these names never reach hooks
# (every `user_api_key*` name is the proxy's too). The client's `metadata` still goes upstream as sent.
RESERVED_METADATA_KEYS = frozenset(
    {
        "headers",
        "endpoint",
        "request_id",
        "requester_ip_address",
        "requester_metadata",
        "user_agent",
        "user_api_end_user_max_budget",
        "applied_guardrails",
        "standard_logging_guardrail_information",
    }
)
RESERVED_METADATA_PREFIX = "user_api_key"


def is_reserved(key: str) -> bool:
    """A `metadata` name only the sidecar may set."""
    return key in RESERVED_METADATA_KEYS or key.startswith(RESERVED_METADATA_PREFIX)


def key_fields(user: UserAPIKeyAuth) -> JSONDict:
    """LiteLLM's flattened fields of the caller's key in `metadata` (`user_api_key` is the hash too)."""
    return {
        "user_api_key": user.api_key,
        "user_api_key_hash": user.api_key,
        "user_api_key_alias": user.key_alias,
        "user_api_key_user_id": user.user_id,
        "user_api_key_user_email": user.user_email,
        "user_api_key_team_id": user.team_id,
        "user_api_key_team_alias": user.team_alias,
        "user_api_key_org_id": user.org_id,
        "user_api_key_end_user_id": user.end_user_id,
        "user_api_key_spend": user.spend,
        "user_api_key_max_budget": user.max_budget,
        "user_api_key_metadata": user.metadata,
        "user_api_key_auth_metadata": user.metadata,
        "user_api_key_team_metadata": user.team_metadata,
        "user_api_key_request_route": user.request_route,
    }


def public_headers(headers: Headers, secret: frozenset[str] = SECRET_HEADERS) -> Headers:
    """Request headers for hooks and logs: no pseudo-headers, no credentials."""
    return {k: v for k, v in headers.items() if k[0] != ":" and k not in secret}


def too_large(limit: int) -> ProxyException:
    return ProxyException(f"Request body too large: the limit is {limit} bytes", 413, "request_body")


def check_headers(family: ApiFamily, headers: Headers, limit: int) -> None:
    """What the request headers alone already refuse."""
    content_type = headers.get("content-type", "")
    if not family.codec.accepts(content_type):
        expected = (
            "multipart/form-data" if family.codec.accepts("multipart/form-data") else "application/json"
        )
        message = f"Unsupported content-type {content_type!r} for {family.path}: send {expected}"
        raise ProxyException(message, 415, "content-type")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        message = f"Unsupported content-encoding {encoding!r}: send the body uncompressed"
        raise ProxyException(message, 415, "content-encoding")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)


def decode(family: ApiFamily, body: bytes, content_type: str) -> JSONDict:
    try:
        return family.codec.decode(body, content_type)
    except BodyError as exc:
        raise ProxyException(exc.message, exc.status, exc.param) from None


def check_body(family: ApiFamily, data: JSONDict, enforce_user: bool) -> None:
    """`enforce_user_param`, then the family's required and typed fields."""
    if enforce_user and not family.has_user(data):
        raise ProxyException(ENFORCE_USER_MESSAGE, 401, None, "auth_error")
    problem = family.problem(data)
    if problem is not None:
        raise ProxyException(problem[0], 400, problem[1])


def check_model(requested_model: Any, models: list[str]) -> None:
    """The key may use only its allowed models."""
    if not allowed(requested_model, models):
        message = (
            f"key not allowed to access model. This key can only access models={models}. "
            f"Tried to access {requested_model}"
        )
        raise ProxyException(message, 403, "model")


def client_values(family: ApiFamily, data: JSONDict) -> JSONDict:
    """What the client itself sent under the keys the sidecar uses: it goes upstream as sent."""
    return {key: data[key] for key in sidecar_keys(family) if key in data}


def add_sidecar_keys(data: JSONDict, request: RequestState) -> JSONDict:
    """LiteLLM's additions for hooks: the family's metadata key (`metadata`: the client's own, less the
    reserved names; `litellm_metadata`: new, the client's `metadata` left as it is), holding headers, the
    key's flattened fields, endpoint, request id and the client's own metadata as `requester_metadata`;
    `litellm_call_id` and `proxy_server_request`. The key fields come from the caller's `UserAPIKeyAuth`
    only, and a client's own `litellm_metadata` never reaches hooks (it goes upstream as sent)."""
    key = request.family.metadata_key if request.family is not None else "metadata"
    client_metadata = data.get("metadata")
    user = request.user
    headers = public_headers(request.headers, request.pipeline.config.sidecar.auth.credential_headers)
    metadata: JSONDict = {}
    if isinstance(client_metadata, dict):
        metadata = {k: v for k, v in client_metadata.items() if not is_reserved(k)}
    requester_metadata = dict(metadata)
    path = request.headers.get(":path", "")
    metadata.update(key_fields(user))
    metadata.update(
        headers=headers,
        endpoint=path,
        request_id=request.request_id,
        requester_ip_address=None,  # Envoy does not tell the sidecar the client's address
        user_agent=headers.get("user-agent", ""),
        requester_metadata=requester_metadata,
    )
    data.pop("litellm_metadata", None)
    data[key] = metadata
    data["litellm_call_id"] = request.request_id
    data["proxy_server_request"] = {"url": path, "method": "POST", "headers": headers}
    return data


def upstream_data(family: ApiFamily, data: JSONDict, sent: JSONDict) -> JSONDict:
    """`data` as the upstream must see it: the sidecar's additions gone, the client's own values back."""
    owned = sidecar_keys(family)
    upstream = {k: v for k, v in data.items() if k not in owned}
    upstream.update(sent)
    return upstream


def request_metadata(request: RequestState, requested_model: Any, upstream_model: Any) -> dict[str, Any]:
    """What Envoy's dynamic metadata says of the request (access logs, rate-limit descriptors)."""
    return {
        "call_type": request.call_type_label,
        "model": requested_model if isinstance(requested_model, str) else None,
        "upstream_model": upstream_model if isinstance(upstream_model, str) else None,
        "api_key_hash": request.user.api_key,
        "user": request.user.end_user_id,
        "verdict": "pass",
    }


def encode(family: ApiFamily, upstream: JSONDict, content_type: str) -> bytes:
    """The changed request's body; a value a hook put in `data` that cannot be encoded is a 500."""
    try:
        return family.codec.encode(upstream, content_type)
    except (TypeError, MultipartError) as exc:  # orjson raises TypeError for values that are not JSON
        message = f"llm-extproc: the request changed by hooks cannot be encoded: {exc}"
        raise ProxyException(message, 500) from None

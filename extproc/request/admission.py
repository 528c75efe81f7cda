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
from extproc.settings.auth import CREDENTIAL_HEADERS
from extproc.types import Headers, JSONDict

ENFORCE_USER_MESSAGE = "Authentication Error, 'user' param not passed in. 'enforce_user_param'=True"
# Keys the sidecar adds to `data` for hooks (as LiteLLM does); never sent upstream.
SIDECAR_KEYS = ("metadata", "litellm_call_id", "proxy_server_request")
# The default credential headers; `extproc.auth.credential_headers` adds to them (RequestState passes them).
SECRET_HEADERS = frozenset(CREDENTIAL_HEADERS)
# LiteLLM identity keys in `metadata`: hooks trust them, so the client's values never stay.
IDENTITY_KEYS = ("user_api_key_team_id", "user_api_key_user_id", "user_api_key_alias", "requester_ip_address")


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
    if enforce_user and "user" not in data:
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


def client_values(data: JSONDict) -> JSONDict:
    """What the client itself sent under the keys the sidecar uses: it goes upstream as sent."""
    return {key: data[key] for key in SIDECAR_KEYS if key in data}


def add_sidecar_keys(data: JSONDict, request: RequestState) -> JSONDict:
    """LiteLLM's additions for hooks: `metadata` (the client's own, plus headers, key hash, identity,
    endpoint and request id), `litellm_call_id` and `proxy_server_request`. The identity keys come from
    the caller's `UserAPIKeyAuth` only: a client's own values for them are dropped (the client's
    `metadata` still goes upstream as sent)."""
    client_metadata = data.get("metadata")
    user = request.user
    headers = public_headers(request.headers, request.pipeline.config.sidecar.auth.credential_headers)
    metadata: JSONDict = dict(client_metadata) if isinstance(client_metadata, dict) else {}
    for key in IDENTITY_KEYS:
        metadata.pop(key, None)
    path = request.headers.get(":path", "")
    key_hash = user.api_key
    metadata.update(
        headers=headers,
        user_api_key=key_hash,
        user_api_key_hash=key_hash,
        user_api_key_team_id=user.team_id,
        user_api_key_user_id=user.user_id,
        user_api_key_alias=user.key_alias,
        endpoint=path,
        request_id=request.request_id,
    )
    data["metadata"] = metadata
    data["litellm_call_id"] = request.request_id
    data["proxy_server_request"] = {"url": path, "method": "POST", "headers": headers}
    return data


def upstream_data(data: JSONDict, sent: JSONDict) -> JSONDict:
    """`data` as the upstream must see it: the sidecar's additions gone, the client's own values back."""
    upstream = {k: v for k, v in data.items() if k not in SIDECAR_KEYS}
    upstream.update(sent)
    return upstream


def request_metadata(request: RequestState, requested_model: Any, upstream_model: Any) -> dict[str, Any]:
    """What Envoy's dynamic metadata says of the request (access logs, rate-limit descriptors)."""
    return {
        "call_type": request.call_type,
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

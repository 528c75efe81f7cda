"""`UserAPIKeyAuth`: who is calling, built from the request's headers and Envoy's metadata.

The raw API key never leaves this module: only its SHA-256 hex digest is kept, as LiteLLM does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.errors import ProxyException
from extproc.types import Headers

log = logging.getLogger("extproc.auth")

# Headers that carry a credential: never shown to hooks or logs (`extproc.auth.credential_headers` adds).
CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "ocp-apim-subscription-key",
    "x-auth-token",
    "x-goog-api-key",
)
# The headers a key is read from; a request may name one key only, however many of them it sends.
KEY_HEADERS = ("authorization", "x-api-key", "api-key")
AMBIGUOUS_KEY_MESSAGE = (
    "Authentication Error, several different API keys in one request: "
    "send one key, in 'Authorization: Bearer <key>' or 'api-key'"
)


@dataclass(slots=True)
class UserAPIKeyAuth:
    """The caller, with the field names of LiteLLM's proxy (`api_key` and `token` are hashes)."""

    api_key: str | None = None
    token: str | None = None
    key_name: str | None = None
    key_alias: str | None = None
    user_id: str | None = None
    user_email: str | None = None
    user_role: str | None = None
    team_id: str | None = None
    team_alias: str | None = None
    org_id: str | None = None
    end_user_id: str | None = None
    models: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    team_metadata: dict[str, Any] = field(default_factory=dict)
    max_parallel_requests: int | None = None
    tpm_limit: int | None = None
    rpm_limit: int | None = None
    team_tpm_limit: int | None = None
    team_rpm_limit: int | None = None
    team_max_parallel_requests: int | None = None
    end_user_tpm_limit: int | None = None
    end_user_rpm_limit: int | None = None
    tpm_limit_per_model: dict[str, int] = field(default_factory=dict)
    rpm_limit_per_model: dict[str, int] = field(default_factory=dict)
    max_budget: float | None = None
    spend: float = 0.0
    allowed_model_region: str | None = None
    request_route: str | None = None
    parent_otel_span: Any = None

    def model_dump(self, **_: Any) -> dict[str, Any]:
        """A dict of the fields, as pydantic's `model_dump` gives on LiteLLM's class."""
        return dataclasses.asdict(self)

    def dict(self, **_: Any) -> dict[str, Any]:
        """The same dict: LiteLLM's class is a pydantic model, and hook files call its v1 `dict()`."""
        return self.model_dump()

    def json(self, **_: Any) -> str:
        """The fields as a JSON string (pydantic's v1 `json()`); values JSON cannot hold become strings."""
        return orjson.dumps(self.model_dump(), default=str).decode()


_FIELDS = {f.name: f for f in dataclasses.fields(UserAPIKeyAuth)}
_INT_FIELDS = {
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "team_tpm_limit",
    "team_rpm_limit",
    "team_max_parallel_requests",
    "end_user_tpm_limit",
    "end_user_rpm_limit",
}
_FLOAT_FIELDS = {"max_budget", "spend"}
_LIST_FIELDS = {"models"}
_DICT_FIELDS = {"metadata", "team_metadata", "tpm_limit_per_model", "rpm_limit_per_model"}
_DERIVED_FIELDS = {"api_key", "token", "end_user_id", "request_route", "parent_otel_span"}
SETTABLE_FIELDS = frozenset(_FIELDS) - _DERIVED_FIELDS


def hash_key(raw_key: str) -> str:
    """The SHA-256 hex digest LiteLLM stores instead of a key."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def _key_in(header: str, value: str) -> str:
    if header == "authorization":
        scheme, _, rest = value.partition(" ")
        return rest.strip() if scheme.lower() == "bearer" and rest.strip() else value.strip()
    return value.strip()


def hashed_credentials(headers: Headers, credential_headers: frozenset[str]) -> dict[str, str]:
    """Each credential header among `headers` with its value replaced by the SHA-256 of the key it holds
    (the bearer token for `authorization`): what may stay where a raw credential must not."""
    return {
        name: hash_key(_key_in(name, value)) for name, value in headers.items() if name in credential_headers
    }


def raw_key_of(headers: Headers) -> str | None:
    """The bearer token, or `x-api-key` / `api-key` (Anthropic and Azure styles).

    A key decides which limits count a request, so a request that names two different keys (one in
    `api-key`, another in `Authorization`), or repeats a key header (Envoy joins repeats with a comma,
    which no key contains), is refused rather than counted under whichever a rule would pick."""
    keys = {_key_in(header, value) for header in KEY_HEADERS if (value := headers.get(header))}
    if not keys:
        return None
    key = keys.pop()
    if keys or "," in key:
        raise ProxyException(AMBIGUOUS_KEY_MESSAGE, 401, None, "auth_error")
    return key or None


def coerce(name: str, value: Any) -> Any:
    """Turn a header string or a metadata value into the field's type; raise ValueError if it can't."""
    if name in _INT_FIELDS:
        return int(value)
    if name in _FLOAT_FIELDS:
        return float(value)
    if name in _LIST_FIELDS:
        if isinstance(value, list):
            return [str(v) for v in value]
        return [part.strip() for part in str(value).split(",") if part.strip()]
    if name in _DICT_FIELDS:
        if isinstance(value, dict):
            return value
        parsed = orjson.loads(value)
        if not isinstance(parsed, dict):
            raise ValueError("expected a JSON object")
        return parsed
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class MetadataSource:
    """One field read from Envoy dynamic metadata: `namespace:dotted.path`."""

    namespace: str
    path: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> MetadataSource:
        namespace, sep, path = spec.rpartition(":")
        if not sep or not namespace or not path:
            raise ValueError(f"expected 'namespace:path', got {spec!r}")
        return cls(namespace, tuple(path.split(".")))

    def lookup(self, metadata: dict[str, Any]) -> Any:
        node: Any = metadata.get(self.namespace)
        for part in self.path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node


@dataclass(frozen=True, slots=True)
class AuthSources:
    """Where each `UserAPIKeyAuth` field comes from: request headers and Envoy metadata.

    `trusted_headers` are identity headers an earlier Envoy filter sets: the generated Envoy config
    removes client-sent copies of every other header in `headers` before the sidecar sees them."""

    headers: tuple[tuple[str, str], ...] = ()
    metadata: tuple[tuple[str, MetadataSource], ...] = ()
    trusted_headers: frozenset[str] = frozenset()
    credential_headers: frozenset[str] = frozenset(CREDENTIAL_HEADERS)

    @property
    def untrusted_headers(self) -> tuple[str, ...]:
        """Identity headers a client could send itself: Envoy removes them from client requests."""
        return tuple(dict.fromkeys(h for _, h in self.headers if h not in self.trusted_headers))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source.namespace for _, source in self.metadata))

    def build(
        self, headers: Headers, metadata: dict[str, Any], end_user: str | None, route: str
    ) -> UserAPIKeyAuth:
        auth = UserAPIKeyAuth(end_user_id=end_user, request_route=route)
        raw = raw_key_of(headers)
        if raw:
            auth.api_key = auth.token = hash_key(raw)
        for name, header in self.headers:
            value = headers.get(header)
            if value is not None:
                _assign(auth, name, value)
        for name, source in self.metadata:
            value = source.lookup(metadata)
            if value is not None:
                _assign(auth, name, value)
        return auth


def _assign(auth: UserAPIKeyAuth, name: str, value: Any) -> None:
    try:
        setattr(auth, name, coerce(name, value))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        # A malformed identity value is ignored rather than trusted half-way.
        log.warning("ignoring a malformed value for UserAPIKeyAuth.%s", name)

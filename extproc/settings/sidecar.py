"""The `extproc:` section of the config: the sidecar's own settings, validated."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extproc.settings.auth import CREDENTIAL_HEADERS, SETTABLE_FIELDS, AuthSources, MetadataSource
from extproc.settings.checks import ConfigError, boolean, integer, mapping
from extproc.settings.listen import ListenAddress
from extproc.settings.tracing import TracingSettings, parse_tracing
from extproc.state.store_url import parse_store_url
from extproc.types import CallTypeNames


@dataclass(frozen=True, slots=True)
class HandlerPolicy:
    """Per-handler overrides: its own timeout, and whether its timeouts and crashes let requests through."""

    timeout_ms: int | None = None
    fail_open: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """`extproc.tls`: TLS on the sidecar's TCP listeners; mTLS when `client_ca_file` is set.

    The `envoy_*`/`server_*` files are what the generated Envoy config uses to reach the sidecar.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    server_ca_file: str | None = None
    server_name: str = "llm-extproc"
    envoy_cert_file: str | None = None
    envoy_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """`extproc.cache`: where `DualCache` shares state across replicas (none: in-process only)."""

    # One node, or Sentinel (redis+sentinel://) or a cluster (redis+cluster://): extproc/state/store_url.py
    redis_url: str | None = None
    on_unavailable: str = "local"  # "local": keep counting in-process; "deny": fail hooks with a 503
    timeout_ms: int = 250


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """The `extproc:` section. Addresses are kept in their string form (`ListenAddress` prints it)."""

    listen: tuple[str, ...] = ("127.0.0.1:50051",)
    max_request_bytes: int = 32 * 1024 * 1024
    max_json_depth: int = 128
    max_json_nodes: int = 1_000_000
    max_stream_hold_bytes: int = 1024 * 1024
    hook_timeout_ms: int = 5000
    failure_mode_allow: bool = False
    grace_seconds: float = 10.0
    log_level: str = "info"
    auth: AuthSources = field(default_factory=AuthSources)
    handlers: dict[str, HandlerPolicy] = field(default_factory=dict)
    cache: CacheSettings = field(default_factory=CacheSettings)
    routing: bool = False
    metrics_listen: str | None = None
    tls: TlsSettings | None = None
    handler_paths: tuple[Path, ...] = ()
    # One ext_proc message per request (Envoy copies the request headers into metadata, sent with the
    # body) or two (the request-headers message first); None: one unless a setting needs two.
    messages: str | None = None
    # Set: in one-message mode only these headers (and content-type, content-encoding, x-request-id) are
    # copied for hooks; None: every request header.
    forward_headers: tuple[str, ...] | None = None
    # Sidecar processes, each on its own socket (extproc/ops/workers.py); Envoy balances across them.
    workers: int = 1
    # The `call_type` names hooks receive: LiteLLM's proxy names (`acompletion`) or the documented ones.
    call_types: CallTypeNames = CallTypeNames.PROXY
    # OpenTelemetry traces (extproc/settings/tracing.py); None: no section (`callbacks: [otel]` adds one).
    tracing: TracingSettings | None = None

    @property
    def tracing_on(self) -> bool:
        return self.tracing is not None and self.tracing.enabled

    @property
    def one_message(self) -> bool:
        """Envoy skips the request-headers message: the headers come as metadata with the body."""
        return self.messages_reason[0]

    @property
    def messages_reason(self) -> tuple[bool, str]:
        """Whether a request is one ext_proc message, and why (as `check` prints it)."""
        if self.messages == "two":
            return False, "extproc.messages: two"
        if self.routing:
            return False, "extproc.routing re-picks Envoy's route after the hooks, from the headers message"
        if self.messages == "one":
            return True, "extproc.messages: one"
        return True, "the default"

    @property
    def listen_addresses(self) -> tuple[ListenAddress, ...]:
        return tuple(ListenAddress.parse(address) for address in self.listen)

    @property
    def metrics_address(self) -> ListenAddress | None:
        return None if self.metrics_listen is None else ListenAddress.parse_tcp(self.metrics_listen)


SIDECAR_KEYS = {
    "listen",
    "max_request_bytes",
    "max_json_depth",
    "max_json_nodes",
    "hook_timeout_ms",
    "failure_mode_allow",
    "grace_seconds",
    "log_level",
    "auth",
    "handlers",
    "max_stream_hold_bytes",
    "cache",
    "routing",
    "metrics_listen",
    "tls",
    "handler_paths",
    "forward_headers",
    "messages",
    "workers",
    "call_types",
    "tracing",
}
LOG_LEVELS = {"debug", "info", "warning", "error"}
MAX_WORKERS = 64


def _listen(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}: expected an address or a list of addresses")
    try:
        return tuple(str(ListenAddress.parse(item)) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


AUTH_KEYS = ("headers", "metadata", "trusted_headers", "credential_headers")


def _header_names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v and ":" not in v for v in value):
        raise ConfigError(f"{where}: expected a list of header names")
    return tuple(v.lower() for v in value)


def _trusted_headers(value: Any, headers: list[tuple[str, str]], where: str) -> frozenset[str]:
    """`true`: every header in `auth.headers` is set by an earlier filter; a list: those named."""
    named = {header for _, header in headers}
    if value is None or value is False:
        return frozenset()
    if value is True:
        return frozenset(named)
    trusted = _header_names(value, where)
    for header in trusted:
        if header not in named:
            raise ConfigError(f"{where}: {header!r} is not a header of extproc.auth.headers")
    return frozenset(trusted)


def _auth(raw: dict[str, Any], where: str) -> AuthSources:
    headers: list[tuple[str, str]] = []
    metadata: list[tuple[str, MetadataSource]] = []
    for key, value in raw.items():
        if key not in AUTH_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of {', '.join(AUTH_KEYS)})")
        if key in ("trusted_headers", "credential_headers"):
            continue
        for name, spec in mapping(value, f"{where}.{key}").items():
            at = f"{where}.{key}.{name}"
            if name not in SETTABLE_FIELDS:
                raise ConfigError(f"{at}: UserAPIKeyAuth has no settable field {name!r}")
            if not isinstance(spec, str) or not spec:
                raise ConfigError(f"{at}: expected a string")
            if key == "headers":
                if spec.startswith(":") or spec.lower() in CREDENTIAL_HEADERS:
                    raise ConfigError(f"{at}: {spec!r} cannot carry an identity field")
                headers.append((name, spec.lower()))
            else:
                try:
                    metadata.append((name, MetadataSource.parse(spec)))
                except ValueError as exc:
                    raise ConfigError(f"{at}: {exc}") from None
    trusted = _trusted_headers(raw.get("trusted_headers"), headers, f"{where}.trusted_headers")
    extra = raw.get("credential_headers")
    credentials = () if extra is None else _header_names(extra, f"{where}.credential_headers")
    for name, header in headers:
        if header in credentials:
            raise ConfigError(f"{where}.headers.{name}: {header!r} is listed as a credential header")
    return AuthSources(
        tuple(headers), tuple(metadata), trusted, frozenset((*CREDENTIAL_HEADERS, *credentials))
    )


def _handler_policies(raw: dict[str, Any]) -> dict[str, HandlerPolicy]:
    policies = {}
    for reference, options in raw.items():
        where = f"extproc.handlers.{reference}"
        options = mapping(options, where)
        for key in options.keys() - {"timeout_ms", "fail_open", "options"}:
            raise ConfigError(f"{where}.{key}: unknown key (expected 'timeout_ms', 'fail_open' or 'options')")
        timeout = options.get("timeout_ms")
        policies[str(reference)] = HandlerPolicy(
            timeout_ms=None if timeout is None else integer(timeout, f"{where}.timeout_ms"),
            fail_open=boolean(options.get("fail_open", False), f"{where}.fail_open"),
            options=mapping(options.get("options"), f"{where}.options"),
        )
    return policies


def _tls(value: Any) -> TlsSettings | None:
    if value is None:
        return None
    raw = mapping(value, "extproc.tls")
    known = {f for f in TlsSettings.__dataclass_fields__}
    for key in raw.keys() - known:
        raise ConfigError(f"extproc.tls.{key}: unknown key (expected one of {', '.join(sorted(known))})")
    for key in ("cert_file", "key_file"):
        if not isinstance(raw.get(key), str):
            raise ConfigError(f"extproc.tls.{key}: required")
    for key, path in raw.items():
        if key.endswith("_file") and not Path(str(path)).is_file():
            raise ConfigError(f"extproc.tls.{key}: {path} is not a readable file")
    if (raw.get("envoy_cert_file") is None) != (raw.get("envoy_key_file") is None):
        raise ConfigError("extproc.tls: envoy_cert_file and envoy_key_file go together")
    return TlsSettings(**{k: str(v) for k, v in raw.items()})


def _metrics_listen(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"extproc.metrics_listen: expected host:port, got {value!r}")
    try:
        return str(ListenAddress.parse_tcp(value))
    except ValueError as exc:
        raise ConfigError(f"extproc.metrics_listen: {exc}") from None


def _cache(raw: dict[str, Any]) -> CacheSettings:
    for key in raw.keys() - {"redis_url", "on_unavailable", "timeout_ms"}:
        raise ConfigError(
            f"extproc.cache.{key}: unknown key (expected redis_url, on_unavailable, timeout_ms)"
        )
    url = raw.get("redis_url")
    if url is not None:
        if not isinstance(url, str):
            raise ConfigError(f"extproc.cache.redis_url: expected a URL, got {type(url).__name__}")
        try:
            parse_store_url(url)
        except ValueError as exc:
            raise ConfigError(f"extproc.cache.redis_url: {exc}") from None
    mode = raw.get("on_unavailable", "local")
    if mode not in ("local", "deny"):
        raise ConfigError(f"extproc.cache.on_unavailable: expected 'local' or 'deny', got {mode!r}")
    return CacheSettings(url, mode, integer(raw.get("timeout_ms", 250), "extproc.cache.timeout_ms"))


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _forward_headers(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    # HTTP header names (RFC 9110 tokens): they become Lua table keys in the generated Envoy config.
    names = value if isinstance(value, list) else None
    if names is None or not all(isinstance(v, str) and _HEADER_NAME.fullmatch(v) for v in names):
        raise ConfigError("extproc.forward_headers: expected a list of header names")
    return tuple(
        dict.fromkeys(["content-type", "content-encoding", "x-request-id", *(v.lower() for v in value)])
    )


def _messages(value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("one", "two"):
        raise ConfigError(f"extproc.messages: expected 'one' or 'two', got {value!r}")
    return str(value)


def _handler_paths(value: Any, base: Path) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else (value or [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ConfigError("extproc.handler_paths: expected a folder or a list of folders")
    paths = tuple((base / item).resolve() for item in items)
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"extproc.handler_paths: {path} is not a folder")
    return paths


def _call_types(value: Any) -> CallTypeNames:
    try:
        return CallTypeNames(value)
    except (ValueError, TypeError):
        choices = " or ".join(repr(names.value) for names in CallTypeNames)
        raise ConfigError(f"extproc.call_types: expected {choices}, got {value!r}") from None


def _workers(value: Any) -> int:
    workers = integer(value, "extproc.workers")
    if workers > MAX_WORKERS:
        raise ConfigError(f"extproc.workers: at most {MAX_WORKERS}, got {workers}")
    return workers


def _check_workers(settings: SidecarSettings, warnings: list[str]) -> None:
    """Several workers: every listen address, and the metrics one unless it takes any free port, needs
    room for a neighbour per worker (extproc/ops/workers.py)."""
    if settings.workers == 1:
        return
    listen = settings.listen_addresses
    if any(not address.is_unix and address.port == 0 for address in listen):
        raise ConfigError("extproc.workers: several workers need fixed ports in extproc.listen")
    metrics = settings.metrics_address
    fixed = (*listen, metrics) if metrics is not None and metrics.port != 0 else listen
    try:
        for address in fixed:
            address.worker(settings.workers - 1)
    except ValueError as exc:
        raise ConfigError(f"extproc.workers: {exc}") from None
    if settings.cache.redis_url is None:
        warnings.append(
            "extproc.workers: without extproc.cache.redis_url every worker keeps its own cache, "
            "so rate limits count per worker"
        )


def parse_sidecar(raw: dict[str, Any], warnings: list[str], base: Path) -> SidecarSettings:
    """The `extproc:` mapping, validated; unknown keys become `warnings`, paths are relative to `base`."""
    defaults = SidecarSettings()
    for key in raw.keys() - SIDECAR_KEYS:
        warnings.append(f"extproc.{key}: unknown key, ignored")
    level = raw.get("log_level", defaults.log_level)
    if level not in LOG_LEVELS:
        raise ConfigError(f"extproc.log_level: expected one of {sorted(LOG_LEVELS)}, got {level!r}")
    grace = raw.get("grace_seconds", defaults.grace_seconds)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        raise ConfigError(f"extproc.grace_seconds: expected a number >= 0, got {grace!r}")
    settings = SidecarSettings(
        listen=_listen(raw.get("listen", list(defaults.listen)), "extproc.listen"),
        max_request_bytes=integer(
            raw.get("max_request_bytes", defaults.max_request_bytes), "extproc.max_request_bytes", 1024
        ),
        max_json_depth=integer(
            raw.get("max_json_depth", defaults.max_json_depth), "extproc.max_json_depth", 2
        ),
        max_json_nodes=integer(
            raw.get("max_json_nodes", defaults.max_json_nodes), "extproc.max_json_nodes", 16
        ),
        max_stream_hold_bytes=integer(
            raw.get("max_stream_hold_bytes", defaults.max_stream_hold_bytes),
            "extproc.max_stream_hold_bytes",
            1024,
        ),
        hook_timeout_ms=integer(
            raw.get("hook_timeout_ms", defaults.hook_timeout_ms), "extproc.hook_timeout_ms"
        ),
        failure_mode_allow=boolean(
            raw.get("failure_mode_allow", defaults.failure_mode_allow), "extproc.failure_mode_allow"
        ),
        grace_seconds=float(grace),
        log_level=level,
        auth=_auth(mapping(raw.get("auth"), "extproc.auth"), "extproc.auth"),
        handlers=_handler_policies(mapping(raw.get("handlers"), "extproc.handlers")),
        cache=_cache(mapping(raw.get("cache"), "extproc.cache")),
        routing=boolean(raw.get("routing", False), "extproc.routing"),
        metrics_listen=_metrics_listen(raw.get("metrics_listen")),
        tls=_tls(raw.get("tls")),
        handler_paths=_handler_paths(raw.get("handler_paths"), base),
        forward_headers=_forward_headers(raw.get("forward_headers")),
        messages=_messages(raw.get("messages")),
        workers=_workers(raw.get("workers", defaults.workers)),
        call_types=_call_types(raw.get("call_types", defaults.call_types.value)),
        tracing=parse_tracing(raw.get("tracing")),
    )
    _check_workers(settings, warnings)
    explicit_one = settings.messages == "one" or settings.forward_headers is not None
    if settings.routing and explicit_one:
        # Routing needs the request-headers message: in one-message mode the route picked before any hook
        # ran is the one Envoy keeps (measured: a routed request went to the wrong upstream).
        raise ConfigError(
            "extproc.routing: not supported in one-message mode (extproc.messages: one or "
            "extproc.forward_headers); remove one of them"
        )
    if settings.messages == "two" and settings.forward_headers is not None:
        raise ConfigError(
            "extproc.forward_headers: lists the headers copied in one-message mode; with "
            "extproc.messages: two hooks see every header already: remove one of them"
        )
    return settings

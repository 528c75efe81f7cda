"""`Pipeline`: everything built once per config (chain, route table, cache, modes), shared read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extproc.api.endpoints import RouteTable
from extproc.hooks.chain import HookChain
from extproc.hooks.loader import load_handlers
from extproc.request.decisions import BodyMode, Mode
from extproc.request.routing import Router
from extproc.settings import config as config_module
from extproc.settings.config import Config, ConfigError
from extproc.state.cache import DualCache
from extproc.types import HookKind

# The longest Envoy may be asked to wait for one answer (`max_message_timeout` in the generated config).
MAX_MESSAGE_TIMEOUT_S = 60.0
# Hook kinds that need Envoy to send the response headers (and, per request, maybe the body).
RESPONSE_SIDE_KINDS = (
    HookKind.MODERATION,
    HookKind.POST_CALL_SUCCESS,
    HookKind.POST_CALL_FAILURE,
    HookKind.POST_CALL_STREAMING,
    HookKind.POST_CALL_STREAMING_ITERATOR,
    HookKind.POST_CALL_RESPONSE_HEADERS,
    HookKind.LOG_SUCCESS,
    HookKind.LOG_FAILURE,
)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One loaded config: requests take a reference at their start and keep it to their end."""

    config: Config
    chain: HookChain
    routes: RouteTable
    cache: DualCache
    request_mode: Mode
    moderation_wait_s: float
    router: Router | None = None

    @property
    def needs_sidecar(self) -> bool:
        """False when no hook and no setting needs anything from LLM requests."""
        return self.request_mode.request_body is not BodyMode.NONE or self.request_mode.response_headers


def needed_mode(config: Config, chain: HookChain, router: Router | None = None) -> Mode:
    """The phases the configured hooks (and routing) use, and no others."""
    wants_body = config.enforce_user_param or not chain.empty or router is not None
    renames = router is not None and router.renames
    return Mode(
        request_body=BodyMode.BUFFERED if wants_body else BodyMode.NONE,
        response_headers=renames or any(chain.has(kind) for kind in RESPONSE_SIDE_KINDS),
        response_body=BodyMode.NONE,
    )


def moderation_wait(chain: HookChain, ceiling_s: float) -> float:
    """How long a response may wait for the verdict: the slowest moderation hook, then the failure hooks."""
    slowest = max((h.timeout_s for h in chain.hooks[HookKind.MODERATION]), default=0.0)
    failure = max((h.timeout_s for h in chain.hooks[HookKind.POST_CALL_FAILURE]), default=0.0)
    return min(slowest + failure + 1.0, ceiling_s)


def make_cache(config: Config) -> DualCache:
    """In-process, or shared through Redis/Valkey when `extproc.cache.redis_url` is set."""
    settings = config.sidecar.cache
    if settings.redis_url is None:
        return DualCache()
    from extproc.state.redis_cache import shared_dual_cache

    return shared_dual_cache(
        settings.redis_url, on_unavailable=settings.on_unavailable, timeout_s=settings.timeout_ms / 1000
    )


def build(config: Config, cache: DualCache | None = None) -> Pipeline:
    """Load the handlers a config names and validate them; raises ConfigError or HandlerError."""
    settings = config.sidecar
    options = {ref: policy.options for ref, policy in settings.handlers.items() if policy.options}
    handlers = load_handlers(config.callbacks, (config.folder, *settings.handler_paths), options)
    chain = HookChain(handlers, settings.hook_timeout_ms / 1000, settings.handlers)
    router = Router(config.model_list) if settings.routing else None
    if router is not None and not router.targets:
        raise ConfigError(f"{config.path}: extproc.routing: true needs a model_list")
    return Pipeline(
        config=config,
        chain=chain,
        routes=RouteTable(settings.max_json_depth),
        cache=make_cache(config) if cache is None else cache,
        request_mode=needed_mode(config, chain, router),
        moderation_wait_s=moderation_wait(chain, MAX_MESSAGE_TIMEOUT_S),
        router=router,
    )


def load(path: str | Path, cache: DualCache | None = None) -> Pipeline:
    return build(config_module.load(path), cache)

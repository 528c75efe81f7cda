"""`Pipeline`: everything built once per config (chain, route table, cache, modes), shared read-only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from extproc.api.endpoints import RouteTable
from extproc.compat import cost
from extproc.decisions import BodyMode, Mode
from extproc.hooks.chain import HookChain
from extproc.hooks.loaded_guardrails import load_guardrails
from extproc.hooks.loader import load_handlers
from extproc.request.modes import needed_mode, needs_sidecar
from extproc.request.patience import phase_budgets
from extproc.request.routing import Router
from extproc.settings import config as config_module
from extproc.settings.config import Config, ConfigError
from extproc.state.cache import DualCache
from extproc.telemetry import metrics
from extproc.types import FORWARDED_HEADERS_NAMESPACE, HookKind, Phase

# The longest Envoy may be asked to wait for one answer (`max_message_timeout` in the generated config).
MAX_MESSAGE_TIMEOUT_S = 60.0
# Envoy waits this much longer than `extproc.hook_timeout_ms` for each answer (`message_timeout`).
MESSAGE_TIMEOUT_MARGIN_MS = 500


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One loaded config: requests take a reference at their start and keep it to their end."""

    config: Config
    chain: HookChain
    routes: RouteTable
    cache: DualCache
    request_mode: Mode
    moderation_wait_s: float
    # How long Envoy waits for an answer, and how long the hooks answering each phase may take.
    envoy_waits_s: float
    phase_budgets: dict[Phase, float]
    router: Router | None = None
    # The request metadata namespaces a session reads: identity (`extproc.auth.metadata`), and the
    # forwarded headers in one-message mode.
    metadata_namespaces: tuple[str, ...] = ()
    # Envoy skips the request-headers message: the headers come as metadata with the body
    # (`SidecarSettings.messages_reason` says why).
    one_message: bool = False

    @property
    def needs_sidecar(self) -> bool:
        """False when no hook and no setting needs anything from LLM requests."""
        return needs_sidecar(self.request_mode)


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
    folders = (config.folder, *settings.handler_paths)
    handlers = load_handlers(config.callbacks, folders, options)
    guardrails = load_guardrails(config.guardrails, folders)
    chain = HookChain(handlers, settings.hook_timeout_ms / 1000, settings.handlers, guardrails)
    router = Router(config.model_list) if settings.routing else None
    if router is not None and not router.targets:
        raise ConfigError(f"{config.path}: extproc.routing: true needs a model_list")
    cost.use_prices(config.model_list)
    metrics.use_models(d.model_name for d in config.model_list)
    mode = needed_mode(
        chain.kinds,
        enforce_user=config.enforce_user_param,
        routing=router is not None,
        renames=router is not None and router.renames,
    )
    # One message needs a request body message to carry the headers; a config with no request-side need
    # (nothing hooked, or only what routing renames) keeps the headers message.
    one_message = settings.one_message and mode.request_body is not BodyMode.NONE
    return Pipeline(
        config=config,
        chain=chain,
        routes=RouteTable(settings.max_json_depth, settings.max_json_nodes),
        cache=make_cache(config) if cache is None else cache,
        request_mode=mode,
        moderation_wait_s=moderation_wait(chain, MAX_MESSAGE_TIMEOUT_S),
        envoy_waits_s=(settings.hook_timeout_ms + MESSAGE_TIMEOUT_MARGIN_MS) / 1000,
        phase_budgets=phase_budgets(chain),
        router=router,
        # The forwarded headers are read whenever a body comes first (Istio sends those on hooked POSTs
        # whatever `one_message` says for the generated bootstrap).
        metadata_namespaces=(*settings.auth.namespaces, FORWARDED_HEADERS_NAMESPACE),
        one_message=one_message,
    )


def load(path: str | Path, cache: DualCache | None = None) -> Pipeline:
    return build(config_module.load(path), cache)

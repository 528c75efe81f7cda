"""What llm-extproc does with each key of LiteLLM's proxy config: the decisions as data.

The rule: a key that would change how requests are checked or refused under LiteLLM either works here
as it does there (`SUPPORTED`, or `MAPPED` onto the sidecar's own equivalent) or stops `check` and
`serve` with an error naming the key and what to use instead (`REFUSED`). A key that has no effect on
enforcement (logging integrations, retries, response caching, the UI, the database, ...) is `IGNORED`:
the config loads with one warning for it (`llm-extproc check --strict` fails on warnings).

`litellm_settings.callbacks` entries are judged one by one (`CALLBACK_RULES`): a dotted
`module.attribute` is a handler and runs; a bare name is one of LiteLLM's integrations, refused when it
enforces, a warning when it only logs, and refused when we do not know it (we cannot tell whether it
enforces). The README's "Coming from LiteLLM" table is written from these tables; a test keeps it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Handling(StrEnum):
    """What happens to a key."""

    SUPPORTED = "supported"  # works as in LiteLLM
    MAPPED = "mapped"  # works through the sidecar's own equivalent
    IGNORED = "ignored (warning)"  # no effect on what is checked or refused: one warning
    REFUSED = "refused (error)"  # would change enforcement and we cannot do it: the config is refused


@dataclass(frozen=True, slots=True)
class KeyRule:
    """One config key (dotted from the top: `general_settings.custom_auth`) and what happens to it.

    `note` says why, and for a refused key what to do instead. `refused_values`: for a key that is
    otherwise ignored, the values (a string or entries of a list) that enforce and so are refused.
    """

    key: str
    handling: Handling
    note: str
    refused_values: frozenset[str] = field(default_factory=frozenset)


_S, _M, _I, _R = Handling.SUPPORTED, Handling.MAPPED, Handling.IGNORED, Handling.REFUSED

# Advice reused by several refused keys.
_AUTH = (
    "llm-extproc does not check keys: authenticate in Envoy (jwt_authn, ext_authz) before the sidecar and "
    "map what it learns with extproc.auth"
)
_LIMITS = "use handlers.rate_limiter (max_parallel_requests, rpm, tpm per key, user, team, model)"
_BUDGETS = (
    "spend budgets are not tracked here: use handlers.rate_limiter for request and token limits, or a "
    "pre-call hook that refuses over your own budget"
)
_GUARD = "use the guardrails: section with guardrail: module.Class, or a callback module.attribute"
_ROUTES = "restrict routes and client addresses in Envoy (route match, RBAC filter)"
_ENVOY_RETRY = "retries, timeouts and fallbacks are Envoy's (route retry_policy, timeout)"
_LOGGING = "logging integrations are not bundled: write a CustomLogger with async_log_*_event"
_DB = "llm-extproc keeps no database of keys, spend or models"
_UI = "llm-extproc has no admin UI or key management"
_CACHE = "response caching is not done here (Envoy's cache filter can)"
_ROUTING = "with extproc.routing, model_list deployments are chosen round robin or by weight"

KEY_RULES: tuple[KeyRule, ...] = (
    # top level
    KeyRule("model_list", _S, "validated; with extproc.routing: true, used to route (see Model routing)"),
    KeyRule("litellm_settings", _S, "read as below"),
    KeyRule("general_settings", _S, "read as below"),
    KeyRule("router_settings", _S, "read as below"),
    KeyRule("environment_variables", _S, "set when not already in the environment"),
    KeyRule("guardrails", _S, "LiteLLM's guardrails: section (see Guardrails)"),
    KeyRule("policies", _R, "LiteLLM's policy engine is not supported: " + _GUARD + ", selected per model"),
    KeyRule("policy_attachments", _R, "LiteLLM's policy engine is not supported: " + _GUARD),
    KeyRule("include", _R, "included files are not read (they may hold callbacks or guardrails): merge them"),
    KeyRule("callback_settings", _I, "settings of logging integrations"),
    KeyRule("mcp_servers", _I, "the MCP gateway is not part of llm-extproc; Envoy routes /mcp as any path"),
    KeyRule("credential_list", _I, "upstream credentials are Envoy's (or the client's)"),
    KeyRule("assistant_settings", _I, "the Assistants API is not hooked"),
    KeyRule("finetune_settings", _I, "fine-tuning endpoints are not hooked"),
    KeyRule("files_settings", _I, "file endpoints are not hooked"),
    KeyRule("vector_store_registry", _I, "vector stores are not part of llm-extproc"),
    KeyRule("search_tools", _I, "the search API is not hooked"),
    KeyRule("prompts", _I, "prompt management is not part of llm-extproc"),
    # litellm_settings
    KeyRule("litellm_settings.callbacks", _S, "module.attribute handlers run; LiteLLM integrations: below"),
    KeyRule("litellm_settings.guardrails", _R, "the older form: use the top-level guardrails: section"),
    KeyRule("litellm_settings.success_callback", _I, _LOGGING + " (prometheus, otel: mapped)"),
    KeyRule("litellm_settings.failure_callback", _I, _LOGGING + " (prometheus, otel: mapped)"),
    KeyRule("litellm_settings.service_callback", _I, "health logging of LiteLLM's own Redis and database"),
    KeyRule("litellm_settings.service_callbacks", _I, "health logging of LiteLLM's own Redis and database"),
    KeyRule("litellm_settings.input_callback", _I, _LOGGING),
    KeyRule("litellm_settings.turn_off_message_logging", _I, "logging hooks here see the messages"),
    KeyRule("litellm_settings.redact_user_api_key_info", _I, "logging hooks see only the key's hash"),
    KeyRule("litellm_settings.redact_messages_in_exceptions", _I, "only for LiteLLM's own logs"),
    KeyRule("litellm_settings.langfuse_default_tags", _I, _LOGGING),
    KeyRule("litellm_settings.set_verbose", _I, "use extproc.log_level"),
    KeyRule("litellm_settings.json_logs", _I, "use --log-format json (serve's default)"),
    KeyRule("litellm_settings.drop_params", _I, "the body goes upstream as the hooks leave it"),
    KeyRule("litellm_settings.modify_params", _I, "the body goes upstream as the hooks leave it"),
    KeyRule("litellm_settings.enable_preview_features", _I, "provider translation is not done here"),
    KeyRule("litellm_settings.request_timeout", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.force_ipv4", _I, "Envoy connects upstream"),
    KeyRule("litellm_settings.num_retries", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.fallbacks", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.default_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.context_window_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.content_policy_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.allowed_fails", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.cooldown_time", _I, _ENVOY_RETRY),
    KeyRule("litellm_settings.cache", _I, _CACHE),
    KeyRule("litellm_settings.cache_params", _I, _CACHE + "; DualCache sharing: extproc.cache"),
    KeyRule("litellm_settings.mcp_aliases", _I, "the MCP gateway is not part of llm-extproc"),
    KeyRule("litellm_settings.max_parallel_requests", _R, _LIMITS),
    KeyRule("litellm_settings.max_budget", _R, _BUDGETS),
    KeyRule("litellm_settings.budget_duration", _R, _BUDGETS),
    KeyRule("litellm_settings.max_end_user_budget", _R, _BUDGETS),
    KeyRule("litellm_settings.max_internal_user_budget", _R, _BUDGETS),
    KeyRule("litellm_settings.internal_user_budget_duration", _R, _BUDGETS),
    KeyRule("litellm_settings.tag_budget_config", _R, _BUDGETS),
    KeyRule("litellm_settings.priority_reservation", _R, _LIMITS),
    KeyRule("litellm_settings.blocked_user_list", _R, "write a pre-call hook that refuses those users"),
    KeyRule(
        "litellm_settings.banned_keywords_list",
        _R,
        "use handlers.keyword_moderation (options.block)",
    ),
    KeyRule(
        "litellm_settings.enable_json_schema_validation",
        _R,
        "write a post-call success hook that validates the answer against the request's response_format",
    ),
    KeyRule("litellm_settings.default_team_settings", _I, "per-team logging settings"),
    KeyRule("litellm_settings.key_generation_settings", _I, _UI),
    KeyRule("litellm_settings.default_key_generate_params", _I, _UI),
    KeyRule("litellm_settings.upperbound_key_generate_params", _I, _UI),
    KeyRule("litellm_settings.default_internal_user_params", _I, _UI),
    KeyRule("litellm_settings.disable_end_user_cost_tracking", _I, "cost tracking is not done here"),
    KeyRule(
        "litellm_settings.disable_end_user_cost_tracking_prometheus_only",
        _I,
        "cost tracking is not done here",
    ),
    KeyRule("litellm_settings.disable_hf_tokenizer_download", _I, "token counting is the upstream's"),
    KeyRule("litellm_settings.disable_add_transform_inline_image_block", _I, "provider translation"),
    KeyRule("litellm_settings.use_chat_completions_url_for_anthropic_messages", _I, "provider translation"),
    KeyRule("litellm_settings.disable_copilot_system_to_assistant", _I, "provider translation"),
    KeyRule("litellm_settings.enable_key_alias_format_validation", _I, _UI),
    KeyRule("litellm_settings.ssl_verify", _I, "Envoy connects upstream"),
    KeyRule("litellm_settings.return_response_headers", _I, "the upstream's headers pass through Envoy"),
    KeyRule("litellm_settings.model_alias_map", _I, "write a pre-call hook that sets data['model']"),
    KeyRule(
        "litellm_settings.presidio_ad_hoc_recognizers",
        _I,
        "configures presidio, which is refused in callbacks",
    ),
    KeyRule("litellm_settings.output_parse_pii", _I, "configures presidio, which is refused in callbacks"),
    KeyRule("litellm_settings.llamaguard_model_name", _I, "configures llamaguard_moderations (refused)"),
    KeyRule("litellm_settings.prompt_injection_params", _I, "configures detect_prompt_injection (refused)"),
    # general_settings
    KeyRule("general_settings.enforce_user_param", _S, "401 without a body user, as in LiteLLM"),
    KeyRule(
        "general_settings.max_request_size_mb",
        _M,
        "sets extproc.max_request_bytes (unless that is set): larger bodies get 413",
    ),
    KeyRule("general_settings.master_key", _R, _AUTH + "; then remove master_key"),
    KeyRule("general_settings.custom_auth", _R, _AUTH),
    KeyRule("general_settings.custom_auth_settings", _R, _AUTH),
    KeyRule("general_settings.enable_jwt_auth", _R, _AUTH + " (jwt_authn, then extproc.auth.metadata)"),
    KeyRule("general_settings.litellm_jwtauth", _R, _AUTH + " (jwt_authn, then extproc.auth.metadata)"),
    KeyRule("general_settings.enable_oauth2_auth", _R, _AUTH),
    KeyRule("general_settings.enable_oauth2_proxy_auth", _R, _AUTH),
    KeyRule("general_settings.oauth2_config_mappings", _R, _AUTH),
    KeyRule(
        "general_settings.litellm_key_header_name",
        _R,
        "keys are read from Authorization: Bearer, x-api-key or api-key; send the key in one of them",
    ),
    KeyRule(
        "general_settings.user_header_name",
        _R,
        "map the header with extproc.auth.headers (e.g. user_id: x-user-id)",
    ),
    KeyRule("general_settings.allowed_routes", _R, _ROUTES),
    KeyRule("general_settings.public_routes", _R, _ROUTES),
    KeyRule("general_settings.admin_only_routes", _R, _ROUTES),
    KeyRule("general_settings.allowed_ips", _R, _ROUTES),
    KeyRule("general_settings.max_parallel_requests", _R, _LIMITS),
    KeyRule(
        "general_settings.global_max_parallel_requests",
        _R,
        "bound concurrency in Envoy (circuit breakers, local_ratelimit) or per key with "
        "handlers.rate_limiter",
    ),
    KeyRule(
        "general_settings.enforced_params",
        _R,
        "write a pre-call hook that raises HTTPException(400) when a parameter is missing",
    ),
    KeyRule(
        "general_settings.reject_clientside_metadata_tags",
        _R,
        "write a pre-call hook that refuses a body with metadata.tags",
    ),
    KeyRule("general_settings.service_account_settings", _R, "write a pre-call hook that checks them"),
    KeyRule(
        "general_settings.max_response_size_mb",
        _R,
        "large answers are not refused here: limit them in Envoy (buffer limits) or a success hook",
    ),
    KeyRule("general_settings.completion_model", _I, "write a pre-call hook that sets data['model']"),
    KeyRule("general_settings.embedding_model", _I, "write a pre-call hook that sets data['model']"),
    KeyRule("general_settings.image_generation_model", _I, "write a pre-call hook that sets data['model']"),
    KeyRule("general_settings.moderation_model", _I, "write a pre-call hook that sets data['model']"),
    KeyRule("general_settings.infer_model_from_keys", _I, "the client names the model"),
    KeyRule("general_settings.database_url", _I, _DB),
    KeyRule("general_settings.database_connection_pool_limit", _I, _DB),
    KeyRule("general_settings.database_connection_timeout", _I, _DB),
    KeyRule("general_settings.allow_requests_on_db_unavailable", _I, _DB),
    KeyRule("general_settings.store_model_in_db", _I, _DB),
    KeyRule("general_settings.supported_db_objects", _I, _DB),
    KeyRule("general_settings.disable_prisma_schema_update", _I, _DB),
    KeyRule("general_settings.disable_spend_logs", _I, _DB),
    KeyRule("general_settings.disable_spend_updates", _I, _DB),
    KeyRule("general_settings.store_prompts_in_spend_logs", _I, _DB),
    KeyRule("general_settings.maximum_spend_logs_retention_period", _I, _DB),
    KeyRule("general_settings.maximum_spend_logs_retention_interval", _I, _DB),
    KeyRule("general_settings.proxy_batch_write_at", _I, _DB),
    KeyRule("general_settings.proxy_budget_rescheduler_min_time", _I, _DB),
    KeyRule("general_settings.proxy_budget_rescheduler_max_time", _I, _DB),
    KeyRule("general_settings.proxy_batch_polling_interval", _I, "batch endpoints are not hooked"),
    KeyRule("general_settings.disable_reset_budget", _I, _DB),
    KeyRule("general_settings.disable_adding_master_key_hash_to_db", _I, _DB),
    KeyRule(
        "general_settings.disable_retry_on_max_parallel_request_limit_error", _I, "the sidecar never retries"
    ),
    KeyRule("general_settings.disable_master_key_return", _I, _UI),
    KeyRule(
        "general_settings.disable_responses_id_security",
        _I,
        "a stored response's GET goes upstream as any read; the upstream checks who may read it",
    ),
    KeyRule("general_settings.key_management_system", _I, "use os.environ/NAME values"),
    KeyRule("general_settings.key_management_settings", _I, "use os.environ/NAME values"),
    KeyRule("general_settings.use_azure_key_vault", _I, "use os.environ/NAME values"),
    KeyRule("general_settings.use_google_kms", _I, "use os.environ/NAME values"),
    KeyRule("general_settings.background_health_checks", _I, "upstream health is Envoy's (health_checks)"),
    KeyRule("general_settings.health_check_interval", _I, "upstream health is Envoy's (health_checks)"),
    KeyRule("general_settings.health_check_details", _I, "upstream health is Envoy's (health_checks)"),
    KeyRule("general_settings.alerting", _I, "alerting: use the Prometheus metrics"),
    KeyRule("general_settings.alerting_threshold", _I, "alerting: use the Prometheus metrics"),
    KeyRule("general_settings.alerting_args", _I, "alerting: use the Prometheus metrics"),
    KeyRule("general_settings.alert_types", _I, "alerting: use the Prometheus metrics"),
    KeyRule("general_settings.alert_to_webhook_url", _I, "alerting: use the Prometheus metrics"),
    KeyRule("general_settings.spend_report_frequency", _I, _DB),
    KeyRule("general_settings.forward_client_headers_to_llm_api", _I, "Envoy forwards the client's headers"),
    KeyRule("general_settings.forward_openai_org_id", _I, "Envoy forwards the client's headers"),
    KeyRule("general_settings.use_x_forwarded_for", _I, "Envoy's xff settings decide the client address"),
    KeyRule("general_settings.pass_through_endpoints", _I, "other paths are Envoy routes"),
    KeyRule(
        "general_settings.use_client_credentials_pass_through_routes", _I, "other paths are Envoy routes"
    ),
    KeyRule("general_settings.allow_client_side_credentials", _I, "the body goes upstream as hooks leave it"),
    KeyRule("general_settings.custom_key_generate", _I, _UI),
    KeyRule("general_settings.default_team_disabled", _I, _UI),
    KeyRule("general_settings.user_api_key_cache_ttl", _I, _UI),
    KeyRule("general_settings.allow_user_auth", _I, "deprecated in LiteLLM"),
    KeyRule("general_settings.custom_sso", _I, _UI),
    KeyRule("general_settings.ui_access_mode", _I, _UI),
    KeyRule("general_settings.litellm_license", _I, "not needed"),
    KeyRule("general_settings.user_mcp_management_mode", _I, "the MCP gateway is not part of llm-extproc"),
    # router_settings
    KeyRule("router_settings.routing_strategy", _I, _ROUTING),
    KeyRule("router_settings.routing_strategy_args", _I, _ROUTING),
    KeyRule("router_settings.model_group_alias", _I, "write a pre-call hook that sets data['model']"),
    KeyRule("router_settings.redis_host", _I, "use extproc.cache.redis_url"),
    KeyRule("router_settings.redis_port", _I, "use extproc.cache.redis_url"),
    KeyRule("router_settings.redis_password", _I, "use extproc.cache.redis_url"),
    KeyRule("router_settings.redis_db", _I, "use extproc.cache.redis_url"),
    KeyRule("router_settings.redis_url", _I, "use extproc.cache.redis_url"),
    KeyRule("router_settings.cache_kwargs", _I, "use extproc.cache"),
    KeyRule("router_settings.client_ttl", _I, "Envoy holds the upstream connections"),
    KeyRule("router_settings.enable_pre_call_checks", _I, "the upstream refuses prompts over its context"),
    KeyRule("router_settings.enable_pre_call_check", _I, "the upstream refuses prompts over its context"),
    KeyRule(
        "router_settings.optional_pre_call_checks",
        _I,
        "routing checks; router_budget_limiting is refused: " + _BUDGETS,
        frozenset({"router_budget_limiting"}),
    ),
    KeyRule("router_settings.provider_budget_config", _R, _BUDGETS),
    KeyRule(
        "router_settings.default_max_parallel_requests",
        _R,
        "bound concurrency per upstream with Envoy circuit breakers, or " + _LIMITS,
    ),
    KeyRule("router_settings.guardrail_list", _R, "list each guardrail in the guardrails: section"),
    KeyRule("router_settings.enable_tag_filtering", _I, _ROUTING),
    KeyRule("router_settings.tag_filtering_match_any", _I, _ROUTING),
    KeyRule("router_settings.num_retries", _I, _ENVOY_RETRY),
    KeyRule("router_settings.timeout", _I, _ENVOY_RETRY),
    KeyRule("router_settings.stream_timeout", _I, _ENVOY_RETRY),
    KeyRule("router_settings.retry_policy", _I, _ENVOY_RETRY),
    KeyRule("router_settings.retry_after", _I, _ENVOY_RETRY),
    KeyRule("router_settings.allowed_fails", _I, _ENVOY_RETRY),
    KeyRule("router_settings.allowed_fails_policy", _I, _ENVOY_RETRY),
    KeyRule("router_settings.cooldown_time", _I, _ENVOY_RETRY),
    KeyRule("router_settings.disable_cooldowns", _I, _ENVOY_RETRY),
    KeyRule("router_settings.fallbacks", _I, _ENVOY_RETRY),
    KeyRule("router_settings.default_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("router_settings.content_policy_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("router_settings.context_window_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("router_settings.max_fallbacks", _I, _ENVOY_RETRY),
    KeyRule("router_settings.default_priority", _I, "no request queue here"),
    KeyRule("router_settings.polling_interval", _I, "no request queue here"),
    KeyRule("router_settings.default_litellm_params", _I, "write a pre-call hook that sets them"),
    KeyRule("router_settings.cache_responses", _I, _CACHE),
    KeyRule("router_settings.caching_groups", _I, _CACHE),
    KeyRule("router_settings.debug_level", _I, "use extproc.log_level"),
    KeyRule("router_settings.set_verbose", _I, "use extproc.log_level"),
    KeyRule("router_settings.deployment_affinity_ttl_seconds", _I, _ROUTING),
    KeyRule("router_settings.ignore_invalid_deployments", _I, "model_list is validated at load"),
    KeyRule("router_settings.search_tools", _I, "the search API is not hooked"),
)

# Entries of `litellm_settings.callbacks` (and the logging lists) naming LiteLLM's own integrations.
_LLM_JUDGE = "use handlers.llm_judge"
_LOG_ONLY = "a logging integration, not bundled: " + _LOGGING
CALLBACK_RULES: tuple[KeyRule, ...] = (
    KeyRule(
        "prometheus",
        _M,
        "llm-extproc's own Prometheus metrics on extproc.metrics_listen (its metric names, not LiteLLM's)",
    ),
    KeyRule(
        "otel",
        _M,
        "llm-extproc's own OpenTelemetry traces: switches extproc.tracing on (OTLP gRPC, OTEL_* settings)",
    ),
    KeyRule("presidio", _R, "use handlers.pii (masks or blocks personal data and secrets)"),
    KeyRule("hide_secrets", _R, "use handlers.pii with entities: {secret: mask}"),
    KeyRule("lakera_prompt_injection", _R, _GUARD),
    KeyRule("detect_prompt_injection", _R, _GUARD + ", or handlers.keyword_moderation"),
    KeyRule("llmguard_moderations", _R, _LLM_JUDGE + " or " + _GUARD),
    KeyRule("llamaguard_moderations", _R, _LLM_JUDGE + " (mode: llama_guard)"),
    KeyRule("openai_moderations", _R, _LLM_JUDGE + " (mode: moderations)"),
    KeyRule("google_text_moderation", _R, _LLM_JUDGE + " or " + _GUARD),
    KeyRule("azure_content_safety", _R, _LLM_JUDGE + " or " + _GUARD),
    KeyRule("aporia", _R, _GUARD),
    KeyRule("bedrock_guardrails", _R, _GUARD),
    KeyRule("banned_keywords", _R, "use handlers.keyword_moderation"),
    KeyRule("blocked_user_check", _R, "write a pre-call hook that refuses those users"),
    KeyRule("dynamic_rate_limiter", _R, _LIMITS),
    KeyRule("dynamic_rate_limiter_v3", _R, _LIMITS),
    KeyRule("parallel_request_limiter", _R, _LIMITS),
    KeyRule("max_budget_limiter", _R, _BUDGETS),
    *(
        KeyRule(name, _I, _LOG_ONLY)
        for name in (
            "langfuse",
            "langfuse_otel",
            "langsmith",
            "datadog",
            "datadog_llm_observability",
            "sentry",
            "lunary",
            "helicone",
            "athina",
            "traceloop",
            "arize",
            "arize_phoenix",
            "braintrust",
            "galileo",
            "opik",
            "mlflow",
            "logfire",
            "literalai",
            "humanloop",
            "langtrace",
            "gcs_bucket",
            "gcs_pubsub",
            "s3",
            "s3_v2",
            "aws_sqs",
            "azure_storage",
            "dynamodb",
            "supabase",
            "lago",
            "openmeter",
            "posthog",
            "cloudzero",
            "agentops",
            "argilla",
            "deepeval",
            "generic",
            "generic_api",
            "greenscale",
            "wandb",
            "slack",
            "pagerduty",
            "resend_email",
            "smtp_email",
        )
    ),
    KeyRule("anthropic_cache_control_hook", _I, "edits requests for prompt caching, checks nothing"),
    KeyRule("vector_store_pre_call_hook", _I, "vector stores are not part of llm-extproc"),
    KeyRule("dotprompt", _I, "prompt management is not part of llm-extproc"),
)

RULES_BY_KEY: dict[str, KeyRule] = {rule.key: rule for rule in KEY_RULES}
CALLBACKS_BY_NAME: dict[str, KeyRule] = {rule.key: rule for rule in CALLBACK_RULES}
SECTIONS = ("litellm_settings", "general_settings", "router_settings")
TOP_LEVEL_KEYS = frozenset(rule.key for rule in KEY_RULES if "." not in rule.key)
# Lists whose entries only log: any name there is a warning (prometheus, otel: mapped), never refused.
LOGGING_LISTS = (
    "success_callback",
    "failure_callback",
    "service_callback",
    "service_callbacks",
    "input_callback",
)


@dataclass(slots=True)
class Findings:
    """What a config's LiteLLM keys come to: errors stop the load, warnings and notes are printed."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The `callbacks` entries that are handlers to load (LiteLLM integrations taken out).
    handlers: tuple[str, ...] = ()
    # A callback list names `otel`: the sidecar's traces are switched on (unless extproc.tracing says off).
    tracing: bool = False


def _entries(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) else []


def _judge_key(where: str, value: Any, findings: Findings) -> None:
    """One key that is not a callback list: its rule, or a warning for a key the table does not know."""
    rule = RULES_BY_KEY.get(where)
    if rule is None:
        findings.warnings.append(
            f"{where}: not a LiteLLM key llm-extproc knows, ignored (check that it changes nothing LiteLLM "
            "would enforce)"
        )
        return
    refused = [v for v in _entries(value) if isinstance(v, str) and v in rule.refused_values]
    if rule.handling is Handling.REFUSED or refused:
        what = f" ({', '.join(refused)})" if refused else ""
        findings.errors.append(
            f"{where}{what}: not supported by llm-extproc, and LiteLLM enforces it: {rule.note}"
        )
    elif rule.handling is Handling.IGNORED:
        findings.warnings.append(f"{where}: ignored by llm-extproc: {rule.note}")


def _prometheus(where: str, metrics_listen: str | None, findings: Findings) -> None:
    if metrics_listen is None:
        findings.warnings.append(
            f"{where}: prometheus: set extproc.metrics_listen (host:port) to serve llm-extproc's Prometheus "
            "metrics (its own metric names, not LiteLLM's)"
        )
    else:
        findings.notes.append(
            f"{where}: prometheus: llm-extproc's own metrics are served on {metrics_listen} "
            "(its metric names, not LiteLLM's)"
        )


def _mapped(where: str, name: str, metrics_listen: str | None, findings: Findings) -> None:
    """A LiteLLM integration the sidecar has its own equivalent of."""
    if name == "otel":
        findings.tracing = True
        findings.notes.append(f"{where}: otel: llm-extproc's own OpenTelemetry traces (extproc.tracing)")
    else:
        _prometheus(where, metrics_listen, findings)


def _judge_callbacks(where: str, value: Any, metrics_listen: str | None, findings: Findings) -> None:
    """`litellm_settings.callbacks`: handlers kept, LiteLLM integrations judged one by one."""
    handlers: list[str] = []
    for entry in _entries(value):
        if not isinstance(entry, str) or "." in entry:
            handlers.append(entry)  # a handler reference (its form is checked where it is loaded)
            continue
        rule = CALLBACKS_BY_NAME.get(entry)
        if rule is None:
            findings.errors.append(
                f"{where}: {entry}: not a LiteLLM integration llm-extproc knows, so it cannot tell whether "
                "it enforces anything; name a handler as module.attribute (e.g. custom_callbacks.handler), "
                + _GUARD
            )
        elif rule.handling is Handling.REFUSED:
            findings.errors.append(
                f"{where}: {entry}: LiteLLM's {entry} integration is not bundled, and it enforces: "
                + rule.note
            )
        elif rule.handling is Handling.MAPPED:
            _mapped(where, entry, metrics_listen, findings)
        else:
            findings.warnings.append(f"{where}: {entry}: ignored by llm-extproc: {rule.note}")
    findings.handlers = tuple(handlers)


def _judge_logging_list(where: str, value: Any, metrics_listen: str | None, findings: Findings) -> None:
    """`success_callback` and the like only log: every entry is one warning (prometheus, otel: mapped)."""
    for entry in _entries(value):
        name = str(entry)
        rule = CALLBACKS_BY_NAME.get(name)
        if rule is not None and rule.handling is Handling.MAPPED:
            _mapped(where, name, metrics_listen, findings)
            continue
        note = rule.note if rule is not None and rule.handling is Handling.IGNORED else _LOGGING
        findings.warnings.append(f"{where}: {name}: ignored by llm-extproc: {note}")


def judge(doc: dict[str, Any], sections: dict[str, dict[str, Any]], metrics_listen: str | None) -> Findings:
    """Every LiteLLM key of a decoded config document judged by the tables.

    `sections` holds the decoded `litellm_settings`, `general_settings` and `router_settings` mappings.
    Top-level keys the table does not know are left to the caller (`extproc` is ours).
    """
    findings = Findings()
    for key in doc:
        if key in TOP_LEVEL_KEYS and key not in SECTIONS:
            _judge_key(key, doc[key], findings)
    for section in SECTIONS:
        for key, value in sections.get(section, {}).items():
            where = f"{section}.{key}"
            if where == "litellm_settings.callbacks":
                _judge_callbacks(where, value, metrics_listen, findings)
            elif section == "litellm_settings" and key in LOGGING_LISTS:
                _judge_logging_list(where, value, metrics_listen, findings)
            elif where != "litellm_settings.guardrails":  # refused where the guardrails: section is read
                _judge_key(where, value, findings)
    return findings


def markdown_rows() -> list[str]:
    """The README's table rows, one per key and per named integration."""
    rows = [f"| `{rule.key}` | {rule.handling.value} | {rule.note} |" for rule in KEY_RULES]
    rows += [
        f"| `litellm_settings.callbacks: [{rule.key}]` | {rule.handling.value} | {rule.note} |"
        for rule in CALLBACK_RULES
    ]
    return rows


# LiteLLM's hook methods (CustomLogger, CustomGuardrail): which run here. A handler class that overrides
# one that does not run gets a warning from `check` (extproc/hooks/source_checks.py), never silence.
_CALLED = "called as in LiteLLM (see Every hook)"
_DEPLOYMENT = "runs inside LiteLLM's router per deployment; use the async_pre_call_hook / post-call hooks"
HOOK_RULES: tuple[KeyRule, ...] = (
    *(
        KeyRule(name, _S, _CALLED)
        for name in (
            "async_pre_call_hook",
            "async_moderation_hook",
            "async_post_call_success_hook",
            "async_post_call_failure_hook",
            "async_post_call_streaming_hook",
            "async_post_call_streaming_iterator_hook",
            "async_post_call_response_headers_hook",
            "async_log_pre_api_call",
            "async_log_success_event",
            "async_log_failure_event",
        )
    ),
    KeyRule("apply_guardrail", _S, "CustomGuardrail's unified hook, on the texts of requests and answers"),
    KeyRule("should_run_guardrail", _S, "CustomGuardrail's selection rule (default_on, per-request names)"),
    KeyRule("log_pre_api_call", _I, "not called: write async_log_pre_api_call"),
    KeyRule("log_success_event", _I, "not called: write async_log_success_event"),
    KeyRule("log_failure_event", _I, "not called: write async_log_failure_event"),
    KeyRule("log_stream_event", _I, "not called: read chunks in async_post_call_streaming_iterator_hook"),
    KeyRule(
        "async_log_stream_event", _I, "not called: read chunks in async_post_call_streaming_iterator_hook"
    ),
    KeyRule("async_logging_hook", _I, "not called: it edits what LiteLLM's loggers see"),
    KeyRule("logging_hook", _I, "not called: it edits what LiteLLM's loggers see"),
    KeyRule("async_pre_routing_hook", _I, "not called: set data['model'] in async_pre_call_hook"),
    KeyRule("async_filter_deployments", _I, "not called: " + _ROUTING),
    KeyRule("async_pre_call_deployment_hook", _I, "not called: " + _DEPLOYMENT),
    KeyRule("async_post_call_success_deployment_hook", _I, "not called: " + _DEPLOYMENT),
    KeyRule("async_post_call_streaming_deployment_hook", _I, "not called: " + _DEPLOYMENT),
    KeyRule("async_pre_mcp_tool_call_hook", _I, "not called: MCP tool calls are not hooked"),
    KeyRule("async_during_mcp_tool_call_hook", _I, "not called: MCP tool calls are not hooked"),
    KeyRule("async_post_mcp_tool_call_hook", _I, "not called: MCP tool calls are not hooked"),
    KeyRule("get_chat_completion_prompt", _I, "not called: prompt management is not part of llm-extproc"),
    KeyRule(
        "async_get_chat_completion_prompt", _I, "not called: prompt management is not part of llm-extproc"
    ),
    KeyRule("async_dataset_hook", _I, "not called: LiteLLM's dataset logging"),
    KeyRule("async_health_check", _I, "not called: the sidecar has its own gRPC health service"),
)
UNCALLED_HOOKS: dict[str, KeyRule] = {rule.key: rule for rule in HOOK_RULES if rule.handling is _I}


def hook_rows() -> list[str]:
    """The README's table of hook methods."""
    return [f"| `{rule.key}` | {rule.handling.value} | {rule.note} |" for rule in HOOK_RULES]

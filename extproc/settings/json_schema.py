"""A JSON schema (draft-07) of config.yaml, built from the loader's own key tables, for the Helm chart.

The chart embeds it as `properties.config` of `values.schema.json`, so `helm lint`, `template` and
`install` refuse a config the sidecar would refuse at start, or would run without what was meant:
a key the loader does not know at the top or in `extproc:` (a misspelling the loader only warns about),
a LiteLLM key the loader refuses (`litellm_keys.REFUSED`), and wrong types or values of the sidecar's
own settings. LiteLLM's sections stay open to keys the loader only warns about, as the loader does.

    python -m extproc.settings.json_schema deploy/helm/llm-extproc/values.schema.json

rewrites that file's `properties.config`; a test keeps the two equal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from extproc.settings.auth import SETTABLE_FIELDS
from extproc.settings.config import TOP_KEYS as CONFIG_TOP_KEYS
from extproc.settings.guardrails import ENTRY_KEYS
from extproc.settings.litellm_keys import KEY_RULES, SECTIONS, TOP_LEVEL_KEYS, Handling
from extproc.settings.sidecar import AUTH_KEYS, LOG_LEVELS, MAX_WORKERS, SIDECAR_KEYS, TlsSettings
from extproc.settings.tracing import TRACING_KEYS
from extproc.types import CallTypeNames

Schema = dict[str, Any]

_STRING: Schema = {"type": "string"}
_STRINGS: Schema = {"type": "array", "items": _STRING}
_BOOLEAN: Schema = {"type": "boolean"}
_OBJECT: Schema = {"type": "object"}


def _integer(minimum: int, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _refused(note: str) -> Schema:
    return {"description": f"refused by llm-extproc: {note}", "not": {}}


# {UserAPIKeyAuth field: header or metadata source}
_FIELD_MAP: Schema = _closed({name: {"type": "string", "minLength": 1} for name in sorted(SETTABLE_FIELDS)})
_AUTH_TYPES: dict[str, Schema] = {
    "headers": _FIELD_MAP,
    "metadata": _FIELD_MAP,
    "trusted_headers": {"anyOf": [_BOOLEAN, _STRINGS]},
    "credential_headers": _STRINGS,
}
_TRACING_TYPES: dict[str, Schema] = {
    "enabled": _BOOLEAN,
    "endpoint": _STRING,
    "sample_ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "service_name": {"type": "string", "minLength": 1},
    "record_content": _BOOLEAN,
    "envoy": _BOOLEAN,
}
# The `extproc:` keys, typed as extproc/settings/sidecar.py checks them; a key without an entry here
# (added to the loader later) is accepted with any value until it gets one.
_SIDECAR_TYPES: dict[str, Schema] = {
    "listen": {"anyOf": [_STRING, {**_STRINGS, "minItems": 1}]},
    "max_request_bytes": _integer(1024),
    "max_json_depth": _integer(2),
    "max_json_nodes": _integer(16),
    "max_stream_hold_bytes": _integer(1024),
    "hook_timeout_ms": _integer(1),
    "failure_mode_allow": _BOOLEAN,
    "grace_seconds": {"type": "number", "minimum": 0},
    "log_level": {"enum": sorted(LOG_LEVELS)},
    "auth": _closed({key: _AUTH_TYPES.get(key, {}) for key in AUTH_KEYS}),
    "handlers": {
        "type": "object",
        "additionalProperties": _closed(
            {"timeout_ms": _integer(1), "fail_open": _BOOLEAN, "options": _OBJECT}
        ),
    },
    "cache": _closed(
        {"redis_url": _STRING, "on_unavailable": {"enum": ["local", "deny"]}, "timeout_ms": _integer(1)}
    ),
    "routing": _BOOLEAN,
    "metrics_listen": _STRING,
    "tls": _closed({name: _STRING for name in TlsSettings.__dataclass_fields__}, ("cert_file", "key_file")),
    "handler_paths": {"anyOf": [_STRING, _STRINGS]},
    "forward_headers": _STRINGS,
    "messages": {"enum": ["one", "two"]},
    "workers": _integer(1, MAX_WORKERS),
    "call_types": {"enum": [names.value for names in CallTypeNames]},
    "tracing": _closed(
        {key: _TRACING_TYPES.get(key, {}) for key in TRACING_KEYS},
    ),
}


def _section(name: str) -> Schema:
    """A LiteLLM section: its refused keys refused, everything else left to the loader's warnings."""
    properties: dict[str, Schema] = {}
    for rule in KEY_RULES:
        section, _, key = rule.key.partition(".")
        if section == name and key and rule.handling is Handling.REFUSED and not rule.refused_values:
            properties[key] = _refused(rule.note)
    if name == "litellm_settings":
        properties["callbacks"] = {"anyOf": [{"type": "string", "minLength": 1}, _STRINGS]}
    if name == "general_settings":
        properties["enforce_user_param"] = _BOOLEAN
    return {"type": "object", "properties": dict(sorted(properties.items()))}


def config_schema() -> Schema:
    """The schema of a config.yaml document."""
    top: dict[str, Schema] = {key: {} for key in sorted(CONFIG_TOP_KEYS | TOP_LEVEL_KEYS)}
    for rule in KEY_RULES:
        if "." not in rule.key and rule.handling is Handling.REFUSED:
            top[rule.key] = _refused(rule.note)
    for name in SECTIONS:
        top[name] = _section(name)
    top["extproc"] = _closed({key: _SIDECAR_TYPES.get(key, {}) for key in sorted(SIDECAR_KEYS)})
    top["model_list"] = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["model_name", "litellm_params"],
            "properties": {
                "model_name": {"type": "string", "minLength": 1},
                "litellm_params": {"type": "object", "required": ["model"], "properties": {"model": _STRING}},
                "model_info": _OBJECT,
            },
        },
    }
    top["guardrails"] = {
        "type": "array",
        "items": {
            **_closed({key: {} for key in sorted(ENTRY_KEYS)}, ("guardrail_name", "litellm_params")),
        },
    }
    top["environment_variables"] = _OBJECT
    return {
        "type": "object",
        "description": "config.yaml: LiteLLM's proxy config format plus extproc: "
        "(generated by extproc/settings/json_schema.py)",
        "additionalProperties": False,
        "properties": top,
    }


def write(values_schema: Path) -> None:
    """Put the generated schema at `properties.config` of a chart's values.schema.json."""
    document = json.loads(values_schema.read_text())
    document["properties"]["config"] = config_schema()
    values_schema.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]))

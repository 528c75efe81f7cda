"""The `guardrails:` section as LiteLLM reads it, validated: one `GuardrailEntry` per guardrail.

```yaml
guardrails:
  - guardrail_name: no-bombs
    litellm_params:
      guardrail: my_guardrails.BombScreen   # module.Class / module.instance, or a vendor name
      mode: [pre_call, post_call]           # one event or a list; none given: every event
      default_on: true                      # else only requests that name it run it
      fail_on_error: true                   # false: a crash or a timeout lets the request through
      unreachable_fallback: fail_closed     # fail_open: a service it cannot reach lets it through
      timeout: 2                            # seconds
      threshold: 0.8                        # anything else: the class's own keyword arguments
    guardrail_info: {...}                   # descriptive only
```

Every key either works as in LiteLLM or stops the config with an error naming it: a safety control
never switches off silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from extproc.settings.checks import ConfigError, boolean, mapping

EVENTS = ("pre_call", "during_call", "post_call", "logging_only")
# litellm_params keys the sidecar reads itself; every other key goes to the guardrail's constructor.
POLICY_KEYS = frozenset(
    {"guardrail", "mode", "default_on", "fail_on_error", "unreachable_fallback", "timeout"}
)
ENTRY_KEYS = frozenset({"guardrail_name", "litellm_params", "guardrail_info", "guardrail_id"})


@dataclass(frozen=True, slots=True)
class GuardrailEntry:
    """One `guardrails:` entry."""

    name: str
    guardrail: str  # `module.attribute`, or a vendor name (extproc/hooks/vendors.py)
    modes: tuple[str, ...] | None  # None: every event (LiteLLM's `event_hook=None`)
    default_on: bool
    params: dict[str, Any] = field(default_factory=dict)  # the class's own keyword arguments
    timeout_ms: int | None = None
    fail_open: bool = False  # `fail_on_error: false`: crashes and timeouts let the request through
    open_when_unreachable: bool = False  # `unreachable_fallback: fail_open`
    where: str = "guardrails"

    @property
    def mode_value(self) -> str | list[str] | None:
        """`event_hook` as LiteLLM hands it to the class: one name, a list, or None."""
        if self.modes is None:
            return None
        return self.modes[0] if len(self.modes) == 1 else list(self.modes)

    @property
    def is_reference(self) -> bool:
        return "." in self.guardrail


def _modes(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if isinstance(value, dict):
        raise ConfigError(
            f"{where}: tag-based modes ({{tags: ..., default: ...}}) are not supported; "
            f"give one event or a list of {', '.join(EVENTS)}"
        )
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: expected one event or a list of {', '.join(EVENTS)}")
    for item in items:
        if item not in EVENTS:
            hint = " (MCP tool calls do not pass through an LLM route)" if "mcp" in str(item) else ""
            raise ConfigError(f"{where}: {item!r} is not an event: use {', '.join(EVENTS)}{hint}")
    return tuple(dict.fromkeys(items))


def _timeout_ms(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: expected a positive number of seconds")
    return max(1, round(value * 1000))


def _entry(raw: Any, where: str) -> GuardrailEntry:
    entry = mapping(raw, where)
    for key in entry.keys() - ENTRY_KEYS:
        raise ConfigError(
            f"{where}.{key}: unknown key (expected guardrail_name, litellm_params, guardrail_info)"
        )
    name = entry.get("guardrail_name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.guardrail_name: expected a non-empty string")
    params = dict(mapping(entry.get("litellm_params"), f"{where}.litellm_params"))
    where_params = f"{where}.litellm_params"
    guardrail = params.get("guardrail")
    if not isinstance(guardrail, str) or not guardrail:
        raise ConfigError(
            f"{where_params}.guardrail: expected 'module.Class' (a file next to the config) or a vendor name"
        )
    fallback = params.get("unreachable_fallback", "fail_closed")
    if fallback not in ("fail_closed", "fail_open"):
        raise ConfigError(f"{where_params}.unreachable_fallback: expected fail_closed or fail_open")
    return GuardrailEntry(
        name=name,
        guardrail=guardrail,
        modes=_modes(params.get("mode"), f"{where_params}.mode"),
        default_on=boolean(params.get("default_on", False), f"{where_params}.default_on"),
        params={k: v for k, v in params.items() if k not in POLICY_KEYS},
        timeout_ms=_timeout_ms(params.get("timeout"), f"{where_params}.timeout"),
        fail_open=not boolean(params.get("fail_on_error", True), f"{where_params}.fail_on_error"),
        open_when_unreachable=fallback == "fail_open",
        where=where,
    )


def parse_guardrails(value: Any) -> tuple[GuardrailEntry, ...]:
    """The top-level `guardrails:` list; names must be unique (requests select guardrails by name)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("guardrails: expected a list of {guardrail_name, litellm_params} entries")
    entries = tuple(_entry(raw, f"guardrails[{i}]") for i, raw in enumerate(value))
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(f"{entry.where}.guardrail_name: {entry.name!r} is used twice")
        seen.add(entry.name)
    return entries


def deployment_guardrails(model_list: list[Any] | None, known: set[str]) -> dict[str, tuple[str, ...]]:
    """`model_list[].litellm_params.guardrails`: the guardrails every request for that model_name runs."""
    selected: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(model_list or ()):
        if not isinstance(entry, dict):
            continue
        params = entry.get("litellm_params")
        names = params.get("guardrails") if isinstance(params, dict) else None
        if names is None:
            continue
        where = f"model_list[{i}].litellm_params.guardrails"
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: expected a list of guardrail names")
        for name in names:
            if name not in known:
                raise ConfigError(f"{where}: no guardrail is named {name!r} in guardrails:")
        model = str(entry.get("model_name"))
        selected[model] = tuple(dict.fromkeys((*selected.get(model, ()), *names)))
    return selected

"""Loading the `guardrails:` entries: each becomes a `LoadedGuardrail`, the object LiteLLM would build
and the rule for when its hooks run.

`guardrail: module.Class` is imported like a callback (relative to the config's folder) and built as
LiteLLM builds it: `guardrail_name`, `event_hook` (the entry's `mode`) and `default_on`, plus the entry's
other `litellm_params` as the class's own keyword arguments (a key the class does not take is an error).
`module.instance` is used as it is, with the entry's name, mode and default_on set on it. A vendor name
stands for a built-in (extproc/hooks/vendors.py). A guardrail that could never run on the events its
entry names is refused at load: a guardrail that silently checks nothing is the failure this prevents.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.errors import HandlerError
from extproc.hooks import vendors
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.guardrail import CustomGuardrail, implements_apply_guardrail
from extproc.hooks.hook import overrides
from extproc.hooks.loader import import_module
from extproc.hooks.unified import UNIFIED_KINDS, UnifiedGuardrail
from extproc.settings.config import HandlerPolicy
from extproc.settings.guardrails import EVENTS, GuardrailEntry
from extproc.types import SIDECAR_METADATA_KEYS, HookKind, JSONDict

# The event a hook kind belongs to; kinds not listed (failure, response headers, logging) always run.
EVENT_OF = {
    HookKind.PRE_CALL: "pre_call",
    HookKind.MODERATION: "during_call",
    HookKind.POST_CALL_SUCCESS: "post_call",
    HookKind.POST_CALL_STREAMING_ITERATOR: "post_call",
    HookKind.POST_CALL_STREAMING: "post_call",
}


def _requested(data: JSONDict, name: str) -> bool:
    """Whether the request names the guardrail in `metadata.guardrails` (a name, or `{name: params}`)."""
    for key in SIDECAR_METADATA_KEYS:
        metadata = data.get(key)
        requested = metadata.get("guardrails") if isinstance(metadata, dict) else None
        if isinstance(requested, list):
            return any(item == name or (isinstance(item, dict) and name in item) for item in requested)
    return False


@dataclass(frozen=True, slots=True)
class LoadedGuardrail:
    """One `guardrails:` entry, built: the object, its unified adapter, and when it runs."""

    entry: GuardrailEntry
    instance: object
    unified: UnifiedGuardrail | None  # set when the object implements `apply_guardrail`

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def events(self) -> tuple[str, ...]:
        return self.entry.modes if self.entry.modes is not None else EVENTS

    @property
    def policy(self) -> HandlerPolicy:
        return HandlerPolicy(timeout_ms=self.entry.timeout_ms, fail_open=self.entry.fail_open)

    def runs(self, data: JSONDict, event: str) -> bool:
        """LiteLLM's rule: the guardrail's own `should_run_guardrail` when it is a CustomGuardrail; for a
        built-in standing for a vendor name, the same rule from the entry."""
        if isinstance(self.instance, CustomGuardrail):
            return bool(self.instance.should_run_guardrail(data, event))
        if event not in self.events:
            return False
        return self.entry.default_on or self.entry.modes is None or _requested(data, self.name)

    def method(self, kind: HookKind) -> tuple[object, HookKind] | None:
        """The object whose `kind` hook runs for this guardrail (its own, else the unified adapter's), or
        None when it has none or the kind's event is not one of its events."""
        event = EVENT_OF.get(kind)
        if event is not None and event not in self.events:
            return None
        if overrides(self.instance, kind):
            return self.instance, kind
        if self.unified is not None and kind in UNIFIED_KINDS:
            return self.unified, kind
        return None


def _constructor_kwargs(target: type, entry: GuardrailEntry, params: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments LiteLLM builds the class with; a key the class cannot take is an error."""
    standard = {"guardrail_name": entry.name, "event_hook": entry.mode_value, "default_on": entry.default_on}
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {**standard, **params}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in standard.items() if open_ended or k in parameters}
    for key, value in params.items():
        if not open_ended and key not in parameters:
            raise HandlerError(
                f"{entry.where}.litellm_params.{key}: {target.__name__} takes no {key!r} "
                f"(it takes {', '.join(parameters) or 'no arguments'})"
            )
        kwargs[key] = value
    return kwargs


def _target(reference: str, folders: tuple[Path, ...], where: str) -> object:
    module_name, _, attribute = reference.rpartition(".")
    if not all(part.isidentifier() for part in reference.split(".")):
        raise HandlerError(f"{where}: {reference!r} is not 'module.Class' or 'module.instance'")
    module = import_module(module_name, folders)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise HandlerError(f"{where}: module {module_name!r} has no {attribute!r}") from None


def _build(entry: GuardrailEntry, folders: tuple[Path, ...]) -> object:
    where = f"{entry.where}.litellm_params.guardrail"
    if entry.is_reference:
        reference, params = entry.guardrail, entry.params
    else:
        reference, params = vendors.builtin_for(entry)
    target = _target(reference, folders, where)
    if isinstance(target, type):
        kwargs = _constructor_kwargs(target, entry, params)
        try:
            return target(**kwargs)
        except HandlerError:
            raise
        except BaseException as exc:
            raise HandlerError(
                f"{where}: {reference} could not be built: {type(exc).__name__}: {exc}"
            ) from exc
    if params:
        raise HandlerError(
            f"{entry.where}.litellm_params: {', '.join(params)} given, "
            f"but {reference} is an instance, not a class"
        )
    if isinstance(target, CustomGuardrail):  # the entry's name, mode and default_on hold for it
        target.guardrail_name = entry.name
        target.event_hook = entry.mode_value
        target.default_on = entry.default_on
    return target


def load_guardrail(entry: GuardrailEntry, folders: tuple[Path, ...]) -> LoadedGuardrail:
    instance = _build(entry, folders)
    if not isinstance(instance, CustomLogger):
        raise HandlerError(
            f"{entry.where}.litellm_params.guardrail: {entry.guardrail} is a {type(instance).__name__}, "
            "not a CustomGuardrail (or CustomLogger)"
        )
    unified = UnifiedGuardrail(instance) if isinstance(instance, CustomGuardrail) else None
    if unified is not None and not implements_apply_guardrail(instance):
        unified = None
    loaded = LoadedGuardrail(entry, instance, unified)
    for event in entry.modes or ():
        if event == "logging_only":
            continue
        if not any(loaded.method(kind) for kind, of in EVENT_OF.items() if of == event):
            raise HandlerError(
                f"{entry.where}: mode {event} but {type(instance).__name__} has no hook for it (implement "
                f"{' or '.join(k.value for k, of in EVENT_OF.items() if of == event)}, or apply_guardrail): "
                "it would never run"
            )
    if not any(loaded.method(kind) for kind in EVENT_OF) and entry.modes != ("logging_only",):
        raise HandlerError(
            f"{entry.where}: {type(instance).__name__} implements no hook and no apply_guardrail: "
            "it would check nothing"
        )
    return loaded


def load_guardrails(entries: tuple[GuardrailEntry, ...], folders: tuple[Path, ...]) -> list[LoadedGuardrail]:
    return [load_guardrail(entry, folders) for entry in entries]

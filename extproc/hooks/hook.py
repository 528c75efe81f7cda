"""`Hook`: one handler's implementation of one hook kind, checked when the handler is loaded.

A sync method where async is needed, an iterator hook that is not an async generator, or a signature
that cannot take LiteLLM's arguments fails at start, naming the handler, the method and the reason.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extproc.errors import HandlerError
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.loader import LoadedHandler
from extproc.settings.config import HandlerPolicy
from extproc.telemetry import metrics
from extproc.types import HookKind


def cancelled_by_caller() -> bool:
    """Whether the running task is itself being cancelled (its request ended, a timeout fired). A
    CancelledError a hook raises on its own is then not a cancellation but the hook's failure."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _arguments(kind: HookKind) -> tuple[tuple[str, ...], str | None]:
    """The keyword arguments LiteLLM's proxy passes to a hook, read from `CustomLogger`'s signature:
    the required ones, and the one LiteLLM added later (passed only to hooks that accept it)."""
    parameters = list(inspect.signature(getattr(CustomLogger, kind.value)).parameters.values())[1:]
    required = tuple(p.name for p in parameters if p.default is p.empty)
    optional = next((p.name for p in parameters if p.default is not p.empty), None)
    return required, optional


HOOK_ARGUMENTS = {kind: _arguments(kind) for kind in HookKind}


@dataclass(frozen=True, slots=True)
class Hook:
    """One handler's implementation of one hook kind, with its calling policy."""

    label: str  # "<callback reference>.<method>", used in logs, errors and metrics
    kind: HookKind
    call: Callable[..., Any]
    timeout_s: float
    fail_open: bool = False
    takes_extra: bool = False  # accepts the kind's optional argument (traceback_str, request_headers)
    seconds: Any = None  # its latency histogram (a prometheus child), resolved once
    # A guardrail's hook: its name, whether it runs for a request's data, and whether a service it cannot
    # reach lets the request through (`unreachable_fallback: fail_open`).
    guardrail: str | None = None
    guard: Callable[[Any], bool] | None = None
    open_when_unreachable: bool = False


def overrides(instance: object, kind: HookKind) -> bool:
    """A hook counts only if the handler's class defines it other than CustomLogger's no-op."""
    method = getattr(type(instance), kind.value, None)
    return method is not None and method is not getattr(CustomLogger, kind.value, None)


def checked_hook(handler: LoadedHandler, kind: HookKind, timeout_s: float, policy: HandlerPolicy) -> Hook:
    """A handler's `kind` hook, its signature checked, with its timeout and failure policy."""
    method = getattr(handler.instance, kind.value)
    label = f"{handler.reference}.{kind.value}"
    owner = type(handler.instance).__name__
    if kind is HookKind.POST_CALL_STREAMING_ITERATOR:
        if not inspect.isasyncgenfunction(method):
            raise HandlerError(
                f"{label}: {owner}.{kind.value} must be an async generator (async def + yield)"
            )
    elif not inspect.iscoroutinefunction(method):
        raise HandlerError(f"{label}: {owner}.{kind.value} must be 'async def'")
    names, extra = HOOK_ARGUMENTS[kind]
    signature = inspect.signature(method)
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        raise HandlerError(f"{label}: {owner}.{kind.value} must accept ({', '.join(names)}): {exc}") from None
    takes_extra = extra is not None and (
        extra in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    )
    if policy.timeout_ms is not None:
        timeout_s = policy.timeout_ms / 1000
    seconds = metrics.HOOK_SECONDS.labels(handler.reference, kind.value)
    return Hook(label, kind, method, timeout_s, policy.fail_open, takes_extra, seconds)

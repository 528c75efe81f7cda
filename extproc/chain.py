"""The hook chain: which handlers implement which hook, and the calling rules of each hook kind.

Order is fixed once, when the chain is built: the order of `litellm_settings.callbacks`.
- pre-call: sequential pipeline; a dict replaces `data`, None keeps it, a str refuses, raising fails.
(Moderation, post-call, streaming and logging rules are added beside it, one method per kind.)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from extproc.custom_logger import CustomLogger
from extproc.loader import HandlerError, LoadedHandler
from extproc.types import HookKind, JSONDict

# The keyword arguments each hook is called with, as LiteLLM's proxy calls them.
HOOK_ARGUMENTS: dict[HookKind, tuple[str, ...]] = {
    HookKind.PRE_CALL: ("user_api_key_dict", "cache", "data", "call_type"),
    HookKind.MODERATION: ("data", "user_api_key_dict", "call_type"),
    HookKind.POST_CALL_SUCCESS: ("data", "user_api_key_dict", "response"),
    HookKind.POST_CALL_FAILURE: ("request_data", "original_exception", "user_api_key_dict"),
    HookKind.POST_CALL_STREAMING: ("user_api_key_dict", "response"),
    HookKind.POST_CALL_STREAMING_ITERATOR: ("user_api_key_dict", "response", "request_data"),
    HookKind.LOG_PRE_API_CALL: ("model", "messages", "kwargs"),
    HookKind.LOG_SUCCESS: ("kwargs", "response_obj", "start_time", "end_time"),
    HookKind.LOG_FAILURE: ("kwargs", "response_obj", "start_time", "end_time"),
}


@dataclass(frozen=True, slots=True)
class Hook:
    """One handler's implementation of one hook kind."""

    label: str  # "<callback reference>.<method>", used in logs, errors and metrics
    kind: HookKind
    call: Callable[..., Any]
    takes_traceback: bool = False


class HookFailed(Exception):
    """A hook raised (or timed out); `cause` is what the client's error is made from."""

    def __init__(self, hook: Hook, cause: BaseException) -> None:
        super().__init__(f"{hook.label}: {type(cause).__name__}: {cause}")
        self.hook = hook
        self.cause = cause


class HookTimeout(Exception):
    """A hook did not finish within the configured time."""

    status_code = 504

    def __init__(self, hook: Hook, timeout_s: float) -> None:
        self.detail = f"{hook.label} did not finish within {int(timeout_s * 1000)} ms"
        super().__init__(self.detail)


@dataclass(frozen=True, slots=True)
class PreCallResult:
    """The data to send upstream, or the refusal text and the hook that refused."""

    data: JSONDict
    refusal: str | None = None
    refused_by: str | None = None


def overrides(instance: object, kind: HookKind) -> bool:
    """A hook counts only if the handler's class defines it other than CustomLogger's no-op."""
    method = getattr(type(instance), kind.value, None)
    return method is not None and method is not getattr(CustomLogger, kind.value, None)


def _check(reference: str, instance: object, kind: HookKind) -> Hook:
    method = getattr(instance, kind.value)
    label = f"{reference}.{kind.value}"
    owner = type(instance).__name__
    if kind is HookKind.POST_CALL_STREAMING_ITERATOR:
        if not inspect.isasyncgenfunction(method):
            raise HandlerError(
                f"{label}: {owner}.{kind.value} must be an async generator (async def ... yield)"
            )
    elif not inspect.iscoroutinefunction(method):
        raise HandlerError(f"{label}: {owner}.{kind.value} must be 'async def'")
    names = HOOK_ARGUMENTS[kind]
    signature = inspect.signature(method)
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        raise HandlerError(f"{label}: {owner}.{kind.value} must accept ({', '.join(names)}): {exc}") from None
    takes_traceback = kind is HookKind.POST_CALL_FAILURE and (
        "traceback_str" in signature.parameters
        or any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    )
    return Hook(label, kind, method, takes_traceback)


class HookChain:
    """Hooks by kind, in config order; built once per config and shared read-only by requests."""

    def __init__(self, handlers: Sequence[LoadedHandler], timeout_s: float) -> None:
        self.handlers = tuple(handlers)
        self.timeout_s = timeout_s
        by_kind: dict[HookKind, list[Hook]] = {kind: [] for kind in HookKind}
        for handler in handlers:
            for kind in HookKind:
                if overrides(handler.instance, kind):
                    by_kind[kind].append(_check(handler.reference, handler.instance, kind))
        self.hooks: dict[HookKind, tuple[Hook, ...]] = {k: tuple(v) for k, v in by_kind.items()}
        self.pre_call_hooks = self.hooks[HookKind.PRE_CALL]

    def has(self, kind: HookKind) -> bool:
        return bool(self.hooks[kind])

    @property
    def empty(self) -> bool:
        return not any(self.hooks.values())

    async def _call(self, hook: Hook, kwargs: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await hook.call(**kwargs)
        except TimeoutError:
            raise HookFailed(hook, HookTimeout(hook, self.timeout_s)) from None
        except Exception as exc:
            raise HookFailed(hook, exc) from exc

    async def pre_call(
        self, user_api_key_dict: Any, cache: Any, data: JSONDict, call_type: str
    ) -> PreCallResult:
        """Run every pre-call hook in order; stop at the first refusal or failure."""
        for hook in self.pre_call_hooks:
            result = await self._call(
                hook,
                {
                    "user_api_key_dict": user_api_key_dict,
                    "cache": cache,
                    "data": data,
                    "call_type": call_type,
                },
            )
            if result is None:
                continue
            if isinstance(result, str):
                return PreCallResult(data, result, hook.label)
            if isinstance(result, dict):
                data = result
            elif isinstance(result, Exception):
                raise HookFailed(hook, result)
        return PreCallResult(data)

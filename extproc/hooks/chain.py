"""The hook chain: which handlers implement which hook, and the calling rules of each hook kind.

Order is fixed once, when the chain is built: the order of `litellm_settings.callbacks`.
- pre-call: sequential pipeline; a dict replaces `data`, None keeps it, a str refuses, raising fails.
- moderation: every handler's hook concurrently; the first failure in config order wins.
- post-call success: sequential; a non-None return replaces the response, raising fails.
- post-call failure: every hook is called; the first that returns or raises an HTTP exception replaces
  the client's error; anything else they raise is logged and ignored.
- streaming, per chunk: every hook in order with the text accumulated so far; a non-None return
  replaces the chunk (a string becomes its content).
- streaming iterators: chained in config order, each wrapping the previous one's iterator.
- response headers: every hook in order, success or failure; the headers they return are merged
  (a later hook wins a clash); errors are logged and ignored.
- logging events: run in the background, never on the request's path; errors logged.
Each call is bounded by the handler's timeout. A handler with `fail_open` that times out or crashes
(anything but a deliberate HTTP exception) is skipped instead of failing the request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from extproc.api.views import unwrap, wrap
from extproc.errors import is_http_exception
from extproc.hooks.custom_logger import CustomLogger
from extproc.hooks.loader import HandlerError, LoadedHandler
from extproc.settings.config import HandlerPolicy
from extproc.telemetry import metrics
from extproc.types import HookKind, JSONDict

log = logging.getLogger("extproc.chain")

# The keyword arguments each hook is called with, as LiteLLM's proxy calls them.
HOOK_ARGUMENTS: dict[HookKind, tuple[str, ...]] = {
    HookKind.PRE_CALL: ("user_api_key_dict", "cache", "data", "call_type"),
    HookKind.MODERATION: ("data", "user_api_key_dict", "call_type"),
    HookKind.POST_CALL_SUCCESS: ("data", "user_api_key_dict", "response"),
    HookKind.POST_CALL_FAILURE: ("request_data", "original_exception", "user_api_key_dict"),
    HookKind.POST_CALL_STREAMING: ("user_api_key_dict", "response"),
    HookKind.POST_CALL_STREAMING_ITERATOR: ("user_api_key_dict", "response", "request_data"),
    HookKind.POST_CALL_RESPONSE_HEADERS: ("data", "user_api_key_dict", "response"),
    HookKind.LOG_PRE_API_CALL: ("model", "messages", "kwargs"),
    HookKind.LOG_SUCCESS: ("kwargs", "response_obj", "start_time", "end_time"),
    HookKind.LOG_FAILURE: ("kwargs", "response_obj", "start_time", "end_time"),
}
# Arguments LiteLLM added later: passed only to hooks whose signature accepts them.
_OPTIONAL_ARGUMENTS = {
    HookKind.POST_CALL_FAILURE: "traceback_str",
    HookKind.POST_CALL_RESPONSE_HEADERS: "request_headers",
}
_SKIPPED = object()


@dataclass(frozen=True, slots=True)
class Hook:
    """One handler's implementation of one hook kind, with its calling policy."""

    label: str  # "<callback reference>.<method>", used in logs, errors and metrics
    kind: HookKind
    call: Callable[..., Any]
    timeout_s: float
    fail_open: bool = False
    takes_extra: bool = False  # accepts the kind's optional argument (traceback_str, request_headers)
    seconds: Any = None  # its latency histogram, resolved once


class HookFailed(Exception):
    """A hook raised (or timed out); `cause` is what the client's error is made from."""

    def __init__(self, hook: Hook, cause: BaseException) -> None:
        super().__init__(f"{hook.label}: {type(cause).__name__}: {cause}")
        self.hook = hook
        self.cause = cause


class HookTimeout(Exception):
    """A hook did not finish within its timeout."""

    status_code = 504

    def __init__(self, hook: Hook) -> None:
        self.detail = f"{hook.label} did not finish within {round(hook.timeout_s * 1000)} ms"
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


def _check(handler: LoadedHandler, kind: HookKind, timeout_s: float, policy: HandlerPolicy) -> Hook:
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
    names = HOOK_ARGUMENTS[kind]
    signature = inspect.signature(method)
    try:
        signature.bind(**dict.fromkeys(names))
    except TypeError as exc:
        raise HandlerError(f"{label}: {owner}.{kind.value} must accept ({', '.join(names)}): {exc}") from None
    extra = _OPTIONAL_ARGUMENTS.get(kind)
    takes_extra = extra is not None and (
        extra in signature.parameters or any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    )
    if policy.timeout_ms is not None:
        timeout_s = policy.timeout_ms / 1000
    seconds = metrics.HOOK_SECONDS.labels(handler.reference, kind.value)
    return Hook(label, kind, method, timeout_s, policy.fail_open, takes_extra, seconds)


class HookChain:
    """Hooks by kind, in config order; built once per config and shared read-only by requests."""

    def __init__(
        self,
        handlers: Sequence[LoadedHandler],
        timeout_s: float,
        policies: Mapping[str, HandlerPolicy] | None = None,
    ) -> None:
        self.handlers = tuple(handlers)
        policies = policies or {}
        by_kind: dict[HookKind, list[Hook]] = {kind: [] for kind in HookKind}
        for handler in handlers:
            policy = policies.get(handler.reference, HandlerPolicy())
            for kind in HookKind:
                if overrides(handler.instance, kind):
                    by_kind[kind].append(_check(handler, kind, timeout_s, policy))
        self.hooks: dict[HookKind, tuple[Hook, ...]] = {k: tuple(v) for k, v in by_kind.items()}
        self.pre_call_hooks = self.hooks[HookKind.PRE_CALL]
        self.background: set[asyncio.Task[None]] = set()

    @property
    def has_streaming_chunk_hooks(self) -> bool:
        return bool(self.hooks[HookKind.POST_CALL_STREAMING])

    def has(self, kind: HookKind) -> bool:
        return bool(self.hooks[kind])

    @property
    def empty(self) -> bool:
        return not any(self.hooks.values())

    async def _call(self, hook: Hook, kwargs: dict[str, Any]) -> Any:
        """Call one hook within its timeout; `_SKIPPED` when a fail-open hook broke."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(hook.timeout_s):
                return await hook.call(**kwargs)
        except TimeoutError:
            cause: BaseException = HookTimeout(hook)
        except Exception as exc:
            cause = exc
        finally:
            hook.seconds.observe(time.perf_counter() - started)
        # Fail-open skips timeouts and crashes; a deliberate HTTP exception still refuses.
        if hook.fail_open and (isinstance(cause, HookTimeout) or not is_http_exception(cause)):
            log.warning("%s failed open (request goes on without it): %r", hook.label, cause)
            return _SKIPPED
        raise HookFailed(hook, cause) from cause

    async def pre_call(
        self, user_api_key_dict: Any, cache: Any, data: JSONDict, call_type: str
    ) -> PreCallResult:
        """Run every pre-call hook in order; stop at the first refusal or failure."""
        for hook in self.pre_call_hooks:
            kwargs = {
                "user_api_key_dict": user_api_key_dict,
                "cache": cache,
                "data": data,
                "call_type": call_type,
            }
            result = await self._call(hook, kwargs)
            if result is None or result is _SKIPPED:
                continue
            if isinstance(result, str):
                return PreCallResult(data, result, hook.label)
            if isinstance(result, dict):
                data = result
            elif isinstance(result, Exception):
                raise HookFailed(hook, result)
        return PreCallResult(data)

    async def moderation(self, data: JSONDict, user_api_key_dict: Any, call_type: str) -> None:
        """All moderation hooks at once; raises the first failure in config order."""
        hooks = self.hooks[HookKind.MODERATION]
        kwargs = {"data": data, "user_api_key_dict": user_api_key_dict, "call_type": call_type}
        results = await asyncio.gather(*(self._call(h, kwargs) for h in hooks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def post_call_success(self, data: JSONDict, user_api_key_dict: Any, response: Any) -> Any:
        """Sequential; returns the (possibly replaced) response view."""
        for hook in self.hooks[HookKind.POST_CALL_SUCCESS]:
            kwargs = {"data": data, "user_api_key_dict": user_api_key_dict, "response": response}
            result = await self._call(hook, kwargs)
            if result is not None and result is not _SKIPPED:
                replacement = unwrap(result)
                if isinstance(replacement, dict):
                    response = wrap(replacement)
                else:
                    log.warning(
                        "%s returned a %s, not a response: ignored", hook.label, type(result).__name__
                    )
        return response

    async def post_call_failure(
        self, request_data: JSONDict, exception: BaseException, user_api_key_dict: Any, traceback_str: str
    ) -> BaseException | None:
        """Call every failure hook; the first HTTP exception returned or raised (config order) wins."""
        hooks = self.hooks[HookKind.POST_CALL_FAILURE]
        calls = []
        for hook in hooks:
            kwargs = {
                "request_data": request_data,
                "original_exception": exception,
                "user_api_key_dict": user_api_key_dict,
            }
            if hook.takes_extra:
                kwargs["traceback_str"] = traceback_str
            calls.append(self._call(hook, kwargs))
        results = await asyncio.gather(*calls, return_exceptions=True)
        replacement: BaseException | None = None
        for hook, result in zip(hooks, results, strict=True):
            candidate = result.cause if isinstance(result, HookFailed) else result
            if isinstance(candidate, BaseException) and is_http_exception(candidate):
                replacement = replacement or candidate
            elif isinstance(candidate, BaseException):
                log.warning("%s raised while handling a failure (ignored): %r", hook.label, candidate)
        return replacement

    async def response_headers(
        self, data: JSONDict, user_api_key_dict: Any, response: Any, request_headers: dict[str, str]
    ) -> tuple[tuple[str, str], ...]:
        """Headers the hooks add to the client's response; a broken hook adds none."""
        merged: dict[str, str] = {}
        for hook in self.hooks[HookKind.POST_CALL_RESPONSE_HEADERS]:
            kwargs = {"data": data, "user_api_key_dict": user_api_key_dict, "response": response}
            if hook.takes_extra:
                kwargs["request_headers"] = request_headers
            try:
                result = await self._call(hook, kwargs)
            except HookFailed as failure:
                log.warning("%s raised (no headers added): %r", hook.label, failure.cause)
                continue
            if isinstance(result, dict):
                merged.update({str(k).lower(): str(v) for k, v in result.items()})
        return tuple(merged.items())

    async def post_call_streaming(self, user_api_key_dict: Any, text: str) -> Any:
        """Per-chunk hooks in order; the last replacement given (None when all kept the chunk)."""
        replacement = None
        for hook in self.hooks[HookKind.POST_CALL_STREAMING]:
            result = await self._call(hook, {"user_api_key_dict": user_api_key_dict, "response": text})
            if result is not None and result is not _SKIPPED:
                replacement = result
        return replacement

    def streaming_iterator(
        self, user_api_key_dict: Any, source: AsyncIterator[Any], request_data: JSONDict
    ) -> AsyncIterator[Any]:
        """Chain the iterator hooks: the first wraps the upstream chunks, each next one the previous."""
        stream = source
        for hook in self.hooks[HookKind.POST_CALL_STREAMING_ITERATOR]:
            stream = hook.call(
                user_api_key_dict=user_api_key_dict, response=stream, request_data=request_data
            )
        return stream

    def log_event(self, kind: HookKind, **kwargs: Any) -> None:
        """Fire a logging event in the background; never awaited by the request."""
        for hook in self.hooks[kind]:
            self._spawn(self._logged(hook, kwargs))

    async def _logged(self, hook: Hook, kwargs: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(hook.timeout_s):
                await hook.call(**kwargs)
        except Exception as exc:
            log.warning("%s raised (logging events never affect requests): %r", hook.label, exc)

    def run_in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Work that must finish even though its request is gone (endings after a disconnect)."""
        self._spawn(self._guarded(coroutine))

    async def _guarded(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        try:
            await coroutine
        except Exception:
            log.exception("background work of a finished request failed")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

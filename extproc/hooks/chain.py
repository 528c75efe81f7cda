"""The hook chain: which handlers implement which hook, and every calling rule of every hook kind.

Order is fixed once, when the chain is built: the order of `litellm_settings.callbacks`, kept in
`HookChain.hooks`. The rules, each owned by one method below:
- pre-call: sequential pipeline; a dict replaces `data`, None keeps it, a str refuses (raised as
  `RejectedRequestError` naming the hook), a returned or raised exception fails.
- moderation: every handler's hook concurrently; the first failure in config order wins.
- post-call success: sequential; a non-None return replaces the response, raising fails.
- post-call failure: every hook is called (with `traceback_str` where the signature takes it), then the
  failure logging event fires; the first hook that returns or raises an HTTP exception replaces the
  client's error; anything else they raise is logged and ignored.
- streaming, per chunk: every hook in order with the text accumulated so far; the last non-None
  return replaces the chunk (a string becomes its text, a dict the whole chunk).
- streaming iterators: chained in config order, each wrapping the previous one's iterator.
- response headers: every hook in order, success or failure; the headers they return are merged
  (a later hook wins a clash); errors are logged and ignored.
- logging events: LiteLLM-shaped `kwargs` built here, run in the background, never on the request's
  path; errors logged.
Each call is bounded by the handler's timeout. A handler with `fail_open` that times out or crashes
(anything but a deliberate HTTP exception) is skipped instead of failing the request.
Every hook call of a request, and its ending events, run in that request's task or in tasks created
from it, so context variables a handler sets at pre-call are its own per request (the rate limiter
keeps its record there). A `Tracer` set on
the chain is told how every call ended (`llm-extproc try` reports it). With OpenTelemetry traces on, each
call is a span, a child of its request's (extproc/telemetry/tracing.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any

from extproc.api.views import unwrap, wrap
from extproc.decisions import hook_headers
from extproc.errors import HookFailed, HookTimeout, RejectedRequestError, is_http_exception, is_unreachable
from extproc.hooks.hook import Hook, cancelled_by_caller, checked_hook, overrides
from extproc.hooks.loaded_guardrails import EVENT_OF, LoadedGuardrail
from extproc.hooks.loader import LoadedHandler
from extproc.hooks.log_events import log_kwargs
from extproc.settings.config import HandlerPolicy
from extproc.telemetry import tracing
from extproc.types import HookKind, JSONDict, sidecar_metadata

log = logging.getLogger("extproc.chain")
_SKIPPED = object()
_CANCELLED = "cancelled (timed out, or its request ended)"
Tracer = Callable[[Hook, str], None]  # told how each call ended, e.g. "returned None", "raised X: ..."


def outcome_of(result: Any) -> str:
    """How a call that returned is reported to a tracer."""
    if isinstance(result, str):
        return f"returned a string: {result[:80]!r}"
    return "returned None" if result is None else f"returned a {type(result).__name__}"


def hook_outcome(cause: BaseException) -> str:
    """How a failed call is named on its span: a deliberate refusal, a timeout, or an error."""
    if isinstance(cause, HookTimeout):
        return "timeout"
    return "refused" if is_http_exception(cause) else "error"


_GUARDRAILS_FIRST = frozenset(
    {HookKind.POST_CALL_SUCCESS, HookKind.POST_CALL_STREAMING_ITERATOR, HookKind.POST_CALL_STREAMING}
)


def _applied(data: JSONDict, name: str | None) -> None:
    """Note a guardrail that ran in `metadata.applied_guardrails` (the `x-litellm-applied-guardrails` answer
    header is made from it)."""
    metadata = sidecar_metadata(data)
    if name is None or metadata is None:
        return
    applied = metadata.get("applied_guardrails")
    if not isinstance(applied, list):
        metadata["applied_guardrails"] = applied = []
    if name not in applied:
        applied.append(name)


def _guardrail_hooks(guardrails: Sequence[LoadedGuardrail], timeout_s: float) -> dict[HookKind, list[Hook]]:
    """Each guardrail's hooks, for its events only, each with the guardrail's rule for when it runs."""
    by_kind: dict[HookKind, list[Hook]] = {kind: [] for kind in HookKind}
    for guardrail in guardrails:
        for kind in HookKind:
            found = guardrail.method(kind)
            if found is None:
                continue
            owner, _ = found
            hook = checked_hook(LoadedHandler(guardrail.name, owner), kind, timeout_s, guardrail.policy)
            event = EVENT_OF.get(kind)
            guard = None if event is None else functools.partial(guardrail.runs, event=event)
            by_kind[kind].append(
                dataclasses.replace(
                    hook,
                    guardrail=guardrail.name if event is not None else None,
                    guard=guard,
                    open_when_unreachable=guardrail.entry.open_when_unreachable,
                )
            )
    return by_kind


class HookChain:
    """Hooks by kind, in config order; built once per config and shared read-only by requests."""

    def __init__(
        self,
        handlers: Sequence[LoadedHandler],
        timeout_s: float,
        policies: Mapping[str, HandlerPolicy] | None = None,
        guardrails: Sequence[LoadedGuardrail] = (),
    ) -> None:
        self.handlers = tuple(handlers)
        self.guardrails = tuple(guardrails)
        policies = policies or {}
        by_kind: dict[HookKind, list[Hook]] = {kind: [] for kind in HookKind}
        for handler in handlers:
            policy = policies.get(handler.reference, HandlerPolicy())
            for kind in HookKind:
                if overrides(handler.instance, kind):
                    by_kind[kind].append(checked_hook(handler, kind, timeout_s, policy))
        guarded = _guardrail_hooks(self.guardrails, timeout_s)
        for kind in HookKind:  # LiteLLM runs post-call guardrails before plain callbacks
            first, then = (
                (guarded[kind], by_kind[kind])
                if kind in _GUARDRAILS_FIRST
                else (by_kind[kind], guarded[kind])
            )
            by_kind[kind] = [*first, *then]
        # The one list per kind, in config order: every rule below walks it.
        self.hooks: dict[HookKind, tuple[Hook, ...]] = {k: tuple(v) for k, v in by_kind.items()}
        self.kinds = frozenset(kind for kind, hooks in self.hooks.items() if hooks)
        self.tells_failures = bool(self.kinds & {HookKind.POST_CALL_FAILURE, HookKind.LOG_FAILURE})
        self.background: set[asyncio.Task[None]] = set()
        self.tracer: Tracer | None = None
        self._failure_traceback = any(h.takes_extra for h in self.hooks[HookKind.POST_CALL_FAILURE])

    def has(self, kind: HookKind) -> bool:
        return kind in self.kinds

    @property
    def empty(self) -> bool:
        return not self.kinds

    def _trace(self, hook: Hook, outcome: str) -> None:
        if self.tracer is not None:
            self.tracer(hook, outcome)

    async def _call(self, hook: Hook, kwargs: dict[str, Any]) -> Any:
        """Call one hook within its timeout; `_SKIPPED` when a fail-open hook broke."""
        parent = tracing.REQUEST_SPAN.get()  # None unless traces are on and the request is sampled
        span = None if parent is None else tracing.start_hook(parent, hook.label, hook.kind.value)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(hook.timeout_s):
                result = await hook.call(**kwargs)
        except TimeoutError:
            self._trace(hook, _CANCELLED)
            cause: BaseException = HookTimeout(hook.label, hook.timeout_s)
        except asyncio.CancelledError as exc:
            self._trace(hook, _CANCELLED)
            if cancelled_by_caller():
                if span is not None:
                    tracing.end_hook(span, "cancelled")
                raise
            cause = exc  # raised by the hook itself: a failure like any other
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: no hook ends the sidecar
            self._trace(hook, f"raised {type(exc).__name__}: {exc}")
            cause = exc
        else:
            if self.tracer is not None:
                self.tracer(hook, outcome_of(result))
            if span is not None:
                refused = hook.kind is HookKind.PRE_CALL and isinstance(result, str)
                tracing.end_hook(span, "refused" if refused else "ok")
            return result
        finally:
            hook.seconds.observe(time.perf_counter() - started)
        # Fail-open skips timeouts and crashes; a deliberate HTTP exception still refuses.
        skipped = hook.fail_open and (isinstance(cause, HookTimeout) or not is_http_exception(cause))
        if skipped:
            log.warning("%s failed open (request goes on without it): %r", hook.label, cause)
        elif hook.open_when_unreachable and (isinstance(cause, HookTimeout) or is_unreachable(cause)):
            log.warning("%s could not reach its service; request goes on without it: %r", hook.label, cause)
            skipped = True
        if span is not None:
            tracing.end_hook(span, "failed_open" if skipped else hook_outcome(cause), cause)
        if skipped:
            return _SKIPPED
        raise HookFailed(hook.label, cause) from cause

    def _selected(self, hooks: tuple[Hook, ...], data: JSONDict) -> tuple[Hook, ...]:
        """The hooks that run for this request: a guardrail's only when it runs on this request (LiteLLM's
        `should_run_guardrail`), recorded in `metadata.applied_guardrails`. A rule that raises fails the
        request: a guardrail never switches off because its own check broke."""
        if not any(hook.guard is not None for hook in hooks):
            return hooks
        chosen = []
        for hook in hooks:
            if hook.guard is not None:
                try:
                    runs = hook.guard(data)
                except Exception as exc:
                    raise HookFailed(hook.label, exc) from exc
                if not runs:
                    continue
                _applied(data, hook.guardrail)
            chosen.append(hook)
        return tuple(chosen)

    async def pre_call(self, user_api_key_dict: Any, cache: Any, data: JSONDict, call_type: str) -> JSONDict:
        """Run every pre-call hook in order; the data to send on, or raise at the first refusal or failure."""
        for hook in self._selected(self.hooks[HookKind.PRE_CALL], data):
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
                raise RejectedRequestError(result, data, hook.label)
            if isinstance(result, dict):
                data = result
            elif isinstance(result, Exception):
                raise HookFailed(hook.label, result)
        return data

    def moderation(self, data: JSONDict, user_api_key_dict: Any, call_type: str) -> Coroutine[Any, Any, None]:
        """All moderation hooks at once; raises the first failure in config order. Which guardrails run is
        chosen now, before the hooks start (the request's metadata names them on its way upstream)."""
        hooks = self._selected(self.hooks[HookKind.MODERATION], data)
        return self._moderate(hooks, data, user_api_key_dict, call_type)

    async def _moderate(
        self, hooks: tuple[Hook, ...], data: JSONDict, user_api_key_dict: Any, call_type: str
    ) -> None:
        kwargs = {"data": data, "user_api_key_dict": user_api_key_dict, "call_type": call_type}
        results = await asyncio.gather(*(self._call(h, kwargs) for h in hooks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def post_call_success(
        self,
        data: JSONDict,
        user_api_key_dict: Any,
        response: Any,
        view: Callable[[JSONDict], Any] = wrap,
    ) -> Any:
        """Sequential; returns the (possibly replaced) response, as `view` shows a replacement to the
        next hook (the family's answer view)."""
        for hook in self._selected(self.hooks[HookKind.POST_CALL_SUCCESS], data):
            kwargs = {"data": data, "user_api_key_dict": user_api_key_dict, "response": response}
            result = await self._call(hook, kwargs)
            if result is not None and result is not _SKIPPED:
                replacement = unwrap(result)
                if isinstance(replacement, dict):
                    response = view(replacement)
                else:
                    log.warning(
                        "%s returned a %s, not a response: ignored", hook.label, type(result).__name__
                    )
        return response

    async def failed(
        self,
        request_data: JSONDict,
        exception: BaseException,
        user_api_key_dict: Any,
        call_type: str | None,
        start_time: datetime,
    ) -> BaseException | None:
        """Tell every failure hook and the failure logging event; the replacement error, if a hook gave one
        (the first HTTP exception returned or raised, in config order)."""
        hooks = self.hooks[HookKind.POST_CALL_FAILURE]
        replacement: BaseException | None = None
        if hooks:
            trace = "".join(traceback.format_exception(exception)) if self._failure_traceback else ""
            calls = []
            for hook in hooks:
                kwargs = {
                    "request_data": request_data,
                    "original_exception": exception,
                    "user_api_key_dict": user_api_key_dict,
                }
                if hook.takes_extra:
                    kwargs["traceback_str"] = trace
                calls.append(self._call(hook, kwargs))
            results = await asyncio.gather(*calls, return_exceptions=True)
            for hook, result in zip(hooks, results, strict=True):
                candidate = result.cause if isinstance(result, HookFailed) else result
                # A hook that ran out of time gave no answer: only a deliberate HTTP exception replaces.
                deliberate = not isinstance(candidate, HookTimeout) and isinstance(candidate, BaseException)
                if deliberate and is_http_exception(candidate):
                    replacement = replacement or candidate
                elif isinstance(candidate, BaseException):
                    log.warning("%s raised while handling a failure (ignored): %r", hook.label, candidate)
        if call_type is not None and HookKind.LOG_FAILURE in self.kinds:
            self._log_event(HookKind.LOG_FAILURE, request_data, call_type, None, start_time, exception)
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
                merged.update(hook_headers(result.items(), hook.label))
        return tuple(merged.items())

    def streaming_hooks(self, request_data: JSONDict) -> tuple[Hook, ...]:
        """The per-chunk hooks that run for this request's stream (chosen once, when it starts)."""
        return self._selected(self.hooks[HookKind.POST_CALL_STREAMING], request_data)

    async def post_call_streaming(
        self,
        user_api_key_dict: Any,
        text: str,
        chunk: JSONDict,
        set_text: Callable[[JSONDict, str], bool | None],
        hooks: tuple[Hook, ...] | None = None,
    ) -> bool:
        """Per-chunk hooks in order on the text so far; True when the last replacement changed `chunk`.
        `hooks`: the stream's own choice (`streaming_hooks`); every per-chunk hook when not given."""
        replacement = None
        for hook in self.hooks[HookKind.POST_CALL_STREAMING] if hooks is None else hooks:
            result = await self._call(hook, {"user_api_key_dict": user_api_key_dict, "response": text})
            if result is not None and result is not _SKIPPED:
                replacement = result
        if replacement is None:
            return False
        if isinstance(replacement, str):  # a family may have no text to replace in this event
            return set_text(chunk, replacement) is not False
        value = unwrap(replacement)
        if isinstance(value, dict):
            chunk.clear()
            chunk.update(value)
            return True
        return False

    def streaming_iterator(
        self, user_api_key_dict: Any, source: AsyncIterator[Any], request_data: JSONDict
    ) -> AsyncIterator[Any]:
        """Chain the iterator hooks: the first wraps the upstream chunks, each next one the previous."""
        stream = source
        for hook in self._selected(self.hooks[HookKind.POST_CALL_STREAMING_ITERATOR], request_data):
            stream = hook.call(
                user_api_key_dict=user_api_key_dict, response=stream, request_data=request_data
            )
            if self.tracer is not None:
                stream = self._traced_iterator(hook, stream)
        return stream

    async def _traced_iterator(self, hook: Hook, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        self._trace(hook, "started")
        try:
            async for item in inner:
                yield item
        except BaseException as exc:
            self._trace(hook, f"raised {type(exc).__name__}: {exc}")
            raise
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    def log_pre_api_call(self, data: JSONDict, call_type: str) -> None:
        if HookKind.LOG_PRE_API_CALL in self.kinds:
            event = {
                "model": data.get("model"),
                "messages": data.get("messages"),
                "kwargs": log_kwargs(data, call_type),
            }
            for hook in self.hooks[HookKind.LOG_PRE_API_CALL]:
                self._spawn(self._logged(hook, event))

    def log_success(self, data: JSONDict, call_type: str, response: Any, start_time: datetime) -> None:
        if HookKind.LOG_SUCCESS in self.kinds:
            self._log_event(HookKind.LOG_SUCCESS, data, call_type, response, start_time)

    def _log_event(
        self,
        kind: HookKind,
        data: JSONDict,
        call_type: str,
        response: Any,
        start_time: datetime,
        exception: BaseException | None = None,
    ) -> None:
        end_time = datetime.now()
        kwargs = log_kwargs(
            data, call_type, exception, response=response, start_time=start_time, end_time=end_time
        )
        event = {"kwargs": kwargs, "response_obj": response, "start_time": start_time, "end_time": end_time}
        for hook in self.hooks[kind]:
            self._spawn(self._logged(hook, event))

    async def _logged(self, hook: Hook, kwargs: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(hook.timeout_s):
                result = await hook.call(**kwargs)
        except asyncio.CancelledError:
            if cancelled_by_caller():
                raise
            log.warning("%s raised CancelledError (logging events never affect requests)", hook.label)
        except BaseException as exc:
            self._trace(
                hook, _CANCELLED if isinstance(exc, TimeoutError) else f"raised {type(exc).__name__}: {exc}"
            )
            log.warning("%s raised (logging events never affect requests): %r", hook.label, exc)
        else:
            self._trace(hook, outcome_of(result))

    def run_in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Work that must finish even though its request is gone (endings after a disconnect)."""
        self._spawn(self._guarded(coroutine))

    async def _guarded(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            if cancelled_by_caller():
                raise
            log.exception("background work of a finished request failed")
        except BaseException:
            log.exception("background work of a finished request failed")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

"""`Patience`: Envoy waits a fixed time for each answer (its `message_timeout`). When the hooks working on a
message may take longer than that, the sidecar asks Envoy, once and only when it is about to run out,
to wait as long as the hooks may still need.

Without it a chain of hooks that each finish within their own timeout could outlast Envoy's wait: the
client would get Envoy's bare 504 instead of the hooks' verdict, or, with `failure_mode_allow`, the
request would go upstream unhooked. Envoy honours the first `override_message_timeout` per message, as
a new deadline from its arrival, up to `max_message_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

from extproc.decisions import Outbox
from extproc.hooks.chain import HookChain
from extproc.types import HookKind, Phase

# Asked for this long before Envoy's deadline, and added to what the hooks may still need.
SAFETY_S = 0.25


def phase_budgets(chain: HookChain) -> dict[Phase, float]:
    """The longest the hooks answering each phase may take, by their timeouts: sequential kinds add up,
    concurrent ones (failure hooks) count once. Moderation asks for its own wait (`ModerationGate`)."""

    def total(kind: HookKind) -> float:
        return sum(hook.timeout_s for hook in chain.hooks[kind])

    failure = max((hook.timeout_s for hook in chain.hooks[HookKind.POST_CALL_FAILURE]), default=0.0)
    ending = failure + total(HookKind.POST_CALL_RESPONSE_HEADERS)
    request = total(HookKind.PRE_CALL) + ending
    answer = total(HookKind.POST_CALL_SUCCESS) + ending
    return {
        Phase.REQUEST_HEADERS: request,  # a request without a body runs its whole request side here
        Phase.REQUEST_BODY: request,
        Phase.RESPONSE_HEADERS: answer,
        Phase.RESPONSE_BODY: max(answer, total(HookKind.POST_CALL_STREAMING) + ending),
        Phase.REQUEST_TRAILERS: 0.0,
        Phase.RESPONSE_TRAILERS: 0.0,
    }


class Patience:
    """A context around one message's work whose hooks may take longer than Envoy waits (`need_s`)."""

    __slots__ = ("_ceiling_s", "_need_s", "_outbox", "_started", "_task", "_timer", "_waits_s")

    def __init__(self, outbox: Outbox, waits_s: float, need_s: float, ceiling_s: float) -> None:
        self._outbox = outbox
        self._waits_s = waits_s  # Envoy's message_timeout
        self._need_s = need_s  # the longest the hooks of this message may take, by their timeouts
        self._ceiling_s = ceiling_s  # Envoy's max_message_timeout
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Patience:
        self._started = time.monotonic()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(self._waits_s - SAFETY_S, 0.0), self._extend)
        return self

    def _extend(self) -> None:
        remaining = self._need_s - (time.monotonic() - self._started) + SAFETY_S
        seconds = min(max(remaining, SAFETY_S), self._ceiling_s)
        self._task = asyncio.get_running_loop().create_task(self._send(seconds))

    async def _send(self, seconds: float) -> None:
        with contextlib.suppress(Exception):  # the stream is gone: nobody waits any more
            await self._outbox.extend_timeout(seconds)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        task = self._task
        if task is not None and not task.done():
            # The extension is on its way: let it reach Envoy before the answer does.
            await asyncio.wait([task])

"""`ModerationGate`: moderation hooks running beside the upstream call, and the one place their verdict lands.

The request goes upstream at once; the hooks run concurrently. The transport waits (up to the hook
timeout) for the verdict before it reads Envoy's next message. A refusal that comes before Envoy asks
about the response headers is pushed to the client at once (Envoy cancels the upstream call), and the
stream ends with no read pending. Otherwise the response-headers answer waits for the verdict, with
Envoy's message timeout extended first, so no response byte reaches the client before moderation has
passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from extproc.decisions import Outbox, Reply
from extproc.errors import HookFailed


class ModerationGate:
    """Owns the moderation task of one request."""

    __slots__ = ("_fail", "_headers_waiting", "_outbox", "_reply", "_wait_s", "_watcher")

    def __init__(
        self,
        moderation: Coroutine[Any, Any, None],
        fail: Callable[[BaseException, str], Awaitable[Reply]],
        outbox: Outbox,
        wait_s: float,
    ) -> None:
        self._fail = fail
        self._outbox = outbox
        self._wait_s = wait_s
        self._reply: Reply | None = None
        self._headers_waiting = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(moderation))

    async def _watch(self, moderation: Coroutine[Any, Any, None]) -> None:
        try:
            await moderation
            return
        except HookFailed as failure:
            reply = await self._fail(failure.cause, failure.label)
        self._reply = reply
        if not self._headers_waiting:
            await self._outbox.push(reply)

    async def settled(self, limit_s: float) -> None:
        """Wait (at most `limit_s`, never cancelling the hooks) for the verdict. The transport calls this
        before it reads Envoy's next message: a refusal then ends the stream with no read pending, which
        Envoy's reset would cancel (grpc.aio leaks native memory for every cancelled read)."""
        if not self._watcher.done():
            await asyncio.wait([self._watcher], timeout=limit_s)

    async def verdict(self) -> Reply | None:
        """At the response headers: the refusal to answer with, or None to let the response through."""
        self._headers_waiting = True
        if not self._watcher.done():
            await self._outbox.extend_timeout(self._wait_s)
        await asyncio.shield(self._watcher)
        return self._reply

    def cancel(self) -> None:
        if not self._watcher.done():
            self._watcher.cancel()

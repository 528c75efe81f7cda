"""A small, real Generic Guardrail API service for tests (aiohttp, in a thread, on a free port).

`POST /beta/litellm_basic_guardrail_api` answers as a guardrail service would:
- `BLOCKED` (reason `contains <word>`) when a text holds the block word (any case);
- `GUARDRAIL_INTERVENED` with every e-mail address replaced by `[EMAIL]` when a text holds one;
- `NONE` otherwise.
Every request is recorded (`requests`: its JSON body and headers). `answer_next(status, body)` makes the
following answers a fixed status and raw body (a 500, a 503, garbage); `delay_s` makes it slow.

    with GuardrailService(block_word="forbidden") as service:
        service.url          # the api_base to configure
"""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

PATH = "/beta/litellm_basic_guardrail_api"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
MASK = "[EMAIL]"


@dataclass(frozen=True)
class Received:
    """One request the service got."""

    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names


class GuardrailService:
    """The service, running in its own thread and event loop until `stop`."""

    def __init__(self, block_word: str = "forbidden", delay_s: float = 0.0) -> None:
        self.block_word = block_word
        self.delay_s = delay_s
        self.requests: list[Received] = []
        self._fixed: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="guardrail-service", daemon=True)
        self.url = ""

    # ---- control ----
    def answer_next(self, status: int, body: bytes) -> None:
        """Answer every following request with this status and raw body (until `answer_normally`)."""
        with self._lock:
            self._fixed = (status, body)

    def answer_normally(self) -> None:
        with self._lock:
            self._fixed = None

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def last(self) -> Received:
        with self._lock:
            return self.requests[-1]

    # ---- the service ----
    def verdict(self, texts: list[str]) -> dict[str, Any]:
        """What the service decides for these texts."""
        word = self.block_word.lower()
        if any(word in text.lower() for text in texts):
            return {"action": "BLOCKED", "blocked_reason": f"contains {self.block_word}"}
        if any(EMAIL.search(text) for text in texts):
            return {"action": "GUARDRAIL_INTERVENED", "texts": [EMAIL.sub(MASK, text) for text in texts]}
        return {"action": "NONE"}

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="not JSON")
        with self._lock:
            self.requests.append(Received(body, {k.lower(): v for k, v in request.headers.items()}))
            fixed = self._fixed
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fixed is not None:
            return web.Response(status=fixed[0], body=fixed[1], content_type="application/json")
        texts = [t for t in body.get("texts") or [] if isinstance(t, str)]
        return web.Response(body=orjson.dumps(self.verdict(texts)), content_type="application/json")

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://127.0.0.1:{port}"

    def start(self) -> GuardrailService:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> GuardrailService:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

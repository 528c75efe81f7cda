"""`LoopWatch`: notices when the event loop stops turning, and names the handler code that holds it.

A hook that calls something blocking (`time.sleep`, a synchronous HTTP client, a long CPU loop) stops
every request the process serves, not only its own. The loop ticks a heartbeat a few times a second; a
thread checks it, and when the loop has not ticked for `threshold_s` it reads the loop thread's Python
stack and logs the hook method found there (and the line it is blocked on). The warning comes while
the loop is still blocked, so it names the culprit even if the loop never recovers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from prometheus_client import Counter

from extproc.types import HookKind

log = logging.getLogger("extproc.loop")
BLOCKED = Counter(
    "llm_extproc_event_loop_blocked",
    "Times the event loop was blocked past the threshold, by the hook found running",
    ["hook"],
)
_HOOK_NAMES = frozenset(kind.value for kind in HookKind)
_OUR_CODE = str(Path(__file__).resolve().parent.parent)  # extproc/


def blocking_code(frame: FrameType | None) -> tuple[str, str]:
    """(the hook method on the stack as `Class.method`, or "unknown"; the innermost handler frame)."""
    hook, where = "unknown", ""
    while frame is not None:
        code = frame.f_code
        if not where and not code.co_filename.startswith((_OUR_CODE, sys.prefix, sys.base_prefix)):
            where = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        if code.co_name in _HOOK_NAMES:
            owner = frame.f_locals.get("self")
            hook = f"{type(owner).__name__}.{code.co_name}" if owner is not None else code.co_name
            break
        frame = frame.f_back
    return hook, where


class LoopWatch:
    """A heartbeat on the loop and a thread watching it; `start` on the loop, `stop` at shutdown."""

    def __init__(self, threshold_s: float = 1.0, interval_s: float = 0.2) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._beat = time.monotonic()
        self._stopped = threading.Event()
        self._loop_thread = 0
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick(loop)
        self._thread = threading.Thread(target=self._watch, name="llm-extproc-loop-watch", daemon=True)
        self._thread.start()

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._beat = time.monotonic()
        self._timer = loop.call_later(self.interval_s, self._tick, loop)

    def _watch(self) -> None:
        reported = 0.0  # the heartbeat already reported, so one block is reported once
        while not self._stopped.wait(self.interval_s):
            beat = self._beat
            stalled = time.monotonic() - beat
            if stalled < self.threshold_s or beat == reported:
                continue
            reported = beat
            hook, where = blocking_code(sys._current_frames().get(self._loop_thread))
            BLOCKED.labels(hook).inc()
            log.warning(
                "the event loop is blocked for %.1f s by %s%s: every request of this process waits; "
                "make the hook await, or move blocking work to a thread (asyncio.to_thread)",
                stalled,
                hook,
                f" ({where})" if where else "",
            )

    def stop(self) -> None:
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()

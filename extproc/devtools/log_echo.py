"""`LogEcho`: copy the lines a log file gains to a terminal, each with a prefix (`sidecar | ...`).

The processes of `dev` write to their log files only (so the files are complete and outlive the run);
an echo follows a file from a thread and never holds up the process that writes it.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TextIO

POLL_S = 0.1


class LogEcho:
    """Follows `path` from its start; `stop()` prints what is left, then ends the thread."""

    def __init__(self, path: Path, prefix: str, out: TextIO) -> None:
        self.path = path
        self.prefix = prefix
        self.out = out
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"echo {path.name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        pending = b""
        with self.path.open("rb") as log:
            while True:
                last_round = self._stopping.is_set()  # read once more after stop(): the final lines
                chunk = log.read()
                if chunk:
                    *lines, pending = (pending + chunk).split(b"\n")
                    self._write(lines)
                elif last_round:
                    break
                else:
                    self._stopping.wait(POLL_S)
        if pending:
            self._write([pending])

    def _write(self, lines: list[bytes]) -> None:
        text = "".join(f"{self.prefix}{line.decode('utf-8', 'replace').rstrip()}\n" for line in lines)
        with contextlib.suppress(OSError, ValueError):  # a closed terminal ends the echo, not the stack
            self.out.write(text)
            self.out.flush()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

"""Helpers shared by the suites that drive real processes: children, polling, Envoy's ext_proc timing."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The seed's moderation example (LiteLLM's docs), unchanged but for its import line.
SEED_MODERATION = """
from extproc import CustomLogger, HTTPException


class MyCustomHandler(CustomLogger):
    async def async_moderation_hook(self, data, user_api_key_dict, call_type):
        if data["messages"][0]["content"] == "hello world":
            raise HTTPException(status_code=400, detail={"error": "Violated content safety policy"})


proxy_handler_instance = MyCustomHandler()
"""


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a server started on it later cannot lose it
    to some process's outgoing connection in the meantime (a port from `bind(0)` could, and did). Never
    the same port twice in one test process."""
    high = _ephemeral_low()
    low = min(20000, high // 2)  # a kernel whose ephemeral range starts low still leaves ports below it
    for _ in range(1000):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def children_of(pid: int) -> list[int]:
    """The pids whose parent is `pid`, from /proc, in ascending order."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def poll(probe: Callable[[], Any], what: str, deadline_s: float = 10.0) -> Any:
    """`probe()` once it is truthy (readiness, never a fixed sleep); fails after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(0.02)


def complete_lines(text: str) -> list[str]:
    """The lines of a file another process appends to, but the last one if it is still being written."""
    return text[: text.rfind("\n") + 1].splitlines()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a file another process appends to."""
    if not path.exists():
        return []
    return [json.loads(line) for line in complete_lines(path.read_text()) if line.strip()]


def ext_proc_phases(entry: dict[str, Any]) -> dict[str, int]:
    """How many messages of each phase the sidecar got, from an access-log entry's ext_proc filter state.

    `rh:1393:0,rb:1:614:0,sh:368:0,sb:3:570:0,bs:..` -> {"rh": 1, "rb": 1, "sh": 1, "sb": 3}.
    """
    counts = {}
    for part in entry["ext_proc_timing"].split(","):
        name, _, rest = part.partition(":")
        if name in ("rh", "sh"):
            counts[name] = 1
        elif name in ("rb", "sb", "rt", "st"):
            counts[name] = int(rest.split(":")[0])
    return counts


EAGER_ANSWER = b'{"id": "x", "object": "chat.completion", "model": "eager", "choices": []}'


class EagerUpstream:
    """An upstream that answers 200 as soon as it has a request's headers, without reading the body (as
    some servers answer errors): the sidecar's answer must come before Envoy sends it anything."""

    def __init__(self) -> None:
        self.accepted = 0  # connections, counted as they come (`seen` once each has ended)
        self.seen: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                received += chunk
            length = len(EAGER_ANSWER)  # one request per connection: Envoy must not reuse it
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
            connection.sendall(head.encode() + b"connection: close\r\n\r\n" + EAGER_ANSWER)
            connection.settimeout(2)
            try:
                while chunk := connection.recv(65536):
                    received += chunk
            except OSError:
                pass
            self.seen.append(received)

    def close(self) -> None:
        self._server.close()

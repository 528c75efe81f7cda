"""Where a server listens: a unix socket path or host:port, parsed once from the config or a command line.

The string forms are those of `extproc.listen`, `--listen` and `--sidecar`: `unix:/path` or `host:port`
(port 0: any free port). gRPC takes the same strings; Envoy takes the mapping of `envoy_address()`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNIX_PREFIX = "unix:"
MAX_PORT = 65535
# Owner and group only: file permissions guard a socket as TLS guards a TCP listener.
_SOCKET_MODE = 0o660


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A unix socket at `path`, or `host` and `port` when `path` is None."""

    host: str = ""
    port: int = 0
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """`unix:/path` or `host:port`; the ValueError says which part is wrong."""
        if text.startswith(UNIX_PREFIX):
            if len(text) <= len(UNIX_PREFIX):
                raise ValueError(f"{text!r} needs a socket path")
            return cls(path=text[len(UNIX_PREFIX) :])
        host, sep, port = text.rpartition(":")
        if not sep or not host or not _is_port(port):
            raise ValueError(f"{text!r} is neither host:port nor unix:/path")
        return cls(host, int(port))

    @classmethod
    def parse_tcp(cls, text: str) -> ListenAddress:
        """`host:port` only, with the host optional (every interface), as HTTP servers take it."""
        host, sep, port = text.rpartition(":")
        if not sep or not _is_port(port):
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}{self.path}" if self.path is not None else f"{self.host}:{self.port}"

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def worker(self, index: int) -> ListenAddress:
        """Where worker `index` of several listens: worker 0 here, worker i on the port + i (TCP) or the
        socket path + `.i` (unix). A TCP port 0 has no such neighbours, hence the ValueError."""
        if index == 0:
            return self
        if self.path is not None:
            return ListenAddress(path=f"{self.path}.{index}")
        if self.port == 0:
            raise ValueError(f"{self}: several workers need a fixed port (worker i listens on port + i)")
        if self.port + index > MAX_PORT:
            raise ValueError(
                f"{self}: worker {index} would listen on port {self.port + index}, above {MAX_PORT}"
            )
        return ListenAddress(self.host, self.port + index)

    def workers(self, count: int) -> tuple[ListenAddress, ...]:
        return tuple(self.worker(index) for index in range(count))

    def envoy_address(self) -> dict[str, Any]:
        """This address as an Envoy `config.core.v3.Address`: a pipe or a socket address."""
        if self.path is not None:
            return {"pipe": {"path": self.path}}
        return {"socket_address": {"address": self.host, "port_value": self.port}}

    def bound(self, port: int) -> ListenAddress:
        """This address once bound: gRPC reports the port it chose for port 0 (unix: unchanged)."""
        return self if self.path is not None else ListenAddress(self.host, port)

    def bind_target(self) -> str:
        """What gRPC's add_insecure_port and add_secure_port take. For a socket, its folder is made and a
        stale socket file a previous run left is removed first: binding over it would fail."""
        if self.path is not None:
            socket = Path(self.path)
            socket.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                socket.unlink()
        return str(self)

    def restrict_socket(self) -> None:
        """Once the server listens: the socket is reachable by its owner and group only (TCP: nothing)."""
        if self.path is not None:
            os.chmod(self.path, _SOCKET_MODE)

    def remove_socket(self) -> None:
        """Once the server stopped: no socket file left behind (TCP: nothing)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

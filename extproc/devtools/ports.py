"""Whether a TCP port `dev` wants is free, asked before anything is started.

Envoy binds its listeners with SO_REUSEPORT on Linux, so a second Envoy (another `dev`, say) on a port
that is in use would share it silently and take half the connections. The probe binds without
SO_REUSEPORT, which fails against any socket listening on that port, whatever its options; it sets
SO_REUSEADDR so a previous run's connections in TIME_WAIT do not count as taken.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

# A wildcard host resolves to IPv4 and IPv6 addresses; a family this machine lacks is no conflict.
_NOT_HERE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


@dataclass(frozen=True)
class WantedPort:
    """A fixed TCP port a process of the stack will bind, and what wants it (for the message)."""

    host: str
    port: int
    wanted_by: str


def bind_problem(host: str, port: int) -> str | None:
    """None when `host:port` could be bound now; else why not ("in use", or the system's reason)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use by another process"
            if exc.errno not in _NOT_HERE:  # e.g. EACCES: a privileged port
                return str(exc.strerror or exc)
    return None


def taken_port_errors(wanted: list[WantedPort]) -> list[str]:
    """One line per wanted port that cannot be bound, naming the port and what wanted it."""
    errors = []
    for item in wanted:
        problem = bind_problem(item.host, item.port)
        if problem is not None:
            where = f"{item.host}:{item.port}" if item.host else f"port {item.port}"
            errors.append(f"{where} ({item.wanted_by}) is not free: {problem}")
    return errors

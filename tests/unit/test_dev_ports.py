"""`dev`'s port probe: a port another process listens on is taken, whatever its socket options."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import free_port

from extproc.devtools.ports import WantedPort, bind_problem, taken_port_errors


@contextmanager
def listening(host: str, reuse_port: bool) -> Iterator[int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if reuse_port:  # as Envoy binds its listeners on Linux
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("reuse_port", [False, True])
@pytest.mark.parametrize("held_on", ["127.0.0.1", "0.0.0.0"])
def test_a_listening_port_is_in_use(held_on, reuse_port):
    with listening(held_on, reuse_port) as port:
        assert bind_problem("127.0.0.1", port) == "in use by another process"
        assert bind_problem("0.0.0.0", port) == "in use by another process"


def test_an_ipv6_wildcard_listener_holds_the_ipv4_port_too():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        held = listening("::", reuse_port=True)
        port = held.__enter__()
    except OSError:
        pytest.skip("IPv6 is disabled on this machine")
    try:
        assert bind_problem("127.0.0.1", port) == "in use by another process"
    finally:
        held.__exit__(None, None, None)


def test_a_free_port_and_a_closed_one_are_free():
    assert bind_problem("127.0.0.1", free_port()) is None
    with listening("127.0.0.1", reuse_port=False) as port:
        pass
    assert bind_problem("127.0.0.1", port) is None


def test_errors_name_the_port_and_what_wanted_it():
    with listening("127.0.0.1", reuse_port=True) as port:
        free = free_port()
        errors = taken_port_errors(
            [WantedPort("127.0.0.1", port, "Envoy's listener, --port"), WantedPort("127.0.0.1", free, "x")]
        )
    assert errors == [f"127.0.0.1:{port} (Envoy's listener, --port) is not free: in use by another process"]

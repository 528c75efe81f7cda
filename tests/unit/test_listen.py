import os
import stat

import pytest

from extproc.settings.listen import ListenAddress


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("unix:/run/x.sock", ListenAddress(path="/run/x.sock"), "unix:/run/x.sock"),
        ("unix:relative.sock", ListenAddress(path="relative.sock"), "unix:relative.sock"),
        ("127.0.0.1:50051", ListenAddress("127.0.0.1", 50051), "127.0.0.1:50051"),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0), "0.0.0.0:0"),
        ("localhost:09000", ListenAddress("localhost", 9000), "localhost:9000"),
        ("[::1]:50051", ListenAddress("[::1]", 50051), "[::1]:50051"),
    ],
)
def test_parse_and_print(text, expected, canonical):
    address = ListenAddress.parse(text)
    assert address == expected
    assert str(address) == canonical
    assert ListenAddress.parse(str(address)) == address
    assert address.is_unix == text.startswith("unix:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unix:", "'unix:' needs a socket path"),
        ("nonsense", "'nonsense' is neither host:port nor unix:/path"),
        ("localhost", "'localhost' is neither host:port nor unix:/path"),
        (":50051", "':50051' is neither host:port nor unix:/path"),
        ("host:", "'host:' is neither host:port nor unix:/path"),
        ("host:port", "'host:port' is neither host:port nor unix:/path"),
        ("host:-1", "'host:-1' is neither host:port nor unix:/path"),
        ("host:\u00b2", "'host:\u00b2' is neither host:port nor unix:/path"),
    ],
)
def test_parse_refuses(text, message):
    with pytest.raises(ValueError) as info:
        ListenAddress.parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9090", ListenAddress("127.0.0.1", 9090)),
        (":9090", ListenAddress("", 9090)),
        ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
    ],
)
def test_parse_tcp_takes_an_empty_host(text, expected):
    assert ListenAddress.parse_tcp(text) == expected
    assert str(ListenAddress.parse_tcp(text)) == text


@pytest.mark.parametrize("text", ["9090", "unix:/run/x.sock", "host:", "host:x"])
def test_parse_tcp_refuses(text):
    with pytest.raises(ValueError, match=f"expected host:port, got {text!r}"):
        ListenAddress.parse_tcp(text)


@pytest.mark.parametrize(
    ("text", "index", "expected"),
    [
        ("unix:/run/x.sock", 0, "unix:/run/x.sock"),
        ("unix:/run/x.sock", 2, "unix:/run/x.sock.2"),
        ("0.0.0.0:50051", 0, "0.0.0.0:50051"),
        ("0.0.0.0:50051", 3, "0.0.0.0:50054"),
        ("127.0.0.1:0", 0, "127.0.0.1:0"),
        ("127.0.0.1:65534", 1, "127.0.0.1:65535"),
    ],
)
def test_worker_address(text, index, expected):
    assert str(ListenAddress.parse(text).worker(index)) == expected


@pytest.mark.parametrize(
    ("text", "index", "message"),
    [
        ("127.0.0.1:0", 1, "127.0.0.1:0: several workers need a fixed port (worker i listens on port + i)"),
        ("127.0.0.1:65534", 2, "127.0.0.1:65534: worker 2 would listen on port 65536, above 65535"),
    ],
)
def test_worker_address_refuses(text, index, message):
    with pytest.raises(ValueError) as info:
        ListenAddress.parse(text).worker(index)
    assert str(info.value) == message


def test_workers_lists_every_worker_from_the_first():
    assert [str(a) for a in ListenAddress.parse("h:7000").workers(3)] == ["h:7000", "h:7001", "h:7002"]
    assert [str(a) for a in ListenAddress.parse("unix:/s").workers(2)] == ["unix:/s", "unix:/s.1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/x.sock", {"pipe": {"path": "/run/x.sock"}}),
        ("127.0.0.1:50051", {"socket_address": {"address": "127.0.0.1", "port_value": 50051}}),
    ],
)
def test_envoy_address(text, expected):
    assert ListenAddress.parse(text).envoy_address() == expected


@pytest.mark.parametrize(
    ("text", "port", "expected"),
    [
        ("127.0.0.1:0", 40123, "127.0.0.1:40123"),
        ("unix:/run/x.sock", 0, "unix:/run/x.sock"),
    ],
)
def test_bound_takes_the_port_grpc_chose(text, port, expected):
    assert str(ListenAddress.parse(text).bound(port)) == expected


def test_socket_lifecycle(tmp_path):
    socket = tmp_path / "run" / "extproc.sock"
    address = ListenAddress(path=str(socket))
    assert address.bind_target() == f"unix:{socket}"
    assert socket.parent.is_dir()
    socket.write_text("left by a previous run")
    assert address.bind_target() == f"unix:{socket}"
    assert not socket.exists()
    socket.write_text("bound")
    os.chmod(socket, 0o666)
    address.restrict_socket()
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o660
    address.remove_socket()
    address.remove_socket()  # gone already: nothing to do
    assert not socket.exists()


def test_tcp_addresses_have_no_socket_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    address = ListenAddress.parse("127.0.0.1:0")
    assert address.bind_target() == "127.0.0.1:0"
    address.restrict_socket()
    address.remove_socket()
    assert list(tmp_path.iterdir()) == []

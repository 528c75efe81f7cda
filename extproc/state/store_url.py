"""Where the shared store is: one Redis/Valkey node, a Sentinel-watched primary, or a cluster, from one URL.

- `redis://[user:password@]host:port[/db]`, `rediss://...`, `unix:///path.sock`: one node.
- `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]` (`rediss+sentinel://`
  for TLS to the data nodes): the primary the sentinels name for `service_name`, followed across
  failovers.
- `redis+cluster://[user:password@]host:port[,host:port...]` (`rediss+cluster://`): a cluster, found from
  any of the nodes listed.

Parsed once, at load (so `check` names a bad URL) and again when the backend connects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["node", "sentinel", "cluster"]
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("node", False),
    "rediss": ("node", True),
    "unix": ("node", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True, slots=True)
class StoreAddress:
    kind: Kind
    url: str  # as given (a single node's URL goes to redis-py as is)
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster nodes to start from
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def where(self) -> str:
        """The address for logs, without credentials."""
        parts = urlsplit(self.url)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _node(text: str, kind: Kind) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = text, str(DEFAULT_PORTS[kind])
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port")
    return host, int(port)


def redacted(url: str) -> str:
    """`url` for an error message: a password in it (often from os.environ/...) never reaches a log."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def parse_store_url(url: str) -> StoreAddress:
    """The store `url` names; ValueError saying what is wrong (its password masked)."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"expected {', '.join(s + '://' for s in _SCHEMES)} URL, got {redacted(url)!r}")
    kind, tls = _SCHEMES[scheme]
    if kind == "node":
        return StoreAddress("node", url, tls=tls)
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    if not hosts:
        raise ValueError(f"{redacted(url)!r}: no {kind} node listed")
    nodes = tuple(_node(node, kind) for node in hosts.split(","))
    path = [segment for segment in parts.path.split("/") if segment]
    service_name = None
    db = 0
    if kind == "sentinel":
        if not path:
            raise ValueError(
                f"{redacted(url)!r}: the service name is missing (redis+sentinel://host:port/service)"
            )
        service_name = unquote(path.pop(0))
    if path:
        if len(path) > 1 or not path[0].isdigit():
            raise ValueError(f"{redacted(url)!r}: expected at most a database number after the {kind} nodes")
        db = int(path[0])
        if kind == "cluster" and db != 0:
            raise ValueError(f"{redacted(url)!r}: a cluster has only database 0")
    return StoreAddress(
        kind,
        url,
        nodes,
        service_name,
        db,
        unquote(username) or None,
        unquote(password) or None,
        tls,
    )

"""The config's error, and the checks all its sections share: each returns the value or names the key."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A config problem, naming the file and key at fault."""


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A mapping, or {} when the key is absent or empty."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def integer(value: Any, where: str, minimum: int = 1) -> int:
    # bool is an int subclass: `true` must not pass for 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value

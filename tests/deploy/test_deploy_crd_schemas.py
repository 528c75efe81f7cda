"""The schemas of crds/ themselves: valid Draft 7, and strict about unknown fields at every level they
describe, so a misspelled field in a rendered custom resource fails instead of passing unchecked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .crd_schema import CRDS

SCHEMAS = sorted(CRDS.glob("*.json"))


def loose_objects(node: Any, path: str = "") -> list[str]:
    """Paths of the object schemas that list fields but let others through."""
    found = []
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and node.get("additionalProperties") is not False
        ):
            found.append(path or ".")
        for key, value in node.items():
            found += loose_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += loose_objects(value, f"{path}/{index}")
    return found


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.stem)
def test_each_schema_is_valid_and_strict(path: Path) -> None:
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert loose_objects(schema) == []
    group, version, kind = path.stem.split("_")
    assert schema["properties"]["apiVersion"] == {"const": f"{group}/{version}"}
    assert schema["properties"]["kind"] == {"const": kind}


def test_the_strictness_check_bites() -> None:
    assert loose_objects({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}}) == [
        ".",
        "/properties/a",
    ]

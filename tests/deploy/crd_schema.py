"""Custom resources checked offline against the schemas in crds/: JSON Schema (Draft 7) written for these
tests from each resource's API reference, covering the fields the chart writes, refusing unknown fields
(as `kubectl apply` does with strict field validation) and expressing the API's rules on those fields
(what the CRDs check with CEL) as plain JSON Schema. kubernetes_validate only knows built-in kinds.

A rule is a subschema with a `title`: when it fails, the title is the message (as a CEL rule's message).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

CRDS = Path(__file__).resolve().parent / "crds"
# The API groups of the kinds crds/ holds.
GROUPS = frozenset(path.name.split("_")[0] for path in CRDS.glob("*.json"))


class CRDValidationError(Exception):
    pass


@functools.cache
def validator_for(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    group, version = api_version.split("/")
    path = CRDS / f"{group}_{version}_{kind}.json"
    if not path.exists():
        raise CRDValidationError(f"no schema for {api_version} {kind} in {CRDS}")
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def problem(error: jsonschema.ValidationError) -> str:
    """`path: message`, the message being the rule's title when a titled rule (not the root) failed."""
    path = ".".join(str(p) for p in error.absolute_path) or "."
    # The root's title names the schema, not a rule.
    rule = isinstance(error.schema, dict) and len(error.schema_path) > 1
    title = error.schema.get("title") if rule else None
    return f"{path}: {title or error.message}"


def validate(doc: dict[str, Any]) -> None:
    """Raises CRDValidationError naming every problem of `doc`."""
    validator = validator_for(doc["apiVersion"], doc["kind"])
    problems = sorted(problem(error) for error in validator.iter_errors(doc))
    if problems:
        name = doc.get("metadata", {}).get("name", "")
        raise CRDValidationError(f"{doc['kind']} {name}: " + "; ".join(problems))

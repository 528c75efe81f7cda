"""Custom resources checked as the API server would, offline: the CRD's OpenAPI schema (unknown fields
refused, as `kubectl apply` does with strict field validation) and its CEL rules
(`x-kubernetes-validations`, evaluated with a real CEL implementation).

The schemas in crds/ are the `openAPIV3Schema` of the upstream CRDs, descriptions and status removed
(crds/README.md says where each comes from). kubernetes_validate only knows built-in kinds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cel
import jsonschema

CRDS = Path(__file__).resolve().parent / "crds"
# The API groups of the kinds crds/ holds.
GROUPS = frozenset(path.name.split("_")[0] for path in CRDS.glob("*.json"))
# metadata.name of a namespaced object: a DNS subdomain (RFC 1123), at most 253 characters.
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class CRDValidationError(Exception):
    pass


def schema_for(doc: dict[str, Any]) -> dict[str, Any]:
    group, version = doc["apiVersion"].split("/")
    path = CRDS / f"{group}_{version}_{doc['kind']}.json"
    if not path.exists():
        raise CRDValidationError(f"no schema for {doc['apiVersion']} {doc['kind']} in {CRDS}")
    schema: dict[str, Any] = json.loads(path.read_text())
    # Every object's root has these, whether or not the CRD lists them.
    root = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    schema["properties"] = {**root, **schema["properties"]}
    return schema


def strict(node: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists the fields of an object."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every `x-kubernetes-validations` rule of the schema that `value` breaks, with its path."""
    failures = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: there is no old object on create
        if cel.evaluate(rule["rule"], {"self": value}) is not True:
            failures.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, item in value.items():
            if key in schema.get("properties", {}):
                failures += cel_failures(schema["properties"][key], item, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                failures += cel_failures(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def validate(doc: dict[str, Any]) -> None:
    """Raises CRDValidationError naming every problem of `doc`."""
    schema = schema_for(doc)
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '.'}: {error.message}"
        for error in jsonschema.Draft7Validator(strict(schema)).iter_errors(doc)
    ]
    name = doc.get("metadata", {}).get("name", "")
    if not (NAME.match(name) and len(name) <= 253):
        problems.append(f"metadata.name: {name!r} is not a DNS subdomain")
    if not problems:
        problems = cel_failures(schema, doc)
    if problems:
        raise CRDValidationError(f"{doc['kind']} {name}: " + "; ".join(problems))

"""Warnings from reading handlers: `call_type` compared with a name hooks will never receive, and
LiteLLM hook methods a handler overrides that the sidecar never calls.

Hooks receive LiteLLM's proxy names (`acompletion`, ...) or the documented ones (`completion`, ...),
as `extproc.call_types` says. A handler written for the other set compiles and loads, and its branch
silently never runs: `if call_type == "completion": <check>` checks nothing under proxy names. So the
loaded handlers' files are parsed (ast, never executed again) and every comparison of something named
`call_type` with a string of the other set is reported with its file, line and the name to write.

A comparison that already names both spellings (`call_type in ("completion", "acompletion")`) is
fine under either setting and is not reported.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from extproc.settings.litellm_keys import UNCALLED_HOOKS
from extproc.types import PROXY_CALL_TYPES, CallType, CallTypeNames, call_type_named, hook_call_type

_DOCUMENTED = frozenset(call_type.value for call_type in CallType)
_PROXY = frozenset(PROXY_CALL_TYPES.values())


def _names_call_type(node: ast.expr) -> bool:
    """`call_type`, `self.call_type`, `kwargs["call_type"]`, `kwargs.get("call_type")`."""
    if isinstance(node, ast.Name):
        return node.id == "call_type"
    if isinstance(node, ast.Attribute):
        return node.attr == "call_type"
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value == "call_type"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        first = node.args[0] if node.args else None
        return isinstance(first, ast.Constant) and first.value == "call_type"
    return False


def _strings(node: ast.expr) -> list[str]:
    """The string literals a comparison's other side holds: itself, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [
            item.value for item in node.elts if isinstance(item, ast.Constant) and isinstance(item.value, str)
        ]
    return []


def _compared_names(tree: ast.AST) -> Iterator[tuple[int, list[str]]]:
    """(line, the strings) for every comparison or `match` of a call_type with string literals."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_names_call_type(operand) for operand in operands):
                strings = [s for operand in operands for s in _strings(operand)]
                if strings:
                    yield node.lineno, strings
        elif isinstance(node, ast.Match) and _names_call_type(node.subject):
            for case in node.cases:
                patterns = case.pattern.patterns if isinstance(case.pattern, ast.MatchOr) else [case.pattern]
                strings = [
                    p.value.value
                    for p in patterns
                    if isinstance(p, ast.MatchValue)
                    and isinstance(p.value, ast.Constant)
                    and isinstance(p.value.value, str)
                ]
                if strings:
                    yield case.pattern.lineno, strings


def call_type_findings(source: str, path: str, names: CallTypeNames) -> list[str]:
    """Warnings for one file's source: comparisons with names of the set not in force."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError:
        return []  # the import already failed or will: that error says more
    other = _DOCUMENTED if names is CallTypeNames.PROXY else _PROXY
    findings = []
    for line, strings in sorted(_compared_names(tree), key=lambda found: found[0]):
        written = set(strings)
        for name in strings:
            call_type = call_type_named(name)
            if name not in other or call_type is None:
                continue
            wanted = hook_call_type(call_type, names)
            if wanted in written:
                continue  # both spellings named: right under either setting
            findings.append(
                f"{path}:{line}: call_type compared with {name!r}, but hooks receive {wanted!r} "
                f"(extproc.call_types: {names.value}); write {wanted!r}, or both "
                f"({name!r}, {wanted!r}), or set extproc.call_types: "
                f"{'documented' if names is CallTypeNames.PROXY else 'proxy'}"
            )
    return findings


def _source_file(instance: object) -> Path | None:
    """The file a handler's class was written in (None for one without a file)."""
    module = sys.modules.get(type(instance).__module__)
    try:
        found = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        return None
    return Path(found) if found else None


def handler_call_type_warnings(instances: Iterable[object], names: CallTypeNames) -> list[str]:
    """Warnings for the files of the loaded handlers (each file read once)."""
    warnings: list[str] = []
    seen: set[Path] = set()
    for instance in instances:
        path = _source_file(instance)
        if path is None or path in seen:
            continue
        seen.add(path)
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        warnings += call_type_findings(source, str(path), names)
    return warnings


def uncalled_hook_warnings(instances: Iterable[object]) -> list[str]:
    """A handler class that overrides a LiteLLM hook the sidecar never calls: one warning per method
    (`UNCALLED_HOOKS` says why and what to write instead), so the override is never silently dead."""
    warnings: list[str] = []
    seen: set[tuple[type, str]] = set()
    for instance in instances:
        cls = type(instance)
        for name, rule in UNCALLED_HOOKS.items():
            owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
            if owner is None or _is_base(owner) or (cls, name) in seen:
                continue
            seen.add((cls, name))
            warnings.append(f"{cls.__module__}.{cls.__qualname__}.{name}: {rule.note}")
    return warnings


def _is_base(owner: type) -> bool:
    """The API's own base classes (ours or LiteLLM's) define no-op versions: those are no override."""
    module = owner.__module__
    return module.startswith(("extproc.", "litellm.")) or module == "builtins"

"""LiteLLM's module paths in handler files: `import litellm`, `from litellm.x import Name` resolve to ours.

Scope: only code of handler files. The loader gives each handler module (and each sibling module it
imports from the handler folders) its own `__builtins__` whose `__import__` is `shim_import`; every
`import` statement of those modules, at load and later inside hook bodies, passes through it. Nothing
is put in `sys.modules`: the rest of the process (and any installed package) never sees these modules.

- LiteLLM not installed (the usual sidecar): the module paths of `names.LITELLM_MODULES` are stand-in
  modules holding the sidecar's classes and functions. A module or a name that is not in the table fails
  when the file is loaded, with an error naming the name, the file and the line (`LiteLLMNameError`, an
  `ImportError`; an attribute read such as `litellm.router` raises `LiteLLMAttributeError`).
- LiteLLM installed: handler files still get the sidecar's objects for every name of the table
  (`CustomLogger` must be the sidecar's, or the chain would not see a handler's hooks as overridden, and
  hooks receive the sidecar's `UserAPIKeyAuth` and response views); any other name, and any module path
  not in the table, comes from the installed package.
- fastapi not installed: `fastapi`, `fastapi.exceptions` and `fastapi.status` give the sidecar's
  `HTTPException` and the status constants; an installed fastapi is used as it is.

A module a handler imports from the handler folders (a sibling helper) is loaded with the same
`__builtins__`, found by `HandlerModuleFinder` only while a handler's import is running and only for
files inside the registered folders.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

SHIMMED_ROOTS = frozenset({"litellm", "fastapi"})
README_SECTION = "the README's 'Writing handlers' section lists what llm-extproc provides"

_real_import = builtins.__import__
_lazy: dict[str, dict[str, Any]] = {}  # module path -> {name: names.Lazy}
_folders: set[Path] = set()
_state = threading.local()  # `depth`: how many handler imports are running on this thread


class LiteLLMNameError(ImportError):
    """A LiteLLM module or name a handler file imports that the sidecar does not provide."""


class LiteLLMAttributeError(AttributeError):
    """A LiteLLM attribute a handler file reads that the sidecar does not provide."""


def _where(frame: FrameType | None) -> str:
    return "<unknown>" if frame is None else f"{frame.f_code.co_filename}:{frame.f_lineno}"


@cache
def installed(root: str) -> bool:
    """Whether the real package is importable in this environment (asked once per process)."""
    return importlib.util.find_spec(root) is not None


class ShimModule(ModuleType):
    """A stand-in for one LiteLLM module path: its names from the table, lazy names on first read, then
    (when the real package is installed) the real module's attributes."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        frame = sys._getframe(1)
        lazy = _lazy.get(self.__name__, {}).get(name)
        if lazy is not None:
            try:
                value = getattr(importlib.import_module(lazy.module), lazy.attribute)
            except (ImportError, AttributeError) as exc:
                raise LiteLLMNameError(
                    f"{_where(frame)}: '{self.__name__}.{name}' is not available in this build of "
                    f"llm-extproc ({type(exc).__name__}: {exc})",
                    name=self.__name__,
                ) from None
            setattr(self, name, value)
            return value
        root = self.__name__.partition(".")[0]
        if installed(root):
            return getattr(importlib.import_module(self.__name__), name)
        raise LiteLLMAttributeError(
            f"{_where(frame)}: '{self.__name__}.{name}' is not provided by llm-extproc "
            f"({root} itself is not installed); {README_SECTION}"
        )

    def provides(self, name: str) -> bool:
        """Whether the table gives this module `name` (a value, a lazy name or a module below it)."""
        return name in self.__dict__ or name in _lazy.get(self.__name__, {})


def _build(tables: Mapping[str, Mapping[str, object]]) -> dict[str, ShimModule]:
    from extproc.compat.names import Lazy

    modules: dict[str, ShimModule] = {}
    for path in sorted(tables, key=lambda p: p.count(".")):  # parents before children
        module = ShimModule(path, f"llm-extproc's stand-in for {path}")
        lazies = {name: value for name, value in tables[path].items() if isinstance(value, Lazy)}
        for name, value in tables[path].items():
            if name not in lazies:
                setattr(module, name, value)
        module.__dict__["__all__"] = [name for name in tables[path] if name not in lazies]
        _lazy[path] = lazies
        parent, _, child = path.rpartition(".")
        if parent:
            modules[parent].__path__ = []  # a package, for `import litellm.proxy._types` forms
            setattr(modules[parent], child, module)
        modules[path] = module
    return modules


@cache
def shim_modules() -> dict[str, ShimModule]:
    """Every stand-in module by its path, built once (fastapi's only when fastapi is not installed)."""
    from extproc.compat.names import FASTAPI_MODULES, LITELLM_MODULES

    tables = dict(LITELLM_MODULES)
    if not installed("fastapi"):
        tables.update(FASTAPI_MODULES)
    return _build(tables)


def _shimmed(name: str, fromlist: Sequence[str] | None, frame: FrameType | None) -> ModuleType | None:
    """The module an import statement of a handler gets, or None for the ordinary import."""
    modules = shim_modules()
    root = name.partition(".")[0]
    if root not in modules:
        return None
    module = modules.get(name)
    if module is None:
        if installed(root):
            if fromlist:
                return None
            _real_import(name)  # `import litellm.router`: the real submodule, reached through our root
            return modules[root]
        raise LiteLLMNameError(
            f"{_where(frame)}: no module named '{name}' in llm-extproc ({root} itself is not installed); "
            f"{README_SECTION}",
            name=name,
        )
    if not fromlist:
        return modules[root]
    if not installed(root):
        for item in fromlist:
            if item != "*" and not module.provides(item):
                provided = ", ".join(sorted(n for n in vars(module) if not n.startswith("_")))
                raise LiteLLMNameError(
                    f"{_where(frame)}: cannot import name '{item}' from '{name}': llm-extproc provides "
                    f"only {provided or 'its submodules'} there ({root} itself is not installed)",
                    name=name,
                )
    return module


def shim_import(
    name: str,
    globals: Mapping[str, object] | None = None,
    locals: Mapping[str, object] | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> ModuleType:
    """The `__import__` of handler modules."""
    if level == 0 and name.partition(".")[0] in SHIMMED_ROOTS:
        module = _shimmed(name, fromlist, sys._getframe(1))
        if module is not None:
            return module
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        return _real_import(name, globals, locals, fromlist or (), level)
    finally:
        _state.depth -= 1


@cache
def handler_builtins() -> dict[str, Any]:
    """The builtins of handler modules: the interpreter's, with `shim_import` as `__import__`."""
    return {**vars(builtins), "__import__": shim_import}


class HandlerSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads a sibling module of a handler file with the handlers' builtins."""

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["__builtins__"] = handler_builtins()
        super().exec_module(module)


class HandlerModuleFinder(importlib.abc.MetaPathFinder):
    """Claims a module a handler imports when its file lies in a handler folder (found where the ordinary
    path search finds it, so a folder never shadows an installed package)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not getattr(_state, "depth", 0) or not _folders:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if (
            spec is None
            or spec.origin is None
            or type(spec.loader) is not importlib.machinery.SourceFileLoader
        ):
            return None
        origin = Path(spec.origin).resolve()
        if not any(origin.is_relative_to(folder) for folder in _folders):
            return None
        spec.loader = HandlerSourceLoader(fullname, spec.origin)
        return spec


_finder = HandlerModuleFinder()


def prepare(module: ModuleType, folders: Sequence[Path]) -> None:
    """Make `module` (a handler file about to be executed) import through the shim, and its siblings in
    `folders` load the same way."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    _folders.update(Path(folder).resolve() for folder in folders)
    module.__dict__["__builtins__"] = handler_builtins()

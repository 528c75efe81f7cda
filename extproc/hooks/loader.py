"""Handler loading: `module.attribute` references resolved relative to the config file's folder."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from extproc.compat import litellm_shim
from extproc.errors import HandlerError


@dataclass(frozen=True, slots=True)
class LoadedHandler:
    """A handler instance and the config reference it came from."""

    reference: str
    instance: object


def _module_file(folder: Path, module_name: str) -> Path | None:
    base = folder.joinpath(*module_name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _load_file(module_name: str, path: Path, folders: tuple[Path, ...]) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise HandlerError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    # LiteLLM's module paths (`from litellm.proxy._types import UserAPIKeyAuth`) resolve to ours inside
    # this file, its hook bodies and the sibling modules it imports, and nowhere else.
    litellm_shim.prepare(module, folders)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        # Compiled from the source every time: a cached .pyc with the same size and mtime second as an
        # edited file would otherwise bring back the old code on a reload.
        exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    return module


BUILTIN_PACKAGE = "handlers"


def import_module(module_name: str, folders: tuple[Path, ...]) -> ModuleType:
    """A handler module, only from the configured folders (a file there is re-read on every load, for
    reloads) or the built-in `handlers` package: never whatever else happens to be importable."""
    for folder in folders:
        path = _module_file(folder, module_name)
        if path is None:
            continue
        if str(folder) not in sys.path:
            # Handler files import their siblings, as next to LiteLLM's config; appended, so a file in the
            # folder can never shadow the standard library or an installed package.
            sys.path.append(str(folder))
        try:
            return _load_file(module_name, path, folders)
        except HandlerError:
            raise
        except (litellm_shim.LiteLLMNameError, litellm_shim.LiteLLMAttributeError) as exc:
            raise HandlerError(str(exc)) from exc  # already names the name, the file and the line
        except BaseException as exc:  # a module may raise anything at import (SystemExit, CancelledError)
            raise HandlerError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    if module_name == BUILTIN_PACKAGE or module_name.startswith(BUILTIN_PACKAGE + "."):
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError:
            raise HandlerError(f"module {module_name!r} is not a built-in handler") from None
    looked = ", ".join(f"{folder}/{module_name.replace('.', '/')}.py" for folder in folders)
    raise HandlerError(
        f"module {module_name!r} not found (looked for {looked}; handler modules load only from the "
        f"config's folder, extproc.handler_paths and the built-in {BUILTIN_PACKAGE} package)"
    )


def _attribute(module: ModuleType, module_name: str, attribute: str, folders: tuple[Path, ...]) -> object:
    try:
        return getattr(module, attribute)
    except AttributeError:
        pass
    try:  # `handlers.rate_limiter`: a submodule not imported yet
        return import_module(f"{module_name}.{attribute}", folders)
    except HandlerError:
        raise HandlerError(f"module {module_name!r} has no {attribute!r}") from None


def resolve(
    reference: str,
    folders: tuple[Path, ...],
    modules: dict[str, ModuleType] | None = None,
    options: dict[str, Any] | None = None,
) -> object:
    """`custom_callbacks.proxy_handler_instance` -> the object.

    A class is instantiated with `options` as keyword arguments; a module stands for its `Handler`
    class (the built-ins: `handlers.rate_limiter`). `modules` holds what this load already imported,
    so callbacks from one file share one module.
    """
    module_name, sep, attribute = reference.rpartition(".")
    # Dotted Python names only: a path (`/some/where/evil.h`, `../x.y`) must never reach the file system.
    if not sep or not all(part.isidentifier() for part in reference.split(".")):
        raise HandlerError(
            f"callback {reference!r}: expected 'module.attribute', "
            "e.g. custom_callbacks.proxy_handler_instance"
        )
    modules = {} if modules is None else modules
    if module_name not in modules:
        modules[module_name] = import_module(module_name, folders)
    try:
        target = _attribute(modules[module_name], module_name, attribute, folders)
    except HandlerError as exc:
        raise HandlerError(f"callback {reference!r}: {exc}") from None
    if isinstance(target, ModuleType):
        target = getattr(target, "Handler", None)
        if not isinstance(target, type):
            raise HandlerError(f"callback {reference!r}: the module has no Handler class")
    if isinstance(target, type):
        try:
            return target(**(options or {}))
        except BaseException as exc:
            raise HandlerError(f"callback {reference!r}: bad options: {type(exc).__name__}: {exc}") from exc
    if options:
        raise HandlerError(f"callback {reference!r}: options are given but it is an instance, not a class")
    return target


def load_handlers(
    references: tuple[str, ...], folders: tuple[Path, ...], options: dict[str, dict[str, Any]] | None = None
) -> list[LoadedHandler]:
    modules: dict[str, ModuleType] = {}
    options = options or {}
    return [LoadedHandler(ref, resolve(ref, folders, modules, options.get(ref))) for ref in references]

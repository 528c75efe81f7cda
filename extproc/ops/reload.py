"""Hot reload: rebuild the pipeline when the config file or a handler file changes on disk.

A `Reloader` polls a fingerprint of the config file and every `.py` file under its folder: each
file's resolved path and a hash of its content, so a Kubernetes ConfigMap update (the mounted
folder's `..data` symlink swapped to a new timestamped folder, the visible names unchanged) is seen
as well as an edit in place. The stat()s and reads run in a thread, off the event loop.

A new pipeline replaces the old one for new requests only: a session keeps the pipeline it started
with. A config or handler that fails to load is refused, with one log line naming the problem, and
the old pipeline keeps serving. The cache (rate-limit counters) carries over unless its settings
changed. SIGHUP (`request()`) forces a reload even when nothing seems to have changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from extproc.errors import HandlerError
from extproc.hooks.hook import cancelled_by_caller
from extproc.request import pipeline as pipeline_module
from extproc.request.pipeline import Pipeline
from extproc.request.routing import Router
from extproc.settings import config as config_module
from extproc.telemetry import metrics

log = logging.getLogger("extproc.reload")

# Folders never holding handlers: hidden ones (`..data`, `.venv`, `.git`), caches, installed packages.
_SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})
# Settings the running gRPC server was built with: a reload cannot change them.
# Settings of the running server, or that the running Envoy's config was generated from.
_RESTART_ONLY = (
    "listen",
    "max_request_bytes",
    "tls",
    "workers",
    "metrics_listen",
    "failure_mode_allow",
    "forward_headers",
    "messages",
    "routing",
)
Fingerprint = tuple[tuple[str, str, str], ...]


def watched_files(config_path: Path) -> list[Path]:
    """The config file and every `.py` file under its folder (symlinked files included)."""
    files = [config_path]
    for root, dirs, names in os.walk(config_path.parent):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d not in _SKIPPED_DIRS and not Path(root, d, "pyvenv.cfg").exists()
        )
        files += [Path(root, name) for name in sorted(names) if name.endswith(".py")]
    return files


def fingerprint(config_path: Path) -> Fingerprint:
    """(path, resolved path, content hash) of every watched file; blocking: run it in a thread."""
    entries = []
    for path in watched_files(config_path):
        real = os.path.realpath(path)
        try:
            digest = hashlib.blake2b(Path(real).read_bytes(), digest_size=16).hexdigest()
        except OSError as exc:
            digest = f"unreadable: {exc.strerror or exc}"
        entries.append((str(path), real, digest))
    return tuple(entries)


def _new_deployments(old: Pipeline, config: config_module.Config) -> list[str]:
    """Deployments with an `api_base` of their own that the running Envoy has no route for: its
    routes and clusters were generated from the config it started with."""
    if not config.sidecar.routing:
        return []
    known = {(t.id, t.api_base) for t in old.router.targets} if old.router is not None else set()
    return [
        f"{target.id} at {target.api_base}"
        for target in Router(config.model_list).targets
        if target.api_base is not None and (target.id, target.api_base) not in known
    ]


def _problem(exc: BaseException) -> str:
    if isinstance(exc, config_module.ConfigError | HandlerError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Reloader:
    """Watches one config; `install` is called with each good new pipeline."""

    def __init__(
        self,
        config_path: Path,
        current: Callable[[], Pipeline],
        install: Callable[[Pipeline], None],
        interval_s: float,
    ) -> None:
        self.path = config_path
        self.interval_s = interval_s
        self.reloads = 0
        self.reload_failures = 0
        self._current = current
        self._install = install
        self._seen: Fingerprint | None = None
        self._forced = asyncio.Event()

    async def prime(self) -> None:
        """Take the fingerprint the running pipeline corresponds to."""
        self._seen = await asyncio.to_thread(fingerprint, self.path)

    def request(self) -> None:
        """Reload at once, changed or not (SIGHUP)."""
        self._forced.set()

    async def run(self) -> None:
        """Poll every `interval_s` (0: only on `request()`) until cancelled."""
        if self._seen is None:
            await self.prime()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s or None):
                    await self._forced.wait()
            forced = self._forced.is_set()
            self._forced.clear()
            try:
                await self.check(forced)
            except Exception:  # the watcher itself must never die
                log.exception("reload check of %s failed", self.path)

    async def check(self, force: bool = False) -> bool | None:
        """Reload if the files changed: True when reloaded, False when refused, None when unchanged."""
        seen = await asyncio.to_thread(fingerprint, self.path)
        if seen == self._seen and not force:
            return None
        self._seen = seen  # a broken version is reported once, not at every poll
        return await self.reload()

    def _build(self, old: Pipeline) -> tuple[config_module.Config, Pipeline]:
        config = config_module.load(self.path)
        unrouted = _new_deployments(old, config)
        if unrouted:
            raise config_module.ConfigError(
                f"{self.path}: model_list has deployments the running Envoy cannot route to "
                f"({', '.join(unrouted)}): regenerate Envoy's config (llm-extproc envoy-config) and restart "
                "Envoy with it, then reload"
            )
        # The running Envoy removes only the identity headers of the config it was generated from: a
        # header read from now on would be trusted as the client sent it.
        kept = set(config.sidecar.auth.untrusted_headers) - set(old.config.sidecar.auth.untrusted_headers)
        if kept:
            raise config_module.ConfigError(
                f"{self.path}: extproc.auth.headers reads headers the running Envoy does not remove from "
                f"client requests ({', '.join(sorted(kept))}): regenerate Envoy's config "
                "(llm-extproc envoy-config) and restart Envoy with it, then reload"
            )
        same_cache = config.sidecar.cache == old.config.sidecar.cache
        new = pipeline_module.build(config, cache=old.cache if same_cache else None)
        # Envoy keeps waiting as long as the config it was generated from says; the sidecar asks for more
        # when the new hooks may need it (request/patience.py).
        return config, replace(new, envoy_waits_s=old.envoy_waits_s)

    async def reload(self) -> bool:
        """Build a new pipeline from the files as they are now and install it, or keep the old one.

        The build (the handlers' imports and constructors) runs in a thread: a slow import must not
        stall the requests the event loop serves meanwhile.
        """
        old = self._current()
        started = time.monotonic()
        try:
            config, new = await asyncio.to_thread(self._build, old)
        except BaseException as exc:  # a handler's import may raise anything, SystemExit included
            if isinstance(exc, asyncio.CancelledError) and cancelled_by_caller():
                raise
            self.reload_failures += 1
            metrics.RELOADS.labels("refused").inc()
            log.error(
                "reload refused, the previous config keeps serving: %s",
                _problem(exc),
                extra={"reload_failures": self.reload_failures},
            )
            return False
        same_cache = new.cache is old.cache
        self._install(new)
        self.reloads += 1
        metrics.RELOADS.labels("ok").inc()
        callbacks = ", ".join(config.callbacks) or "none"
        log.info(
            "reloaded %s in %.0f ms: callbacks %s%s",
            self.path,
            (time.monotonic() - started) * 1000,
            callbacks,
            "" if same_cache else "; cache settings changed: a new cache (counters start again)",
            extra={"reloads": self.reloads},
        )
        self._notes(old, new)
        return True

    @staticmethod
    def _notes(old: Pipeline, new: Pipeline) -> None:
        """What a reload cannot do by itself: settings of the running server, Envoy's own config."""
        before, after = old.config.sidecar, new.config.sidecar
        stale = [name for name in _RESTART_ONLY if getattr(before, name) != getattr(after, name)]
        if stale:
            log.warning("extproc.%s changed: takes effect only at the next restart", ", extproc.".join(stale))
        if old.request_mode != new.request_mode:
            log.warning(
                "the hooks now need other Envoy phases (%s, was %s): regenerate Envoy's config if it "
                "was generated from the old one (llm-extproc envoy-config)",
                new.request_mode,
                old.request_mode,
            )
        if before.log_level != after.log_level:
            logging.getLogger().setLevel(after.log_level.upper())

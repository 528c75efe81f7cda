"""Several sidecar processes for several cores: where each worker listens, and the supervisor.

With `extproc.workers: N`, `serve` starts N worker processes, each a whole sidecar on its own socket:
worker 0 on the configured address, worker i on the port + i (TCP) or the socket path + `.i` (unix), as
`ListenAddress.worker` computes. The generated Envoy config lists all N as endpoints of the sidecar's
cluster, and Envoy balances the ext_proc streams across them round robin. Workers share nothing in
process: each has its own in-process cache, so counters that must be global (rate limits) need
`extproc.cache.redis_url`.

The supervisor forwards SIGTERM, SIGINT and SIGHUP to every worker, restarts a worker that dies (after
a backoff that grows while it keeps dying at start), and exits once every worker has exited.

The workers are one scrape target: the supervisor makes a folder of its own for prometheus_client's
multiprocess mode and starts every worker with `PROMETHEUS_MULTIPROC_DIR` naming it (set in the
worker's environment from its start, before prometheus_client is imported there). With
`extproc.metrics_listen` set, the supervisor serves every worker's metrics aggregated on that address; a
worker that dies is marked dead (its live gauges dropped, its counts kept). The folder goes when the
supervisor exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from prometheus_client import multiprocess

from extproc.settings.listen import ListenAddress
from extproc.telemetry import metrics

log = logging.getLogger("extproc.workers")

WORKER_INDEX_OPTION = "--worker-index"
_POLL_S = 0.2
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0
_STABLE_AFTER_S = 30.0  # a worker that ran this long before dying restarts at once
_KILL_AFTER_GRACE_S = 5.0


def worker_address(address: str, index: int) -> str:
    """Where worker `index` listens, in the string form `--listen` takes (see `ListenAddress.worker`)."""
    return str(ListenAddress.parse(address).worker(index))


_PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Worker:
    """One worker process and its restart bookkeeping."""

    def __init__(self, index: int, command: list[str], env: Mapping[str, str] | None = None) -> None:
        self.index = index
        self.command = command
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.backoff_s = _BACKOFF_START_S
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env, preexec_fn=_stop_with_parent)
        self.started_at = time.monotonic()
        self.restart_at = None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


class Supervisor:
    """Runs `count` workers, each `command + [--worker-index, i]`, until told to stop. With
    `metrics_folder`, the workers write their metrics there and a dead worker is marked dead in it."""

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        grace_s: float,
        env: Mapping[str, str] | None = None,
        metrics_folder: str | None = None,
    ) -> None:
        self.workers = [Worker(i, [*command, WORKER_INDEX_OPTION, str(i)], env) for i in range(count)]
        self.grace_s = grace_s
        self.metrics_folder = metrics_folder
        self._stopping = threading.Event()

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGHUP)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hangup)
        for worker in self.workers:
            worker.start()
        log.info("started %d workers", len(self.workers))
        while not self._stopping.wait(_POLL_S):
            now = time.monotonic()
            for worker in self.workers:
                self._look_after(worker, now)
        return self._stop()

    def _look_after(self, worker: Worker, now: float) -> None:
        if worker.restart_at is not None:
            if now >= worker.restart_at:
                worker.restarts += 1
                worker.start()
            return
        code = worker.exited()
        if code is None:
            return
        self._mark_dead(worker)
        if now - worker.started_at >= _STABLE_AFTER_S:
            worker.backoff_s = _BACKOFF_START_S
        log.error("worker %d exited with %s; restarting it in %.1f s", worker.index, code, worker.backoff_s)
        worker.restart_at = now + worker.backoff_s
        worker.backoff_s = min(worker.backoff_s * 2, _BACKOFF_MAX_S)

    def _stop(self) -> int:
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s + _KILL_AFTER_GRACE_S
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within the grace period: killed", worker.index)
                worker.process.kill()
                worker.process.wait()
            self._mark_dead(worker)
        return 0

    def _mark_dead(self, worker: Worker) -> None:
        """Drop a dead worker's live gauges (in flight, tasks, cache state) from the aggregate."""
        if self.metrics_folder is not None and worker.process is not None:
            multiprocess.mark_process_dead(worker.process.pid, self.metrics_folder)  # type: ignore[no-untyped-call]


def supervise(
    argv: Sequence[str], count: int, grace_s: float, metrics_address: ListenAddress | None = None
) -> int:
    """Start `count` workers running this same `serve` command line (`argv`, without the program), and
    serve their metrics as one on `metrics_address` when set."""
    command = [sys.executable, "-m", "extproc", *argv]
    with tempfile.TemporaryDirectory(prefix="llm-extproc-metrics-") as folder:
        env = {**os.environ, metrics.MULTIPROCESS_DIR_ENV: folder}
        env.pop(metrics.AGGREGATED_PORT_ENV, None)
        if metrics_address is not None:
            port = metrics.serve_aggregated(str(metrics_address), folder)
            env[metrics.AGGREGATED_PORT_ENV] = str(port)
            log.info("metrics of all workers on http://%s:%d/metrics", metrics_address.host, port)
        return Supervisor(command, count, grace_s, env, folder).run()

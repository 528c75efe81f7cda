"""h2load runs and /proc accounting: throughput with CPU per process, latency from h2load's request log."""

from __future__ import annotations

import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
H2LOAD = "h2load"
MAIN_STARTED = "Main benchmark duration is started"
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
    r"(\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
QUIET_PROBE_S = 1.0
_SLACK_S = 30.0  # beyond its own duration, an h2load run is killed after this long


class LoadError(RuntimeError):
    """h2load failed, or printed no summary."""


# --- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads); readable until it is reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def busy_and_stolen_seconds() -> tuple[float, float]:
    """CPU time the whole machine spent not idle, and the part of it the hypervisor gave to other
    machines (steal), summed over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, steal / CLOCK_TICKS


def all_processes() -> dict[int, tuple[str, float, int]]:
    """Every process on the machine: pid -> (command name, CPU seconds so far, parent pid)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, _, tail = (entry / "stat").read_text().rpartition(")")
        except OSError:  # gone meanwhile
            continue
        fields = tail.split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        found[int(entry.name)] = (head.partition("(")[2], cpu, int(fields[1]))
    return found


def family(pid: int, everyone: dict[int, tuple[str, float, int]]) -> list[int]:
    """`pid` and its descendants (a sidecar with `extproc.workers` > 1 is a supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for child, (_, _, parent) in everyone.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo += children.get(current, [])
    return found


def family_rss_mb(pid: int) -> float:
    return sum(rss_mb(member) for member in family(pid, all_processes()))


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    busy: float
    stolen: float
    cpu: dict[str, float]
    pids: dict[str, int]
    everyone: dict[int, tuple[str, float, int]]
    ours: frozenset[int]


def snapshot(pids: dict[str, int]) -> Snapshot:
    """CPU so far of each of our processes, with its descendants, and of every process on the machine."""
    everyone = all_processes()
    members = {name: family(pid, everyone) for name, pid in pids.items()}
    cpu = {name: sum(everyone[m][1] for m in found if m in everyone) for name, found in members.items()}
    ours = frozenset(m for found in members.values() for m in found)
    busy, stolen = busy_and_stolen_seconds()
    return Snapshot(time.monotonic(), busy, stolen, cpu, pids, everyone, ours)


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds over a window: per process of ours, the rest of the machine's processes, the kernel."""

    seconds: float
    cpu: dict[str, float]
    others: list[tuple[str, float]]  # ("name[pid]", CPU seconds) of processes not ours, busiest first
    unattributed: float  # busy time of the machine (/proc/stat) charged to no process: mostly softirq
    stolen: float  # CPU time the hypervisor gave to other machines (/proc/stat's steal)

    def percent(self, name: str) -> float:
        return self._percent(self.cpu.get(name, 0.0))

    @property
    def other_percent(self) -> float:
        """Noise: processes not ours (other sessions' tests, ...) and the hypervisor's steal, in % of one
        core."""
        return self._percent(sum(cpu for _, cpu in self.others) + self.stolen)

    @property
    def stolen_percent(self) -> float:
        return self._percent(self.stolen)

    @property
    def unattributed_percent(self) -> float:
        return self._percent(self.unattributed)

    def _percent(self, cpu: float) -> float:
        return 100 * cpu / self.seconds if self.seconds > 0 else 0.0


def usage(before: Snapshot, after: Snapshot) -> Usage:
    cpu = {name: after.cpu[name] - before.cpu[name] for name in before.cpu if name in after.cpu}
    others = _others(before, after)
    charged = sum(cpu.values()) + sum(c for _, c in others)
    stolen = after.stolen - before.stolen
    unattributed = max(after.busy - before.busy - charged - stolen, 0.0)
    return Usage(after.at - before.at, cpu, others, unattributed, stolen)


def _others(before: Snapshot, after: Snapshot) -> list[tuple[str, float]]:
    """CPU of every other process over the window (all of it for one started meanwhile)."""
    ours = {*before.ours, *after.ours, os.getpid()}
    deltas = [
        (f"{name}[{pid}]", cpu - before.everyone.get(pid, (name, 0.0, 0))[1])
        for pid, (name, cpu, _) in after.everyone.items()
        if pid not in ours
    ]
    return sorted((d for d in deltas if d[1] > 0), key=lambda d: -d[1])


def wait_for_quiet(pids: dict[str, int], limit_s: float, threshold_percent: float) -> float:
    """Wait (up to `limit_s`) for a second in which processes not ours use under `threshold_percent`
    of a core; returns the seconds waited."""
    started = time.monotonic()
    while True:
        before = snapshot(pids)
        time.sleep(QUIET_PROBE_S)
        if usage(before, snapshot(pids)).other_percent < threshold_percent:
            return time.monotonic() - started
        if time.monotonic() - started >= limit_s:
            return time.monotonic() - started


# --- h2load --------------------------------------------------------------------------------------


def h2load_command(url: str, body: Path, headers: Iterable[str], options: Sequence[str]) -> list[str]:
    """HTTP/1.1 POSTs of `body` as JSON (h2load keeps one request in flight per connection with -d)."""
    command = [H2LOAD, "--h1", *options, "-d", str(body), "-H", "content-type: application/json"]
    for header in headers:
        command += ["-H", header]
    return [*command, url]


@dataclass(frozen=True, slots=True)
class Summary:
    """h2load's closing lines."""

    seconds: float
    rps: float
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status: dict[str, int]

    @property
    def ok(self) -> int:
        return self.status["2xx"]

    @property
    def non_2xx(self) -> int:
        return self.status["3xx"] + self.status["4xx"] + self.status["5xx"]


def parse_summary(text: str) -> Summary:
    finished, requests, status = _FINISHED.search(text), _REQUESTS.search(text), _STATUS.search(text)
    if finished is None or requests is None or status is None:
        raise LoadError(f"h2load printed no summary:\n{text[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    _total, _started, done, succeeded, failed, errored, timeout = (int(v) for v in requests.groups())
    classes = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(v) for v in status.groups()), strict=True))
    return Summary(seconds, float(finished.group(3)), done, succeeded, failed, errored, timeout, classes)


@dataclass(frozen=True, slots=True)
class Run:
    """One h2load run: its command, summary and, when pids were given, the CPU of the measured window."""

    command: list[str]
    summary: Summary
    usage: Usage | None = None
    output: str = field(default="", repr=False)


def _watchdog(process: subprocess.Popen[str], limit_s: float) -> threading.Timer:
    timer = threading.Timer(limit_s, process.kill)
    timer.daemon = True
    timer.start()
    return timer


def run_h2load(
    command: list[str], limit_s: float, pids: dict[str, int] | None = None, *, from_main: bool = True
) -> Run:
    """Run h2load; with `pids`, sample their CPU (and h2load's) from the start of its main duration
    (after --warm-up-time; `from_main=False`: from its start) until it exits."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    timer = _watchdog(process, limit_s + _SLACK_S)
    watched = {**(pids or {}), "h2load": process.pid}
    before = snapshot(watched) if pids is not None and not from_main else None
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if pids is not None and before is None and MAIN_STARTED in line:
                before = snapshot(watched)
        after = snapshot(watched) if before is not None else None  # h2load is a zombie: still readable
    finally:
        returncode = process.wait()
        timer.cancel()
    output = "".join(lines)
    if returncode != 0:
        raise LoadError(f"{' '.join(command)} exited with {returncode}:\n{output[-2000:]}")
    window = usage(before, after) if before is not None and after is not None else None
    return Run(command, parse_summary(output), window, output)


# --- latency -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Per-request times (h2load --log-file) of one run: all requests, non-2xx counted apart."""

    run: Run
    count: int
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(math.ceil(q * len(sorted_values)) - 1, 0)]


def read_request_log(path: Path) -> tuple[list[float], int]:
    """(durations in ms of 2xx requests, ascending; count of other statuses)."""
    durations: list[float] = []
    others = 0
    for line in path.read_text().splitlines():
        _start_us, status, duration_us = line.split("\t")[:3]
        if status.startswith("2"):
            durations.append(int(duration_us) / 1000)
        else:
            others += 1
    return sorted(durations), others


def run_latency(command: list[str], log_file: Path, limit_s: float, pids: dict[str, int]) -> Latency:
    log_file.unlink(missing_ok=True)  # h2load appends to an existing log
    run = run_h2load(
        [*command[:-1], "--log-file", str(log_file), command[-1]], limit_s, pids, from_main=False
    )
    durations, others = read_request_log(log_file)
    return Latency(
        run,
        len(durations) + others,
        others,
        percentile(durations, 0.50),
        percentile(durations, 0.90),
        percentile(durations, 0.99),
        durations[-1] if durations else math.nan,
    )

"""`make bench-profile`: where the sidecar's CPU goes in each bench case, from py-spy samples.

Each case of bench/suite.py runs on its own Envoy + sidecar under its throughput load (h2load, 8
connections, 8 s) while py-spy samples the sidecar at 200 Hz. The samples are grouped by what their
innermost frame is: grpc.aio's completion-queue poller thread, the event loop's native code (grpc.aio's
Cython callbacks, uvloop), grpc.aio stream writes, the Redis client, and everything else (our Python and
the libraries it calls). One line per case; the raw samples stay in bench/results/tmp/profile/.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
from collections import Counter
from pathlib import Path

from bench.loadgen import h2load_command, run_h2load
from bench.run import TMP, _config, _pids
from bench.stack import BenchStack
from bench.suite import CASES, Case
from tests.helpers import free_port
from tests.redis_server import ValkeyServer

PY_SPY = Path(__file__).resolve().parents[1] / ".venv/bin/py-spy"
LOAD = ["-c", "8", "-D", "8", "--warm-up-time", "1"]
SAMPLE_S = 7


def group(leaf: str) -> str:
    """The group of a sample, from its innermost frame as py-spy's raw format writes it."""
    if leaf.startswith("Thread.run") or "threading.py" in leaf:
        return "grpc poller thread"
    if leaf.startswith("Runner.run") or "base_events" in leaf:
        return "event loop (native)"
    if "transport.py" in leaf and "StreamOutbox.write" in leaf:
        return "grpc.aio writes"
    if "redis" in leaf:
        return "redis client"
    return "Python"


def shares(raw: Path) -> dict[str, float]:
    """% of the samples in each group."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if stack:
            counts[group(stack.split(";")[-1])] += int(number)
    total = sum(counts.values()) or 1
    return {name: round(100 * count / total, 1) for name, count in counts.most_common()}


def profile(case: Case, folder: Path) -> str:
    with contextlib.ExitStack() as resources:
        redis_url = resources.enter_context(ValkeyServer()).url if case.redis else None
        run_dir = folder / case.name
        direct = free_port() if case.upstream == "direct" else None
        config = _config(case, run_dir, redis_url)
        with BenchStack(config, run_dir=run_dir, ext_proc=True, direct_port=direct) as stack:
            pids = _pids(stack)
            raw = folder / f"{case.name}.raw"
            spy = subprocess.Popen(
                [str(PY_SPY), "record", "-p", str(pids["sidecar"]), "-d", str(SAMPLE_S), "-r", "200",
                 "-f", "raw", "-o", str(raw), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            run = run_h2load(h2load_command(stack.url + case.path, case.body, case.headers, LOAD), 10, pids)
            spy.wait()
    summary, usage = run.summary, run.usage
    assert usage is not None
    cpu_ms = 1000 * usage.cpu["sidecar"] / max(summary.done, 1)
    return f"{case.name}: {summary.rps:.0f} req/s, sidecar {cpu_ms:.2f} ms/req: {shares(raw)}"


def profiled(case: Case) -> bool:
    """Cases with one sidecar process: with several workers py-spy would sample only their supervisor,
    and the floor cases are not the sidecar (`group` knows the sidecar's frames, not theirs)."""
    return case.ext_proc and case.floor is None and "workers" not in case.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CASES if profiled(c)])
    args = parser.parse_args()
    folder = TMP / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        if profiled(case) and (not args.only or case.name in args.only):
            print(profile(case, folder), flush=True)


if __name__ == "__main__":
    main()

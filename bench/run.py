"""`make bench`: every case of bench/suite.py, one after the other, each on its own Envoy + sidecar.

Per case: a smoke request, a throughput run (h2load -c 8 for 10 s after 2 s of warm-up) with the CPU
of every process over its measured window, then two latency runs at 200 req/s (as asked, and evenly
spaced). Results go to bench/results/latest.{json,md,png}; logs of each case stay in bench/results/tmp/.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench import litellm_peer, report
from bench.loadgen import (
    QUIET_PROBE_S,
    Latency,
    LoadError,
    Run,
    family_rss_mb,
    h2load_command,
    percentile,
    read_request_log,
    run_h2load,
    run_latency,
    wait_for_quiet,
)
from bench.stack import BenchStack, local_request
from bench.suite import BASELINE, CASES, PATH, Case
from extproc.devtools.dev import envoy_binary
from tests.helpers import free_port  # below the ephemeral range: Envoy binds it later
from tests.redis_server import ValkeyServer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TMP = RESULTS / "tmp"
THROUGHPUT_S = 10
WARM_UP_S = 2
LATENCY_S = 10
RATE_PER_CLIENT = 50
LATENCY_CLIENTS = 4
THROUGHPUT = ["-c", "8", "-D", str(THROUGHPUT_S), "--warm-up-time", str(WARM_UP_S)]
# As asked: each client fires on its own 20 ms timer, but all four start together, so the
# requests arrive in bursts of four every 20 ms.
LATENCY = ["-c", str(LATENCY_CLIENTS), "--rps", str(RATE_PER_CLIENT), "-D", str(LATENCY_S)]
# The same 200 req/s evenly spaced: the clients start 5 ms apart (-r 1 per 5 ms), so one request every 5 ms.
LATENCY_EVEN = [
    "-c", str(LATENCY_CLIENTS), "--rps", str(RATE_PER_CLIENT),
    "-n", str(LATENCY_CLIENTS * RATE_PER_CLIENT * LATENCY_S),
    "-r", "1", "--rate-period", f"{1000 // (LATENCY_CLIENTS * RATE_PER_CLIENT)}ms",
]  # fmt: skip
NOISY_OTHER_PERCENT = 10.0  # other processes above this (% of one core) disturb a run: it is repeated
MAX_ATTEMPTS = 3
# Time for waits and repeats: per case (its three runs take ~33 s), and in all, so the bench stays < ~5 min.
CASE_NOISE_BUDGET_S = 20.0
BASELINE_NOISE_BUDGET_S = 40.0  # every "added" number depends on the baseline: it gets more
RETRY_BUDGET_S = 220.0
QUIET_WAIT_S = 5.0  # the longest wait for a quiet machine before one run
T = TypeVar("T")
_started = time.monotonic()


def shown(command: list[str]) -> str:
    """A command as a shell line, with paths relative to the repository."""
    root = f"{REPO}/"
    return shlex.join(arg.replace(root, "") for arg in command)


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _started:6.1f}s] {message}", flush=True)


def _headers(case: Case) -> dict[str, str]:
    pairs = (header.split(":", 1) for header in case.headers)
    return {"content-type": "application/json", **{k.strip(): v.strip() for k, v in pairs}}


def smoke(case: Case, url: str) -> int:
    """One request before the load: it must be a 200 that contains `case.expect`; returns the SSE chunks."""
    status, body = local_request(url, case.body.read_bytes(), _headers(case), timeout=10)
    if status != 200 or case.expect not in body:
        raise SystemExit(f"{case.name}: smoke request answered {status}: {body[:500]!r}")
    data_lines = [line for line in body.splitlines() if line.startswith(b"data: ")]
    return len([line for line in data_lines if line != b"data: [DONE]"])


def _pids(stack: BenchStack) -> dict[str, int]:
    """The case's processes by role; "sidecar" is whichever answers Envoy's ext_proc messages."""
    pids = {name: child.process.pid for name, child in stack.children.items()}
    if stack.processor != "sidecar":
        pids["idle sidecar"] = pids.pop("sidecar")
        pids["sidecar"] = pids.pop(stack.processor)
    return pids


# Envoy's signs that a request went on without its processor's answer (ext_proc_accounting's keys).
LOST_EXT_PROC = ("unanswered", "streams_failed", "message_timeouts", "failure_mode_allowed")


def ext_proc_accounting(whole: dict[str, int], before_even: dict[str, int]) -> dict[str, Any]:
    """What the main listener's counters (`BenchStack.listener_counters`) say: ext_proc messages per
    request over every request of the case (`whole`, read at its end), and the messages Envoy sent and
    never got an answer to during the evenly spaced latency run (from `before_even`, read just before it).
    That run sends a fixed number of requests and waits for every answer, so no client hangs up there;
    an unanswered message is a request that went on without its hooks' answer, a failure of the run.
    (In the other runs h2load stops at a deadline with requests in flight, whose messages stay
    unanswered, several per stream when the answer is streamed.)"""

    def delta(name: str) -> int:
        return whole.get(name, 0) - before_even.get(name, 0)

    requests = whole.get("downstream_rq_total", 0)
    sent = whole.get("ext_proc.stream_msgs_sent", 0)
    return {
        "requests": requests,
        "messages_sent": sent,
        "messages_per_request": sent / requests if requests else None,
        "unanswered": delta("ext_proc.stream_msgs_sent") - delta("ext_proc.stream_msgs_received"),
        "streams_failed": delta("ext_proc.streams_failed"),
        "message_timeouts": delta("ext_proc.message_timeouts"),
        "failure_mode_allowed": delta("ext_proc.failure_mode_allowed"),
    }


def _check_alive(stack: BenchStack) -> None:
    dead = stack.dead_child()
    if dead is not None:
        raise SystemExit(f"{dead.name} died during the bench:\n{dead.tail()}")


def _per_request_ms(run: Run, name: str) -> float | None:
    if run.usage is None or name not in run.usage.cpu or not run.summary.ok:
        return None
    return 1000 * run.usage.cpu[name] / run.summary.ok


def _throughput(run: Run) -> dict[str, Any]:
    summary = run.summary
    return {
        "command": shown(run.command),
        "seconds": summary.seconds,
        "rps": summary.rps,
        "requests_2xx": summary.ok,
        "non_2xx": summary.non_2xx,
        "failed": summary.failed,
        "errored": summary.errored,
        "timeout": summary.timeout,
        "status": summary.status,
        "window_s": run.usage.seconds if run.usage else None,
        "cpu_percent": _cpu_percent(run),
    }


def _cpu_percent(run: Run) -> dict[str, Any]:
    """% of one core per process over the measured window; "other": the rest of the machine."""
    if run.usage is None:
        return {}
    window = run.usage.seconds
    shares = {name: round(run.usage.percent(name), 1) for name in run.usage.cpu}
    busiest = {name: round(100 * cpu / window, 1) for name, cpu in run.usage.others[:3]}
    return {
        **shares,
        "other": round(run.usage.other_percent, 1),
        "busiest_others": busiest,
        "kernel_unattributed": round(run.usage.unattributed_percent, 1),
        "stolen": round(run.usage.stolen_percent, 1),
    }


def _latency(latency: Latency) -> dict[str, Any]:
    return {
        "command": shown(latency.run.command),
        "rps": latency.run.summary.rps,
        "requests": latency.count,
        "non_2xx": latency.non_2xx,
        "failed": latency.run.summary.failed,
        "p50_ms": latency.p50_ms,
        "p90_ms": latency.p90_ms,
        "p99_ms": latency.p99_ms,
        "max_ms": latency.max_ms,
        "cpu_percent": _cpu_percent(latency.run),
    }


def _metrics(case: Case, run: Run, chunks: int, rss: dict[str, float]) -> dict[str, float | None]:
    sidecar_ms = _per_request_ms(run, "sidecar")
    per_chunk = None
    if case.stream_chunks and sidecar_ms is not None and chunks:
        per_chunk = 1000 * sidecar_ms / chunks
    return {
        "rps": run.summary.rps,
        "sidecar_cpu_ms": sidecar_ms,
        "sidecar_cpu_us_per_chunk": per_chunk,
        "sidecar_rss_mb": rss.get("sidecar"),
        "envoy_cpu_ms": _per_request_ms(run, "envoy"),
        "envoy_rss_mb": rss.get("envoy"),
        "mock_cpu_ms": _per_request_ms(run, "mock"),
        "h2load_cpu_ms": _per_request_ms(run, "h2load"),
    }


def _noise(run: Run) -> float:
    return run.usage.other_percent if run.usage is not None else 0.0


class Budget:
    """The seconds a case may still spend waiting for a quiet machine and repeating disturbed runs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float:
        return min(self.seconds, RETRY_BUDGET_S - (time.monotonic() - _started))

    def spend(self, started: float) -> None:
        self.seconds -= time.monotonic() - started


def _quiet(label: str, pids: dict[str, int], budget: Budget) -> None:
    """Before a run: wait a little while other processes are busy (other sessions' tests, ...)."""
    started = time.monotonic()
    waited = wait_for_quiet(pids, min(QUIET_WAIT_S, max(budget.left(), 0.0)), NOISY_OTHER_PERCENT)
    budget.spend(started)
    if waited > QUIET_PROBE_S * 1.5:
        progress(f"{label}: waited {waited:.0f} s for other processes to calm down")


def quietest(
    label: str, pids: dict[str, int], budget: Budget, attempt: Callable[[], T], run_of: Callable[[T], Run]
) -> tuple[T, int]:
    """Run when the machine is quiet; repeat a run disturbed by other processes anyway (up to
    MAX_ATTEMPTS, within the budget) and keep the quietest. Returns it and the attempts made."""
    _quiet(label, pids, budget)
    best = attempt()
    attempts = 1
    while _noise(run_of(best)) > NOISY_OTHER_PERCENT and attempts < MAX_ATTEMPTS and budget.left() > 0:
        progress(f"{label}: other processes and steal used {_noise(run_of(best)):.0f} % of a core: once more")
        _quiet(label, pids, budget)
        started = time.monotonic()
        candidate = attempt()
        budget.spend(started)
        attempts += 1
        if _noise(run_of(candidate)) < _noise(run_of(best)):
            best = candidate
    return best, attempts


def _throughput_run(case: Case, url: str, pids: dict[str, int], budget: Budget) -> tuple[Run, int]:
    command = h2load_command(url, case.body, case.headers, THROUGHPUT)
    progress(f"{case.name}: throughput: {shown(command)}")
    run, attempts = quietest(
        f"{case.name}: throughput",
        pids,
        budget,
        lambda: run_h2load(command, THROUGHPUT_S + WARM_UP_S, pids),
        lambda r: r,
    )
    progress(
        f"{case.name}: throughput: {run.summary.rps:.0f} req/s, {run.summary.ok} 2xx, "
        f"non-2xx {run.summary.non_2xx}, CPU % {_cpu_percent(run)}"
    )
    return run, attempts


def _latency_runs(
    case: Case,
    url: str,
    pids: dict[str, int],
    run_dir: Path,
    budget: Budget,
    kinds: tuple[tuple[str, list[str]], ...],
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for key, options in kinds:
        command = h2load_command(url, case.body, case.headers, options)
        progress(f"{case.name}: {key}: {shown(command)}")
        latency, attempts = quietest(
            f"{case.name}: {key}",
            pids,
            budget,
            partial(run_latency, command, run_dir / f"{key}.log", LATENCY_S, pids),
            lambda lat: lat.run,
        )
        progress(
            f"{case.name}: {key}: {latency.count} requests, p50 {latency.p50_ms:.2f} ms, "
            f"p99 {latency.p99_ms:.2f} ms, non-2xx {latency.non_2xx}, other CPU {_noise(latency.run):.0f} %"
        )
        runs[key] = {**_latency(latency), "attempts": attempts}
    return runs


def _config(case: Case, run_dir: Path, redis_url: str | None) -> Path:
    """The case's config; `{cache}` filled in (a Valkey URL, or nothing) when the config has it."""
    text = case.config_path.read_text()
    if "{cache}" not in text:
        return case.config_path
    cache = f'cache: {{redis_url: "{redis_url}"}}' if redis_url else ""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / case.config
    path.write_text(text.replace("{cache}", cache))
    return path


def measure(case: Case) -> dict[str, Any]:
    with contextlib.ExitStack() as resources:
        redis_url = resources.enter_context(ValkeyServer()).url if case.redis else None
        return _measure(case, redis_url)


def _measure(case: Case, redis_url: str | None) -> dict[str, Any]:
    run_dir = TMP / case.name
    direct_port = free_port() if case.upstream == "direct" else None
    progress(f"{case.name}: starting Envoy + sidecar{' + mock-upstream' if direct_port is None else ''}")
    config_path = _config(case, run_dir, redis_url)
    with BenchStack(
        config_path, run_dir=run_dir, ext_proc=case.ext_proc, direct_port=direct_port, floor=case.floor
    ) as stack:
        url = stack.url + case.path
        pids = _pids(stack)
        chunks = smoke(case, url)
        budget = Budget(BASELINE_NOISE_BUDGET_S if case.name == BASELINE else CASE_NOISE_BUDGET_S)
        run, attempts = _throughput_run(case, url, pids, budget)
        latencies = _latency_runs(case, url, pids, run_dir, budget, (("latency", LATENCY),))
        before_even = stack.listener_counters() if case.ext_proc else {}
        latencies |= _latency_runs(case, url, pids, run_dir, budget, (("latency_even", LATENCY_EVEN),))
        _check_alive(stack)
        ext_proc = ext_proc_accounting(stack.listener_counters(), before_even) if case.ext_proc else None
        rss = {name: family_rss_mb(pid) for name, pid in pids.items()}
    return {
        "number": case.number,
        "name": case.name,
        "summary": case.summary,
        "config": f"bench/cases/{case.config}",
        "upstream": "mock-upstream" if case.upstream == "mock" else "Envoy direct_response listener",
        "ext_proc_filter": case.ext_proc,
        "chunks_per_request": chunks or None,
        "ext_proc": ext_proc,
        "throughput": {**_throughput(run), "attempts": attempts},
        **latencies,
        "metrics": _metrics(case, run, chunks, rss),
    }


def _peer_throughput(url: str, pids: dict[str, int], run_dir: Path, budget: Budget) -> tuple[Run, Path, int]:
    """The throughput run of the other cases, with h2load's per-request log for p50/p99 (one per attempt)."""
    case = litellm_peer.CASE
    command = h2load_command(url, case.body, case.headers, THROUGHPUT)
    progress(f"{case.name}: throughput: {shown(command)}")
    logs = (run_dir / f"throughput-{attempt}.log" for attempt in itertools.count(1))

    def attempt() -> tuple[Run, Path]:
        log = next(logs)
        log.unlink(missing_ok=True)  # h2load appends to an existing log
        logged = [*command[:-1], "--log-file", str(log), command[-1]]
        return run_h2load(logged, THROUGHPUT_S + WARM_UP_S, pids), log

    (run, log), attempts = quietest(f"{case.name}: throughput", pids, budget, attempt, lambda pair: pair[0])
    progress(
        f"{case.name}: throughput: {run.summary.rps:.0f} req/s, {run.summary.ok} 2xx, "
        f"non-2xx {run.summary.non_2xx}, CPU % {_cpu_percent(run)}"
    )
    return run, log, attempts


def measure_peer(binary: Path) -> dict[str, Any]:
    """The seed's pre-call hook in LiteLLM's own proxy (bench/litellm_peer.py): throughput run only."""
    case = litellm_peer.CASE
    run_dir = TMP / case.name
    progress(f"{case.name}: starting Envoy (upstream) + {shown([str(binary)])}")
    with litellm_peer.PeerStack(binary, run_dir) as stack:
        version = stack.version()
        progress(f"{case.name}: LiteLLM {version} answered after {stack.startup_s:.1f} s")
        stack.smoke()
        pids = stack.pids
        run, log, attempts = _peer_throughput(stack.url + PATH, pids, run_dir, Budget(CASE_NOISE_BUDGET_S))
        stack.check_alive()
        rss = {name: family_rss_mb(pid) for name, pid in pids.items()}
        upstream = stack.upstream_stats()
    durations, non_2xx_logged = read_request_log(log)
    p50, p99 = percentile(durations, 0.50), percentile(durations, 0.99)
    progress(f"{case.name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(durations)} logged requests")
    return {
        "name": case.name,
        "summary": case.summary,
        "litellm_version": version,
        "litellm_command": shown(stack.command),
        "config": shown([str(stack.config_path)]),
        "upstream": "Envoy direct_response listener (its own Envoy, buffer filter: connections kept)",
        "upstream_stats": upstream,
        "startup_s": stack.startup_s,
        "throughput": {
            **_throughput(run),
            "attempts": attempts,
            "logged_2xx": len(durations),
            "logged_non_2xx": non_2xx_logged,
            "p50_ms": p50,
            "p99_ms": p99,
        },
        "metrics": {
            "rps": run.summary.rps,
            "p50_ms": p50,
            "p99_ms": p99,
            "litellm_cpu_ms": _per_request_ms(run, "litellm"),
            "litellm_rss_mb": rss.get("litellm"),
            "upstream_envoy_cpu_ms": _per_request_ms(run, "envoy"),
            "h2load_cpu_ms": _per_request_ms(run, "h2load"),
        },
    }


def peer(binary: Path | None, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The LiteLLM peer line with the req/s ratios of the cases it is compared with; when LiteLLM is
    not installed, why it is skipped; when it failed, why (the cases' results are written all the same)."""
    if binary is None:
        progress(litellm_peer.SKIPPED)
        return {"name": litellm_peer.NAME, "skipped": litellm_peer.SKIPPED}
    try:
        result = measure_peer(binary)
    except (SystemExit, LoadError, OSError) as error:
        progress(f"{litellm_peer.NAME}: failed: {error}")
        return {"name": litellm_peer.NAME, "failed": str(error)}
    result["rps_ratios"] = litellm_peer.ratios(result["metrics"]["rps"], results)
    return result


def add_baseline_deltas(results: list[dict[str, Any]]) -> None:
    """added_* = this case minus envoy-alone, for both latency runs; rps_share = its req/s over
    envoy-alone's."""
    base = next((r for r in results if r["name"] == BASELINE), None)
    for result in results:
        base_rps = None if base is None else base["metrics"]["rps"]
        result["metrics"]["rps_share"] = result["metrics"]["rps"] / base_rps if base_rps else None
        for key, suffix in (("latency", ""), ("latency_even", "_even")):
            for q in ("p50", "p99"):
                value = None if base is None else result[key][f"{q}_ms"] - base[key][f"{q}_ms"]
                result["metrics"][f"{q}{suffix}_ms"] = result[key][f"{q}_ms"]
                result["metrics"][f"added_{q}{suffix}_ms"] = value


def add_targets(results: list[dict[str, Any]]) -> None:
    by_name = {case.name: case for case in CASES}
    for result in results:
        targets = by_name[result["name"]].targets
        result["targets"] = [
            {
                "metric": t.metric,
                "target": t.text(),
                "value": result["metrics"].get(t.metric),
                "met": t.met(result["metrics"].get(t.metric)),
            }
            for t in targets
        ]


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (out.stdout + out.stderr).strip()
    return next((line for line in text.splitlines() if "version" in line.lower()), text[:200])


def _envoy_version() -> str:
    text = _version([envoy_binary(), "--version"])
    found = re.search(r"/(\d+\.\d+\.\d+)/", text)
    return f"Envoy {found.group(1)}" if found else text


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_commit() -> str | None:
    try:  # read-only
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": _envoy_version(),
        "envoy_concurrency": 1,
        "h2load": _version(["h2load", "--version"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "git_commit": _git_commit(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    names = [case.name for case in CASES]
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*names, litellm_peer.NAME],
        help="run only these cases (envoy-alone is added); litellm-peer: the LiteLLM peer line",
    )
    return parser.parse_args(argv)


def selected(only: list[str] | None) -> list[Case]:
    if not only:
        return list(CASES)
    return [case for case in CASES if case.name in only or case.name == BASELINE]


def noise_warnings(results: list[dict[str, Any]]) -> list[str]:
    warnings = []
    for result in results:
        for key in ("throughput", "latency", "latency_even"):
            if key not in result:  # the LiteLLM peer has a throughput run only
                continue
            other = result[key]["cpu_percent"].get("other", 0.0)
            if other > NOISY_OTHER_PERCENT:
                shares = result[key]["cpu_percent"]
                busiest = ", ".join(
                    [f"{k} {v} %" for k, v in shares["busiest_others"].items()]
                    + [f"steal {shares.get('stolen', 0.0)} %"]
                )
                warnings.append(
                    f"{result['name']} {key}: other processes and steal used {other:.0f} % of a core "
                    f"({busiest}) in the best of {result[key]['attempts']} attempts; its numbers are "
                    "disturbed"
                )
    return warnings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("h2load") is None:
        print("error: h2load not found: apt-get install -y nghttp2-client (make bench does)", file=sys.stderr)
        return 2
    peer_wanted = not args.only or litellm_peer.NAME in args.only
    binary = litellm_peer.litellm_bin() if peer_wanted else None  # a wrong LITELLM_BIN stops here
    shutil.rmtree(TMP, ignore_errors=True)
    TMP.mkdir(parents=True)
    info = machine()
    progress(f"machine: {info['nproc']} cores, Python {info['python']}, {info['envoy']}")
    results = [measure(case) for case in selected(args.only)]
    add_baseline_deltas(results)
    add_targets(results)
    peer_result = peer(binary, results) if peer_wanted else None
    measured_peer = [peer_result] if peer_result is not None and "metrics" in peer_result else []
    warnings = noise_warnings([*results, *measured_peer])
    for warning in warnings:
        progress(f"warning: {warning}")
    info["runtime_s"] = round(time.monotonic() - _started, 1)
    document: dict[str, Any] = {"machine": info, "cases": results, "warnings": warnings}
    if peer_result is not None:
        document["peer"] = peer_result
    paths = report.write_all(document, RESULTS)
    progress(f"done in {info['runtime_s']:.0f} s: {', '.join(str(p) for p in paths)}")
    asked_peer_failed = bool(args.only) and peer_result is not None and "failed" in peer_result
    failing = failed_requests(results)
    for line in failing:
        progress(f"FAILED: {line}")
    return 1 if asked_peer_failed or failing else 0


def failed_requests(results: list[dict[str, Any]]) -> list[str]:
    """Every run of every case that had a non-2xx answer or a failed request: each fails the bench (no
    case may lose a request under load), named with its counts."""
    failing = []
    for result in results:
        for key in ("throughput", "latency", "latency_even"):
            run = result.get(key)
            if not isinstance(run, dict):
                continue
            non_2xx, failed = run.get("non_2xx") or 0, run.get("failed") or 0
            if non_2xx or failed:
                failing.append(f"{result['name']} {key}: {non_2xx} non-2xx, {failed} failed requests")
        ext_proc = result.get("ext_proc") or {}
        lost = {key: ext_proc.get(key, 0) for key in LOST_EXT_PROC}
        if any(lost.values()):
            counts = ", ".join(f"{k} {v}" for k, v in lost.items() if v)
            failing.append(f"{result['name']}: ext_proc messages without their answer ({counts})")
    return failing


if __name__ == "__main__":
    sys.exit(main())

"""bench/results/latest.json, latest.md (tables) and latest.png (bars), from one run's document."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

Document = dict[str, Any]


def write_all(document: Document, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "latest.json", folder / "latest.md", folder / "latest.png"]
    paths[0].write_text(json.dumps(_finite(document), indent=2, allow_nan=False, ensure_ascii=False) + "\n")
    paths[1].write_text(markdown(document))
    plot(document, paths[2])
    return paths


def _finite(value: Any) -> Any:
    """NaN (a latency run without a 2xx) becomes null, JSON has no NaN; floats keep 4 decimals."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _pair(first: float | None, second: float | None, signed: bool = False) -> str:
    show = _signed if signed else _num
    return f"{show(first)} / {show(second)}"


def _result_row(case: dict[str, Any]) -> str:
    m = case["metrics"]
    tput = case["throughput"]
    non_2xx = tput["non_2xx"] + case["latency"]["non_2xx"] + case["latency_even"]["non_2xx"]
    failures = tput["failed"] + tput["errored"] + tput["timeout"]
    per_chunk = m["sidecar_cpu_us_per_chunk"]
    chunk_text = "" if per_chunk is None else f" ({per_chunk:.0f} µs/chunk x {case['chunks_per_request']})"
    ext_proc = case.get("ext_proc")
    messages = "-"
    if ext_proc:
        messages = f"{_num(ext_proc['messages_per_request'], 2)} ({ext_proc['unanswered']})"
    share = m.get("rps_share")
    cells = [
        f"{case['number']}. {case['name']}",
        _num(m["rps"], 0),
        "-" if share is None else f"{100 * share:.0f}%",
        f"{failures} / {non_2xx}",
        messages,
        _pair(m["p50_ms"], m["p99_ms"]),
        _pair(m["added_p50_ms"], m["added_p99_ms"], signed=True),
        _pair(m["p50_even_ms"], m["p99_even_ms"]),
        _pair(m["added_p50_even_ms"], m["added_p99_even_ms"], signed=True),
        _num(m["sidecar_cpu_ms"], 3) + chunk_text,
        _num(m["sidecar_rss_mb"], 1),
        _num(m["envoy_cpu_ms"], 3),
        _num(tput["cpu_percent"].get("other"), 0),
    ]
    return "| " + " | ".join(cells) + " |"


RESULT_HEADER = (
    "| case | req/s (c=8) | of envoy-alone | failed / non-2xx | ext_proc msgs/req (unanswered) | "
    "p50 / p99 ms (bursts of 4) | added vs envoy-alone | p50 / p99 ms (evenly spaced) | "
    "added vs envoy-alone | sidecar CPU ms/req | sidecar RSS MB | Envoy CPU ms/req | other CPU % |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _value_text(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 0 if unit in ("req/s", "µs/chunk") else (1 if unit == "MB" else 2)
    return f"{_num(value, digits)} {unit}"


def _target_rows(cases: list[dict[str, Any]]) -> list[str]:
    rows = []
    for case in cases:
        for target in case["targets"]:
            unit = target["target"].split(" ", 2)[2]
            verdict = {True: "met", False: "**missed**", None: "-"}[target["met"]]
            value = _value_text(target["value"], unit)
            rows.append(
                f"| {case['name']} | `{target['metric']}` | {target['target']} | {value} | {verdict} |"
            )
    return rows


def _commands(cases: list[dict[str, Any]]) -> list[str]:
    lines = []
    for case in cases:
        where = f"upstream: {case['upstream']}; config `{case['config']}`"
        lines.append(f"- **{case['name']}** ({case['summary']}; {where})")
        for key in ("throughput", "latency", "latency_even"):
            lines.append(f"  - {key}: `{case[key]['command']}`")
    return lines


PEER_HEADER = (
    "| peer | req/s (c=8) | failed / non-2xx | p50 / p99 ms (c=8, saturated) | LiteLLM CPU ms/req | "
    "LiteLLM RSS MB | upstream Envoy CPU ms/req | other CPU % |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _peer_lines(peer: dict[str, Any] | None, cases: list[dict[str, Any]]) -> list[str]:
    """The LiteLLM peer: a small table and the req/s ratios, or the line saying why it was skipped."""
    if peer is None:
        return []
    title = "## LiteLLM peer: the same hook in LiteLLM's own proxy"
    if "skipped" in peer:
        return [title, "", peer["skipped"] + ".", ""]
    if "failed" in peer:
        reason = peer["failed"].splitlines()[0] if peer["failed"] else "?"
        return [title, "", f"{peer['name']}: failed: {reason} (bench/results/tmp/{peer['name']}/).", ""]
    m = peer["metrics"]
    tput = peer["throughput"]
    row = [
        f"{peer['name']} (LiteLLM {peer['litellm_version']})",
        _num(m["rps"], 0),
        f"{tput['failed'] + tput['errored'] + tput['timeout']} / {tput['non_2xx']}",
        _pair(m["p50_ms"], m["p99_ms"]),
        _num(m["litellm_cpu_ms"], 3),
        _num(m["litellm_rss_mb"], 1),
        _num(m["upstream_envoy_cpu_ms"], 3),
        _num(tput["cpu_percent"].get("other"), 0),
    ]
    numbers = {case["name"]: case["number"] for case in cases}
    ratios = [
        f"case {numbers[name]} ({name}) req/s / LiteLLM req/s = **{ratio:.1f}**"
        for name, ratio in peer["rps_ratios"].items()
    ]
    return [
        title,
        "",
        PEER_HEADER,
        "| " + " | ".join(row) + " |",
        "",
        *([f"{'; '.join(ratios)}.", ""] if ratios else []),
        "The seed's hook (examples/custom_callbacks.py, its import pointed at LiteLLM) in",
        "`litellm --config ... --num_workers 1` with no master key nor database; upstream: an Envoy",
        "direct_response listener. Only the c=8 throughput run (the same h2load command as the table",
        "above, plus `--log-file` for p50/p99, which are therefore latencies at saturation); LiteLLM's CPU",
        "and RSS include its child processes. See bench/README.md.",
        "",
    ]


def _peer_commands(peer: dict[str, Any] | None) -> list[str]:
    if peer is None or "metrics" not in peer:
        return []
    return [
        f"- **{peer['name']}** ({peer['summary']}; upstream: {peer['upstream']}; config `{peer['config']}`)",
        f"  - LiteLLM: `{peer['litellm_command']}`",
        f"  - throughput: `{peer['throughput']['command']}`",
    ]


def _machine(info: dict[str, Any]) -> str:
    return (
        f"{info['date']} · {info['nproc']} cores ({info['cpu']}) · Linux {info['kernel']} · "
        f"Python {info['python']} · {info['envoy']} (`--concurrency {info['envoy_concurrency']}`) · "
        f"{info['h2load']} · load average at start {' '.join(info['loadavg_at_start'])} · "
        f"commit {info['git_commit']} · total runtime {info['runtime_s']:.0f} s"
    )


def markdown(document: Document) -> str:
    cases = document["cases"]
    lines = [
        "# llm-extproc bench: latest run",
        "",
        _machine(document["machine"]),
        "",
        RESULT_HEADER,
        *[_result_row(case) for case in cases],
        "",
        "req/s: h2load `--h1 -c 8 -D 10 --warm-up-time 2`. Latency: 200 req/s for 10 s, from h2load's",
        "per-request log; *bursts of 4*: `-c 4 --rps 50` as asked (the 4 clients fire together every 20 ms);",
        "*evenly spaced*: the same rate, the clients started 5 ms apart (metrics `*_even_*`). CPU ms/req:",
        "CPU seconds (utime+stime of the process) over the measured 10 s divided by the 2xx requests of that",
        "window; µs/chunk: the same divided by the SSE chunks of one response. other CPU %: processes not",
        "part of the case (other sessions' tests, ...) and the hypervisor's steal during the throughput",
        "window, in % of one core.",
        "ext_proc msgs/req: messages Envoy sent the processor over every request of the case (its own",
        "counters); in brackets those of the evenly spaced run it got no answer to, each a failure of the",
        "run. For the ext-proc-floor cases the sidecar columns are bench/floor_processor.py's. See",
        "bench/README.md.",
        "",
        *_peer_lines(document.get("peer"), cases),
        "## Targets (from the issues; reported, never enforced)",
        "",
        "| case | metric | target | measured | |",
        "| --- | --- | --- | ---: | --- |",
        *_target_rows(cases),
        "",
    ]
    if document["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in document["warnings"]], ""]
    lines += ["## Commands", "", *_commands(cases), *_peer_commands(document.get("peer")), ""]
    return "\n".join(lines)


def plot(document: Document, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = document["cases"]
    names = [case["name"] for case in cases]
    metrics = [case["metrics"] for case in cases]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    series = [
        ("added_p50_ms", "p50, bursts of 4"),
        ("added_p99_ms", "p99, bursts of 4"),
        ("added_p50_even_ms", "p50, evenly spaced"),
        ("added_p99_even_ms", "p99, evenly spaced"),
    ]
    width = 0.8 / len(series)
    for index, (key, label) in enumerate(series):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(cases))]
        left.bar(xs, [m[key] or 0.0 for m in metrics], width, label=label)
    left.axhline(0, color="black", linewidth=0.8)
    for limit, name in ((1.5, "p50"), (4.0, "p99")):
        left.axhline(limit, color="gray", linestyle="--", linewidth=1)
        left.annotate(f"seed-pre-call {name} target", (-0.45, limit), ha="left", va="bottom",
                      fontsize="x-small", color="gray")  # fmt: skip
    left.set_title("Added latency vs envoy-alone at 200 req/s (ms)")
    left.set_xticks(range(len(cases)), names, rotation=20, ha="right")
    left.legend(fontsize="small", loc="upper center")
    cpu = [m["sidecar_cpu_ms"] or 0.0 for m in metrics]
    bars = right.bar(range(len(cases)), cpu, color="tab:red")
    for bar, metric in zip(bars, metrics, strict=True):
        label = f"{metric['sidecar_cpu_ms'] or 0:.2f}"
        if metric["sidecar_cpu_us_per_chunk"] is not None:
            label += f"\n({metric['sidecar_cpu_us_per_chunk']:.0f} µs/chunk)"
        right.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                       fontsize="small")  # fmt: skip
    right.axhline(0.6, color="gray", linestyle="--", linewidth=1, label="seed-pre-call target 0.6 ms")
    right.set_title("Sidecar CPU per request (ms, c=8 throughput run)")
    right.set_xticks(range(len(cases)), names, rotation=20, ha="right")
    right.set_ylim(0, max([*cpu, 0.6]) * 1.25)
    right.legend(fontsize="small")
    figure.suptitle(f"llm-extproc bench, {document['machine']['date']}", fontsize="medium")
    figure.savefig(path, dpi=100)
    plt.close(figure)

"""The case table: what each case runs, where its upstream is, and the targets it is reported against."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CASES_DIR = Path(__file__).resolve().parent / "cases"
CHAT_BODY = CASES_DIR / "chat.json"
STREAM_BODY = CASES_DIR / "chat-stream.json"
MESSAGES_STREAM_BODY = CASES_DIR / "messages-stream.json"
USER_BODY = CASES_DIR / "chat-user.json"
BENCH_KEY = "authorization: Bearer sk-bench"
PATH = "/v1/chat/completions"
BASELINE = "envoy-alone"
STREAM_CHUNKS = 20
# What case stream-per-chunk's hook puts in every chunk (bench/cases/stream_per_chunk.py).
STREAM_REPLACEMENT = b'"content":"[bench]"'
MESSAGES_REPLACEMENT = b'"text":"[bench]"'

Upstream = Literal["direct", "mock"]


@dataclass(frozen=True, slots=True)
class Target:
    """A goal from the issues: `metric` (a key of a case's summary) compared with `limit`."""

    metric: str
    op: Literal["<=", ">="]
    limit: float
    unit: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        compare: Callable[[float, float], bool] = operator.le if self.op == "<=" else operator.ge
        return compare(value, self.limit)

    def text(self) -> str:
        return f"{self.op} {self.limit:g} {self.unit}"


@dataclass(frozen=True, slots=True)
class Case:
    """One line of the table: a sidecar config, an upstream, a request, and targets."""

    number: int
    name: str
    summary: str
    config: str  # a file in bench/cases/
    upstream: Upstream = "direct"  # "direct": Envoy's own direct_response listener; "mock": mock-upstream
    ext_proc: bool = True  # False: the ext_proc filter is removed from Envoy's config
    body: Path = CHAT_BODY
    headers: tuple[str, ...] = ()
    expect: bytes = b'"object":"chat.completion"'  # the smoke request's response must contain this
    stream_chunks: int = 0  # > 0: report sidecar CPU per chunk
    targets: tuple[Target, ...] = ()
    redis: bool = False  # True: a real Valkey is started and `{cache}` in the config points at it
    path: str = PATH  # the endpoint every request of the case goes to
    # Not None: bench/floor_processor.py, with these arguments, answers Envoy's ext_proc messages (not the
    # sidecar).
    floor: tuple[str, ...] | None = None

    @property
    def config_path(self) -> Path:
        return CASES_DIR / self.config


RSS = Target("sidecar_rss_mb", "<=", 80, "MB")


def share(limit: float) -> Target:
    """Throughput as a share of envoy-alone's in the same run (issue 16's targets)."""
    return Target("rps_share", ">=", limit, "of envoy-alone")


# The seed pre-call hook's targets (case 3), at both request spacings.
SEED_TARGETS = (
    Target("sidecar_cpu_ms", "<=", 0.6, "ms/req"),
    Target("added_p50_ms", "<=", 1.5, "ms"),
    Target("added_p99_ms", "<=", 4, "ms"),
    Target("added_p50_even_ms", "<=", 1.5, "ms"),
    Target("added_p99_even_ms", "<=", 4, "ms"),
    Target("rps", ">=", 1500, "req/s"),
    share(0.7),
    RSS,
)
PER_CHUNK_TARGETS = (
    Target("sidecar_cpu_us_per_chunk", "<=", 100, "µs/chunk"),
    Target("sidecar_cpu_us_per_chunk", "<=", 30, "µs/chunk"),
    RSS,
)
CASES: tuple[Case, ...] = (
    Case(
        1,
        BASELINE,
        "Envoy with no ext_proc filter; upstream = Envoy's own direct_response listener (the floor)",
        "no-hooks.yaml",
        ext_proc=False,
    ),
    Case(
        2,
        "no-hooks",
        "sidecar with no callbacks: the generated config disables ext_proc on the LLM route",
        "no-hooks.yaml",
        targets=(Target("sidecar_cpu_ms", "<=", 0.1, "ms/req"), RSS),
    ),
    Case(
        3,
        "seed-pre-call",
        "the seed's pre-call hook (examples/custom_callbacks.py, model rewrite); the default: one message "
        "per request (the body, the headers as Envoy metadata)",
        "seed-pre-call.yaml",
        targets=SEED_TARGETS,
    ),
    Case(
        14,
        "ext-proc-floor",
        "case 3's Envoy config, its ext_proc messages answered by a processor that does nothing "
        "(bench/floor_processor.py: grpc.aio, the empty answer to each message): what Envoy's ext_proc "
        "filter costs by itself, and the least any grpc.aio sidecar can cost (run right after case 3: this "
        "machine's speed drifts)",
        "seed-pre-call.yaml",
        floor=(),
    ),
    Case(
        4,
        "limiter-pii-routing",
        "enforce_user_param + rate limiter (in-process) + PII masking (an e-mail) + model_list routing",
        "limiter-pii-routing.yaml",
        body=USER_BODY,
        headers=(BENCH_KEY,),
        targets=(share(0.4), RSS),
    ),
    Case(
        16,
        "ext-proc-floor-limiter",
        "case 4's Envoy config and requests, answered by bench/floor_processor.py --response-bodies buffered "
        "(the empty answer to each of its four messages): the most a grpc.aio processor can serve of cases 4 "
        "and 5 (run right after case 4)",
        "limiter-pii-routing.yaml",
        body=USER_BODY,
        headers=(BENCH_KEY,),
        floor=("--response-bodies", "buffered"),
    ),
    Case(
        5,
        "limiter-pii-routing-redis",
        "the same with the limiter's counters in a real Valkey (extproc.cache.redis_url)",
        "limiter-pii-routing.yaml",
        body=USER_BODY,
        headers=(BENCH_KEY,),
        targets=(share(0.3), RSS),
        redis=True,
    ),
    Case(
        6,
        "stream-per-chunk",
        f"streamed chat, {STREAM_CHUNKS} content chunks from mock-upstream, "
        "async_post_call_streaming_hook replaces each chunk's text",
        "stream-per-chunk.yaml",
        upstream="mock",
        body=STREAM_BODY,
        headers=(f"x-mock-chunks: {STREAM_CHUNKS}",),
        expect=STREAM_REPLACEMENT,
        stream_chunks=STREAM_CHUNKS,
        targets=PER_CHUNK_TARGETS,
    ),
    Case(
        15,
        "ext-proc-floor-per-chunk",
        "case 6's Envoy config and stream, answered by bench/floor_processor.py --response-bodies "
        "streamed (the empty answer to each message, STREAMED response bodies asked for as the sidecar "
        "does): the least any grpc.aio sidecar costs per chunk (run right after case 6)",
        "stream-per-chunk.yaml",
        upstream="mock",
        body=STREAM_BODY,
        headers=(f"x-mock-chunks: {STREAM_CHUNKS}",),
        expect=b'"object":"chat.completion.chunk"',
        stream_chunks=STREAM_CHUNKS,
        floor=("--response-bodies", "streamed"),
    ),
    Case(
        7,
        "moderation",
        "a moderation hook that passes at once; the response headers wait for its verdict",
        "moderation.yaml",
        targets=(share(0.5), RSS),
    ),
    Case(
        8,
        "seed-pre-call-two-messages",
        "case 3 with extproc.messages: two: Envoy sends the request headers, then the body",
        "seed-pre-call-two-messages.yaml",
        targets=(RSS,),
    ),
    Case(
        9,
        "seed-pre-call-2-workers",
        "case 3 with extproc.workers: 2 (two sidecar processes, Envoy balancing across them)",
        "seed-pre-call-2-workers.yaml",
        targets=SEED_TARGETS,
    ),
    Case(
        10,
        "seed-pre-call-listed-headers",
        "case 3 with extproc.forward_headers: Envoy copies only the listed headers for hooks",
        "seed-pre-call-listed-headers.yaml",
        targets=SEED_TARGETS,
    ),
    Case(
        11,
        "guardrails",
        "guardrails: section: a default_on pre_call guardrail, a default_on during_call one, and one "
        "the requests never select",
        "guardrails.yaml",
        targets=(RSS,),
    ),
    Case(
        12,
        "guardrails-selected",
        "case 11 without the unselected guardrail (the difference is what an unselected one costs)",
        "guardrails-selected.yaml",
        targets=(RSS,),
    ),
    Case(
        13,
        "stream-messages-per-event",
        f"streamed Anthropic Messages (POST /v1/messages), {STREAM_CHUNKS} text events from mock-upstream, "
        "async_post_call_streaming_hook replaces each event's text (target: per event, no more than case "
        "stream-per-chunk per chunk)",
        "stream-messages-per-event.yaml",
        upstream="mock",
        body=MESSAGES_STREAM_BODY,
        headers=(f"x-mock-chunks: {STREAM_CHUNKS}",),
        expect=MESSAGES_REPLACEMENT,
        stream_chunks=STREAM_CHUNKS,
        targets=(Target("sidecar_cpu_us_per_chunk", "<=", 100, "µs/chunk"), RSS),
        path="/v1/messages",
    ),
)

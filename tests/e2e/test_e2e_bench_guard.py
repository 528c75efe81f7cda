"""The bench's guard, through a real Envoy: a request that went on without its hooks' answer fails the
bench, and the floor processor (`bench/floor_processor.py`) answers every message it is sent."""

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # `bench` is not an installed package

from helpers import free_port, json_lines  # noqa: E402

from bench import stack as bench_stack  # noqa: E402
from bench.run import ext_proc_accounting, failed_requests  # noqa: E402
from bench.suite import CASES  # noqa: E402
from extproc.envoy import envoy_config  # noqa: E402

pytestmark = pytest.mark.e2e

SEED = next(case for case in CASES if case.name == "seed-pre-call")
REQUESTS = 20


class WithoutBuffer(bench_stack.BenchStack):
    """The bench's stack without the buffer filter: Envoy sends the headers upstream before the hooks
    answer (the one-message config the issue's early numbers were measured on)."""

    def bootstrap(self, pipeline: Any) -> dict[str, Any]:
        config = super().bootstrap(pipeline)
        hcm = bench_stack._main_hcm(config)
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != envoy_config.HOLDING_FILTER]
        return config


def _accounting(stack: bench_stack.BenchStack) -> dict[str, Any]:
    """`REQUESTS` chat requests, each a 200, and what Envoy's counters say of their ext_proc messages."""
    before = stack.listener_counters()
    body = SEED.body.read_bytes()
    for _ in range(REQUESTS):
        status, answer = bench_stack.local_request(
            stack.url + SEED.path, body, {"content-type": "application/json"}, timeout=10
        )
        assert status == 200, answer
    return ext_proc_accounting(stack.listener_counters(), before)


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")  # shorter than tmp_path: a unix socket's path has 108 bytes


def test_the_floor_processor_answers_every_message(run_dir: Path) -> None:
    stack = bench_stack.BenchStack(
        SEED.config_path, run_dir=run_dir, ext_proc=True, direct_port=free_port(), floor=()
    )
    with stack:
        assert stack.processor == "floor"
        accounting = _accounting(stack)
    logged = json_lines(run_dir / "access.log")  # complete once Envoy has stopped
    assert len(logged) >= REQUESTS
    # The sidecar idled: no request carries its verdict in Envoy's metadata (the seed hook's "modified").
    assert not [line for line in logged if (line.get("llm_extproc") or {}).get("verdict")]
    assert accounting["messages_sent"] >= REQUESTS
    assert accounting["messages_per_request"] == 1.0
    assert accounting["unanswered"] == 0
    assert failed_requests([{"name": "floor", "ext_proc": accounting}]) == []


def test_requests_served_before_their_hooks_answered_fail_the_bench(run_dir: Path) -> None:
    stack = WithoutBuffer(SEED.config_path, run_dir=run_dir, ext_proc=True, direct_port=free_port())
    with stack:
        accounting = _accounting(stack)
    logged = json_lines(run_dir / "access.log")
    verdicts = [line for line in logged if (line.get("llm_extproc") or {}).get("verdict")]
    assert len(verdicts) < REQUESTS  # requests the hook had not answered for were served all the same
    # The upstream (Envoy's direct_response) answers as soon as it has the headers, long before the hook.
    assert accounting["unanswered"] > 0
    failing = failed_requests([{"name": "without-buffer", "ext_proc": accounting}])
    unanswered = accounting["unanswered"]
    assert failing == [f"without-buffer: ext_proc messages without their answer (unanswered {unanswered})"]

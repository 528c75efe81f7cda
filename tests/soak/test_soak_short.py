"""A short soak inside `make test`: the same checks as `make soak`, for 10 seconds."""

import pytest

from .run import soak

pytestmark = pytest.mark.e2e


def test_a_short_soak_has_no_errors_no_leaked_slot_and_flat_memory():
    report = soak(seconds=10, concurrency=6, warmup=3)
    assert report["error_count"] == 0, report["errors"]
    assert report["leaked_counters"] == {}
    assert report["parallel_counters"] >= 2  # both keys were counted in Valkey
    assert report["statuses"].get("burst:429", 0) > 0  # the tight key's limit was really hit
    assert abs(report["rss_growth"]) <= 0.10, report

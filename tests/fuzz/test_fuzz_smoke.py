"""A thousand derandomized examples of the request-path fuzzer (`make fuzz` runs it for longer)."""

from __future__ import annotations

from .fuzz_request_path import fuzz


def test_request_path_fuzz_smoke():
    stats = fuzz(1000, derandomize=True, shrink=False)
    assert stats.examples >= 1000
    # The examples reach every part of the path, not just the first refusal.
    assert {"refused 400", "passed through", "answered", "streamed"} <= set(stats.outcomes), stats.outcomes

"""The soak: mixed hits and misses from 4 processes x 8 threads over 500 distinct requests, with the shared Redis
restarted (empty dataset) half-way through. Every request must be answered, and answered right.

The default run is a short soak (2,000 requests, still restarting Redis mid-run); the full 10,000 runs with
``--run-slow`` and from ``python benchmarks/faults.py --soak``. Both are ``run_soak`` from
``tests/support/faults.py``.
"""

from __future__ import annotations

import pytest
from support.faults import SoakResult, format_soak, run_soak


def _assert_sound(result: SoakResult, requests: int) -> None:
    report = format_soak(result)
    assert result.requests == requests
    assert result.lost == 0, report
    assert result.exceptions == 0, report
    assert result.wrong == 0, report
    assert result.answered == requests, report
    # The restart really happened mid-run: requests were answered before it began and after it ended.
    assert result.answered_before_restart > requests // 4, report
    assert result.answered_after_restart > requests // 10, report
    # The cache did its job around the restart: far fewer upstream calls than requests.
    assert result.upstream_calls < requests * 0.6, report
    assert result.levels.get("l2", 0) > 0, report


def test_short_soak_with_redis_restarted_mid_run() -> None:
    result = run_soak(2_000)
    print(format_soak(result))
    _assert_sound(result, 2_000)


@pytest.mark.slow
def test_full_soak_10000_requests_with_redis_restarted_mid_run() -> None:
    result = run_soak(10_000)
    print(format_soak(result))
    _assert_sound(result, 10_000)

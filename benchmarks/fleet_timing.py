"""Timing helpers shared by the fleet and memory benchmarks (loaded 2-core box: minima, not medians)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def alternating_min_us(fns: dict[str, Callable[[], Any]], rounds: int = 41, number: int = 3000) -> dict[str, float]:
    """Best per-call time of each callable over alternating rounds: a difference of ~0.1 us on a loaded 2-core
    box is lost in medians (load swings 2x between rounds) but shows in the minimum, the uncontended cost."""
    best = dict.fromkeys(fns, float("inf"))
    items = list(fns.items())
    for fn in fns.values():
        fn()
    for r in range(rounds):
        for name, fn in items if r % 2 else items[::-1]:
            started = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - started) / number * 1e6)
    return best

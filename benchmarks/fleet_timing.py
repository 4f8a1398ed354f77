"""Timing helpers shared by the fleet and memory benchmarks (loaded 2-core box: minima, not medians)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
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


def write_results(
    result: dict[str, Any], json_path: Path | None, md_path: Path | None, markdown: Callable[[Any], str]
) -> None:
    """The run's figures as JSON and as the Markdown table under benchmarks/results/ (either, both or none)."""
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    if md_path is not None:
        md_path.write_text(markdown(result))

"""One fault harness (stand-in provider, expected answers, healthy baseline) for the whole fault suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.faults import FaultHarness, ScenarioResult


@pytest.fixture(scope="session")
def fault_harness() -> Iterator[FaultHarness]:
    with FaultHarness() as harness:
        yield harness


@pytest.fixture(scope="session")
def scenario_result(fault_harness: FaultHarness) -> Callable[[str], ScenarioResult]:
    """Each scenario runs once per session, however many tests read its figures."""
    cache: dict[str, ScenarioResult] = {}

    def result(name: str) -> ScenarioResult:
        if name not in cache:
            cache[name] = fault_harness.run(name)
        return cache[name]

    return result

"""Fixtures shared by the door tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest

from dspy_tiered_cache.integrations._litellm_version import litellm_door_problem
from dspy_tiered_cache.integrations.litellm import TieredCache

MakeCache = Callable[..., TieredCache]

#: Why the LiteLLM door cannot run on the installed LiteLLM (None: it can). The matrix's old-LiteLLM cells (beside
#: DSPy 3.0 / 3.2) run the DSPy door's tests and skip the LiteLLM door's with this one line as the reason.
LITELLM_DOOR_PROBLEM = litellm_door_problem()
#: What needs the LiteLLM door: modules about it alone, tests named after it, fixtures that build a TieredCache,
#: and tests marked ``litellm_door``. Everything else (the DSPy door) runs on every supported LiteLLM.
_LITELLM_DOOR_MODULES = ("test_litellm_", "test_hit_path", "test_call_types", "test_values")
_LITELLM_DOOR_FIXTURES = frozenset({"make_cache", "recorded"})


def needs_litellm_door(item: pytest.Item) -> bool:
    return (
        item.path.name.startswith(_LITELLM_DOOR_MODULES)
        or item.name.startswith("test_litellm")
        or not _LITELLM_DOOR_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        or item.get_closest_marker("litellm_door") is not None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LITELLM_DOOR_PROBLEM is None:
        return
    skip = pytest.mark.skip(reason=LITELLM_DOOR_PROBLEM)
    for item in items:
        if needs_litellm_door(item):
            item.add_marker(skip)


@pytest.fixture
def make_cache(tmp_path: Path) -> Iterator[MakeCache]:
    """Install a TieredCache as ``litellm.cache`` for the test; restore LiteLLM's state afterwards."""
    previous = litellm.cache
    made: list[TieredCache] = []

    def make(**kwargs: Any) -> TieredCache:
        kwargs.setdefault("disk", False)
        if kwargs.get("disk"):
            kwargs.setdefault("disk_path", tmp_path / f"cache{len(made)}.sqlite3")
        cache = TieredCache(**kwargs)
        made.append(cache)
        litellm.cache = cache
        return cache

    yield make
    litellm.cache = previous
    for cache in made:
        cache.close()

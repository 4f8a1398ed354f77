"""Fixtures shared by the door tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest

from dspy_tiered_cache.integrations.litellm import TieredCache

MakeCache = Callable[..., TieredCache]


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

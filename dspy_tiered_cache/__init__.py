"""Tiered LLM response caching for LiteLLM and DSPy: memory (L1), Redis/Valkey (L2) and an embedded disk tier.

The doors import LiteLLM and DSPy, which take seconds; they load on first use so that the core, the CLI's quick
commands and worker start-up stay fast. The features (record/replay, the fleet view, reports) are imported here:
each attaches itself to every core through :mod:`dspy_tiered_cache.hooks`, and importing any submodule runs this
file first, so no core is ever built without them (see docs/layout.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspy_tiered_cache import fleet as _fleet  # noqa: F401  - a feature: attaches the fleet publisher
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.decorator import cached
from dspy_tiered_cache.errors import CacheError
from dspy_tiered_cache.integrations.replay import replay
from dspy_tiered_cache.keys import UncacheableRequest
from dspy_tiered_cache.modes import ReplayMiss
from dspy_tiered_cache.options import UNSET, CallOptions, Hit
from dspy_tiered_cache.portable import RecordingError
from dspy_tiered_cache.report import StatsReport, report
from dspy_tiered_cache.settings import CacheSettings, ConfigError

if TYPE_CHECKING:
    from dspy_tiered_cache.integrations.dspy import CachedLM
    from dspy_tiered_cache.integrations.litellm import TieredCache

__version__ = "0.1.0"
__all__ = [
    "UNSET",
    "CacheCore",
    "CacheError",
    "CacheSettings",
    "CachedLM",
    "CallOptions",
    "ConfigError",
    "Hit",
    "RecordingError",
    "ReplayMiss",
    "StatsReport",
    "TieredCache",
    "UncacheableRequest",
    "__version__",
    "cached",
    "replay",
    "report",
]

_LAZY = {
    "TieredCache": "dspy_tiered_cache.integrations.litellm",
    "CachedLM": "dspy_tiered_cache.integrations.dspy",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dspy_tiered_cache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

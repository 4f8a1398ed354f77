"""The one exception base, so a caller can catch everything this package raises on purpose in one clause.

Each concrete error also keeps the built-in base it always had (``ValueError``, ``ImportError``), so code that
caught those keeps working. This module imports nothing of the package: the bottom layers (keys, codec,
settings) derive from it without import cycles.
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of every error dspy_tiered_cache raises deliberately (bad configuration, a request with no
    canonical form, an unreadable entry, a missing optional dependency). A broken tier is never one of them:
    that is a miss."""

"""The common base of the exceptions this package raises on purpose, so callers can catch them all at once."""

from __future__ import annotations


class CacheError(Exception):
    """Base class of every error this package raises on purpose."""

"""What a replay-mode miss says: the request that was not recorded and how the closest recorded one differs.

The core decides that a replay-mode lookup missed; this feature, attached through :mod:`dspy_tiered_cache.hooks`,
builds the error's message from the requests recorded beside the answers (``record_requests``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import orjson

from dspy_tiered_cache.keys import request_key
from dspy_tiered_cache.modes import ReplayMiss, describe_difference, model_of, prompt_of
from dspy_tiered_cache.portable.transfer import ScanTier, _entry_prefix

if TYPE_CHECKING:
    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.options import CallOptions

#: Recorded requests a replay miss compares itself with, at most (the diagnosis is on the error path only).
_MAX_COMPARED: Final = 20_000


def _recorded_requests(core: CacheCore, namespace: str) -> Iterator[dict[str, Any]]:
    tier = core.shared_tier
    if not isinstance(tier, ScanTier):
        return
    scan = tier.scan_prefix
    prefix = request_key(_entry_prefix(core, namespace))
    for n, (_, entry) in enumerate(scan(prefix)):
        if n >= _MAX_COMPARED:
            return
        if entry is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                request = orjson.loads(entry.payload)
                if isinstance(request, dict):
                    yield request


def replay_miss(core: CacheCore, key: str, options: CallOptions, reason: str) -> ReplayMiss:
    """Build the error of a replay-mode miss; never fails itself (a broken tier only loses the diagnosis)."""
    namespace = key.split(":")[2] if key.count(":") >= 4 else (options.namespace or core.settings.namespace)
    canonical = core.request_of(key)
    request: Any = None
    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
        request = orjson.loads(canonical) if canonical is not None else None
    if not isinstance(request, dict):
        return ReplayMiss(model=None, namespace=namespace, prompt=None, key=key, reason=reason)
    difference = None
    try:
        difference = describe_difference(request, _recorded_requests(core, namespace))
    except Exception as exc:  # the diagnosis is a courtesy: the error itself must always be raised
        difference = f"(could not compare with recorded requests: {type(exc).__name__})"
    return ReplayMiss(
        model=model_of(request),
        namespace=namespace,
        prompt=prompt_of(request),
        difference=difference,
        key=key,
        reason=reason,
        prompt_label="arguments" if "__dtc_fn__" in request else "last user message",
    )

"""``replay(path)``: answer every door's LLM calls from a recording only, for a block's duration.

It lives with the doors because it routes them (LiteLLM's ``litellm.cache``, the DSPy LM) to a cache built from
the file; the file itself is :mod:`dspy_tiered_cache.portable`'s."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.portable import import_recording, read_recording

__all__ = ["replay"]


@contextlib.contextmanager
def replay(path: str | os.PathLike[str], *, lm: Any = None, **settings: Any) -> Iterator[CacheCore]:
    """Answer LLM calls from a recording only, for the block's duration (a notebook's "reproduce this").

    Builds a cache in memory, in ``replay`` mode, holding the file's entries, and routes to it the LiteLLM door
    (``litellm.cache``) and the DSPy LM (``lm=``, else the configured ``dspy.settings.lm``) when those packages are
    in use. Any request that was not recorded raises :class:`~dspy_tiered_cache.ReplayMiss`; nothing goes upstream.
    Yields the cache (a :class:`~dspy_tiered_cache.core.CacheCore`; pass it as ``cache=``/``core=`` elsewhere).
    """
    recording = read_recording(path)
    names = recording.namespaces
    options: dict[str, Any] = {
        "redis_url": None,
        "disk": False,
        "memory": True,
        "mode": "replay",
        "memory_max_entries": max(10_000, 4 * len(recording.entries)),
        "memory_max_bytes": 4 * 1024**3,
        "namespace": names[0] if len(names) == 1 else "default",
        **settings,
    }
    core = CacheCore(**options)
    import_recording(core, path)
    with contextlib.ExitStack() as stack:
        litellm: Any = sys.modules.get("litellm")
        if litellm is not None:
            from dspy_tiered_cache.integrations.litellm import TieredCache

            previous = litellm.cache
            litellm.cache = TieredCache(core=core)
            stack.callback(setattr, litellm, "cache", previous)
        dspy: Any = sys.modules.get("dspy")
        base = lm if lm is not None else (dspy.settings.lm if dspy is not None else None)
        if dspy is not None and base is not None:
            from dspy_tiered_cache.integrations.dspy import CachedLM

            plain = base.unwrap() if isinstance(base, CachedLM) else base
            stack.enter_context(dspy.context(lm=CachedLM(plain, cache=core)))
        stack.callback(core.close)
        yield core

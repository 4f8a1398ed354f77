"""The memory tier as DSPy's cache API shows it: ``dspy.cache.memory_cache`` and ``save/load_memory_cache``.

DSPy's ``Cache`` keeps a cloudpickle-able ``memory_cache`` dict and saves it as a pickle. Ours is the core's
bounded memory tier, shown read-only by :meth:`DSPyCacheAdapter.cache_key` digest, and saved as a recording
(:mod:`dspy_tiered_cache.portable`: gzip JSON lines, never pickle; ``dspy-tiered-cache inspect`` reads it).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from dspy_tiered_cache import portable
from dspy_tiered_cache.codec import Entry, decode_value, encode_value
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations._values import load_value
from dspy_tiered_cache.keys import entry_key, request_digest


class _Adapter(Protocol):
    """What the view needs of a :class:`~._dspy_adapter.DSPyCacheAdapter` (which imports this module)."""

    core: CacheCore

    def storage_key(self, key: object) -> str | None: ...

    def reset_memory_cache(self) -> None: ...


class MemoryCacheView(Mapping[str, Any]):
    """``dspy.cache.memory_cache`` for the tiered cache: the memory tier, read-only, keyed by storage key or by
    :meth:`DSPyCacheAdapter.cache_key` digest. Reads do not count as lookups and do not change eviction order."""

    def __init__(self, adapter: _Adapter) -> None:
        self._adapter = adapter

    def _payload(self, key: object) -> bytes | None:
        storage = self._adapter.storage_key(key)
        return None if storage is None else self._adapter.core.peek_local(storage)

    def __contains__(self, key: object) -> bool:
        return self._payload(key) is not None

    def __getitem__(self, key: str) -> Any:
        payload = self._payload(key)
        if payload is None:
            raise KeyError(key)
        try:
            return load_value(decode_value(payload))
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        memory = self._adapter.core.memory
        return iter([k for k, _ in memory.snapshot()] if memory is not None else [])

    def __len__(self) -> int:
        memory = self._adapter.core.memory
        return memory.entries if memory is not None else 0

    def clear(self) -> None:
        self._adapter.reset_memory_cache()


def save_memory(core: CacheCore, secret: bytes | None, filepath: str | os.PathLike[str]) -> None:
    """Write ``core``'s memory tier as a recording. Only entries of each namespace's current generation are
    written (an invalidated entry stays invalidated); without a memory tier nothing is, as in DSPy."""
    memory = core.memory
    if memory is None:
        return
    prefix = f"{core.settings.key_prefix}:e"
    generations: dict[str, int] = {}
    entries = []
    for key, entry in memory.snapshot():
        parts = key.rsplit(":", 3)
        if len(parts) != 4 or parts[0] != prefix or len(parts[3]) != 40:
            continue
        _, namespace, generation, digest = parts
        if namespace not in generations:
            generations[namespace] = core.generation(namespace)
        if generation != str(generations[namespace]):
            continue
        try:
            value = decode_value(entry.payload)
        except ValueError:  # an undecodable entry is a miss anyway: not worth saving
            continue
        entries.append(portable.RecordedEntry(namespace, digest, int(entry.created_at), value))
    entries.sort(key=lambda e: (e.namespace, e.digest))
    data = portable.dumps(portable.Recording(portable.keying_of(secret), entries))
    target = Path(filepath)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_memory(core: CacheCore, secret: bytes | None, filepath: str | os.PathLike[str]) -> int:
    """Load a recording (:func:`save_memory`, or ``dspy-tiered-cache export``) into ``core``'s memory tier;
    returns the entries loaded. A DSPy pickle file is refused with a
    :class:`~dspy_tiered_cache.portable.RecordingError`. Entries live ``ttl`` from now (a recording keeps no
    expiry); values are checked when read, as always."""
    recording = portable.read_recording(filepath)  # validated whole before anything is stored
    memory = core.memory
    if memory is None:
        return 0
    same_keying = recording.keying == portable.keying_of(secret)
    settings = core.settings
    expiry = None if settings.ttl is None else time.time() + settings.ttl
    loaded = 0
    for e in recording.entries:
        if e.request is not None and not e.request_redacted:
            digest = request_digest(orjson.dumps(e.request, option=orjson.OPT_SORT_KEYS), secret)
        elif same_keying:
            digest = e.digest
        else:
            raise portable.RecordingError(
                f"{os.fspath(filepath)} was keyed {recording.keying!r} and this cache keys "
                f"{portable.keying_of(secret)!r}: load it with the DSPY_TIERED_CACHE_KEY_SECRET it was saved with"
            )
        try:
            payload = encode_value(e.value, settings.max_value_bytes)
        except ValueError:
            continue
        key = entry_key(settings.key_prefix, e.namespace, core.generation(e.namespace), digest)
        memory.set(key, Entry(payload, float(e.created), expiry))
        loaded += 1
    return loaded

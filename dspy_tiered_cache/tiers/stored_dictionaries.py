"""Trained zstd dictionaries shared through the Redis tier: fetched when a frame names one, adopted for writes.

Kept apart from :mod:`.redis` (which performs the I/O) because the decisions — when to look, what to accept, how
long to refuse a bad one — are the same whichever client asks.
"""

from __future__ import annotations

import logging
import time

from dspy_tiered_cache.codec import FrameCodec
from dspy_tiered_cache.dictionary import ForeignDictionary, unpack

log = logging.getLogger("dspy_tiered_cache")

#: How often a writer checks whether a trained dictionary was adopted (one GET per process per period).
ADOPT_CHECK_S = 300.0
#: How long a dictionary that could not be fetched or was refused stays refused (its entries are misses).
_REFUSED_S = 60.0


class StoredDictionaries:
    """Trained dictionaries kept in Redis beside the entries: fetched the first time a frame names one, validated
    (:func:`~dspy_tiered_cache.dictionary.unpack`), and refused for a while when missing, corrupt or foreign, so
    those entries are plain misses and cost one extra GET a minute, not one per lookup."""

    __slots__ = ("_checked", "_codec", "_prefix", "_refused", "current_key")

    def __init__(self, codec: FrameCodec, prefix: str) -> None:
        self._codec = codec
        self._prefix = prefix
        self.current_key = f"{prefix}:zdict:current"
        self._refused: dict[int, float] = {}
        self._checked = 0.0

    def key(self, number: int) -> str:
        return f"{self._prefix}:zdict:{number:08x}"

    def wanted(self, number: int) -> bool:
        refused = self._refused.get(number)
        return refused is None or time.monotonic() - refused > _REFUSED_S

    def found(self, number: int, blob: bytes | None) -> None:
        """Add the fetched dictionary to the codec, or refuse it (the caller's retry then raises CorruptEntry)."""
        try:
            if blob is None:
                raise ForeignDictionary(f"no dictionary {number:#x} is stored in Redis")
            self._codec.add_dictionary(unpack(blob, expected=number))
        except ForeignDictionary as exc:
            self._refused[number] = time.monotonic()
            log.warning("dspy_tiered_cache: entries compressed with dictionary %#x are misses: %s", number, exc)

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._checked < ADOPT_CHECK_S:
            return False
        self._checked = now
        return True

    def adoptable(self, raw: bytes | None) -> int | None:
        """The number of the fleet's adopted dictionary when writers here do not use it yet."""
        if not raw or not raw.isdigit():
            return None
        number = int(raw)
        writing = self._codec.write_dictionary
        return None if writing is not None and writing.id == number else number

    def missing(self, number: int | None) -> bool:
        return number is not None and not self._codec.has_dictionary(number) and self.wanted(number)

    def adopt(self, number: int | None) -> None:
        """Write with ``number`` from now on if it is held (fetched and validated); else keep the current one."""
        if number is not None and self._codec.has_dictionary(number):
            self._codec.adopt(number)

"""Zstandard dictionaries for small LLM payloads: the one shipped with the package, and ones trained on a cache.

A 1.5 KB chat answer compresses poorly on its own (zstd needs to see a word before it can refer back to it), and
half of a stored LiteLLM response is the same JSON skeleton every time (``"choices"``, ``"finish_reason"``,
``"completion_tokens_details"`` ...). A dictionary primes the compressor with that skeleton and with common
English, so even a few hundred bytes shrink.

Each dictionary has a 32-bit number that every frame compressed with it carries, so an entry names the dictionary
it needs and entries written with an older dictionary keep reading after a newer one is adopted:

* numbers below :data:`USER_BASE` are dictionaries shipped with the package (``llm-json-<n>.zdict`` beside this
  module); a shipped dictionary is never changed or removed, only added;
* numbers from :data:`USER_BASE` up are dictionaries trained from a user's own cache
  (``dspy-tiered-cache dictionary train``). Their number is derived from their content (a SHA-256), so a stored
  dictionary that does not hash to the number a frame asks for is foreign or corrupt: the entry is a miss.

A dictionary travels (in Redis, in a file) as a :func:`pack`-ed blob: a magic string, the number and the raw
zstd dictionary. :func:`unpack` checks all three and that zstd accepts the dictionary, and raises
:class:`ForeignDictionary` (a :class:`~dspy_tiered_cache.errors.CacheError`) otherwise, never anything else.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import zstandard

from dspy_tiered_cache.errors import CacheError

#: The dictionary new entries are compressed with unless a trained one is adopted.
SHIPPED_ID = 1
#: Numbers from here up are trained dictionaries, named by their content.
USER_BASE = 0x8000_0000
#: Compression level of dictionary frames. Measured on 2 KB stored answers (benchmarks/memory_train_dictionary.py
#: corpus): level 3 gives 740 B in 69 us, 6 gives 680 B in 88 us, 9 gives 670 B in 330 us, 19 gives 651 B in
#: 2.8 ms. Writes run off the caller's path but share the box's CPU with every hit, so 6; reading costs the same
#: (5-8 us) at any level.
LEVEL = 6
_BLOB_MAGIC = b"DTCZDICT1\n"
_MAX_DICT_BYTES = 1024 * 1024


class ForeignDictionary(CacheError, ValueError):
    """A stored dictionary is not one of ours, or not the one its number says: entries needing it are misses."""


def user_id(raw: bytes) -> int:
    """The number of a trained dictionary: derived from its bytes, so a blob cannot pose as another."""
    return USER_BASE | (int.from_bytes(hashlib.sha256(raw).digest()[:4], "big") & 0x7FFF_FFFF)


class Dictionary:
    """One dictionary: its number, its bytes, and per-thread compressors built on first use (zstd contexts are
    not thread-safe, and building one with a 64 KB dictionary costs more than compressing a typical answer)."""

    __slots__ = ("_local", "_zdict", "id", "raw")

    def __init__(self, number: int, raw: bytes) -> None:
        if not 0 < number <= 0xFFFF_FFFF:
            raise ForeignDictionary(f"dictionary number {number} is out of range")
        if not raw or len(raw) > _MAX_DICT_BYTES:
            raise ForeignDictionary(f"a dictionary of {len(raw)} bytes is empty or larger than {_MAX_DICT_BYTES}")
        try:
            zdict = zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_AUTO)
            zdict.precompute_compress(level=LEVEL)
        except zstandard.ZstdError as exc:
            raise ForeignDictionary(f"zstd does not accept the dictionary: {exc}") from None
        self.id = number
        self.raw = raw
        self._zdict = zdict
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Dictionary({self.id:#x}, {len(self.raw)} bytes)"

    def compress(self, data: bytes, *, checksum: bool = False) -> bytes:
        """``checksum``: end the frame with zstd's content checksum (frame format 3 relies on it)."""
        name = "c_sum" if checksum else "c"
        c: zstandard.ZstdCompressor | None = getattr(self._local, name, None)
        if c is None:
            c = zstandard.ZstdCompressor(
                level=LEVEL, dict_data=self._zdict, write_dict_id=False, write_checksum=checksum
            )
            setattr(self._local, name, c)
        return c.compress(data)

    def decompress(self, data: bytes | memoryview, max_bytes: int) -> bytes:
        """Raises ``zstandard.ZstdError`` on bad input; the size limit is checked by the caller first."""
        return self.decompressor().decompress(data, max_output_size=max_bytes)

    def decompressor(self) -> zstandard.ZstdDecompressor:
        """This thread's decompressor, the dictionary digested into it once (zstd's DDict)."""
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor(dict_data=self._zdict)
        return d


def pack(dictionary: Dictionary) -> bytes:
    """The blob a dictionary is stored as (in the shared tier, in a file)."""
    return _BLOB_MAGIC + dictionary.id.to_bytes(4, "big") + dictionary.raw


def unpack(blob: bytes, expected: int | None = None) -> Dictionary:
    """A stored blob back to a :class:`Dictionary`; :class:`ForeignDictionary` when it is not a valid one, or
    not dictionary ``expected``."""
    if not isinstance(blob, bytes) or not blob.startswith(_BLOB_MAGIC) or len(blob) < len(_BLOB_MAGIC) + 5:
        raise ForeignDictionary("not a dspy_tiered_cache dictionary (bad magic)")
    number = int.from_bytes(blob[len(_BLOB_MAGIC) : len(_BLOB_MAGIC) + 4], "big")
    raw = blob[len(_BLOB_MAGIC) + 4 :]
    if expected is not None and number != expected:
        raise ForeignDictionary(f"dictionary {number:#x} stored where {expected:#x} was expected")
    if number >= USER_BASE and user_id(raw) != number:
        raise ForeignDictionary(f"dictionary {number:#x} does not match its content (corrupt or forged)")
    if number < USER_BASE and (shipped(number) is None or shipped(number).raw != raw):  # type: ignore[union-attr]
        raise ForeignDictionary(f"dictionary {number:#x} claims a shipped number but is not the shipped one")
    return Dictionary(number, raw)


def train(samples: Sequence[bytes], size: int = 64 * 1024) -> Dictionary:
    """A dictionary trained on ``samples`` (payloads as the core stores them); its number comes from its bytes.

    Raises :class:`ForeignDictionary` with a readable reason when zstd cannot train on what it was given (too few
    or too uniform samples)."""
    if len(samples) < 8:
        raise ForeignDictionary(f"{len(samples)} samples are too few to train a dictionary on (at least 8)")
    try:
        raw = zstandard.train_dictionary(size, list(samples), level=LEVEL, threads=1).as_bytes()
    except zstandard.ZstdError as exc:
        raise ForeignDictionary(f"zstd could not train a dictionary on these samples: {exc}") from None
    return Dictionary(user_id(raw), raw)


@cache
def shipped(number: int = SHIPPED_ID) -> Dictionary | None:
    """A dictionary shipped with the package, or None when this install has no such number (a newer writer's)."""
    path = Path(__file__).with_name(f"llm-json-{number}.zdict")
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return Dictionary(number, raw)

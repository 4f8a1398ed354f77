"""How values cross process boundaries: JSON payloads in a versioned, checksummed, optionally compressed frame.

Anything read back from a shared tier may have been written by another version of this package, by another
program, or by an attacker with access to Redis. So the frame is checked before anything is parsed, the payload
is JSON (never pickle: decoding must not be able to run code), decompression is bounded, and every failure is
a :class:`CorruptEntry` that the core turns into a counted miss.

Frame format 2 adds the number of the zstd dictionary the payload was compressed with
(:mod:`.dictionary`), so payloads of a few hundred bytes compress too and entries keep naming the dictionary they
need after another one is adopted. Its 16-byte check is an HMAC-SHA-256 under the ``key_secret``, or a plain
SHA-256 without one.

Frame format 3 is written when there is no ``key_secret``. Without a secret a SHA-256 authenticates nothing (whoever
can write the value can recompute it): it only detects damage, and a compressed payload already carries a check
of its own. So format 3 has a 4-byte CRC-32 instead, over the header and, for an uncompressed payload, the payload;
for a compressed one over the zstd frame header only, and the frame must carry zstd's content checksum (XXH64 of
the decompressed bytes, verified while decompressing) and content size. An encrypted payload is authenticated by
AES-GCM either way. 12 bytes smaller and one hash fewer per hit. With a ``key_secret`` frames stay format 2 (the
keyed MAC is what makes a secret worth having), and a format 3 frame is refused: it is not signed.
Format 1 and 2 frames are still read.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson
import zstandard

from dspy_tiered_cache.dictionary import SHIPPED_ID, Dictionary, shipped
from dspy_tiered_cache.errors import CacheError

MAGIC = 0xD7
#: The format written without a key_secret (CRC-32 + zstd's own checksum); with one, :data:`VERSION_2`.
VERSION = 3
VERSION_2 = 2
#: Format 1 (the first format): ``magic, version, flags, created_ms (8), expires_ms (8)``, zstd without dictionary.
VERSION_1 = 1
FLAG_ZSTD = 0x01
FLAG_AESGCM = 0x02
_HEADER = struct.Struct(">BBBQQ")  # format 1: magic, version, flags, created_ms, expires_ms (0 = never)
#: Format 2: magic, version, flags, dictionary number (0 = none), then created_ms and expires_ms in 6 bytes each
#: (milliseconds up to the year 10889): the same 19 bytes as format 1.
_HEADER_2 = struct.Struct(">BBBIHIHI")
_MAC_LEN = 16
_PREFIX_LEN = _HEADER.size + _MAC_LEN
#: Format 3: the format 2 header, then a CRC-32 (big-endian) instead of the 16-byte MAC.
_PREFIX_3 = _HEADER.size + 4
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: A zstd frame header is at most 18 bytes; a format 3 CRC covers that much of a compressed (or sealed) body.
_BODY_HEAD = 18
#: Fixed per-entry overhead charged to the memory tier's byte budget (object headers, dict slot, key).
ENTRY_OVERHEAD = 160


class CodecError(CacheError, ValueError):
    """A value cannot be stored: it is not plain JSON data or it is too large."""


class CorruptEntry(CacheError, ValueError):
    """Bytes under our key are not a valid frame: truncated, tampered, foreign, or from another secret."""


class NewerFormat(CorruptEntry):
    """A frame of a format newer than this release reads: written by a newer release of the package.

    During a rolling upgrade old and new processes share one Redis; the old ones serve a miss and leave the entry
    alone (deleting it would undo every newer process's writes until the upgrade completes).
    """


class Entry(NamedTuple):
    """One cached value as every tier sees it: JSON payload bytes plus its absolute lifetime.

    Lifetimes are absolute so that promotion to an upper tier keeps the remaining lifetime, never a fresh one.
    A named tuple (immutable like the frozen dataclass it was, and built in a tenth of the time: one is built on
    every hit read from a shared tier).
    """

    payload: bytes
    created_at: float
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now

    @property
    def size(self) -> int:
        return len(self.payload) + ENTRY_OVERHEAD

    def capped(self, ttl: float | None, now: float) -> Entry:
        """The same entry, expiring no later than ``now + ttl`` (a tier's own cap)."""
        if ttl is None:
            return self
        cap = now + ttl
        if self.expires_at is not None and self.expires_at <= cap:
            return self
        return Entry(self.payload, self.created_at, cap)


def encode_value(value: Any, max_bytes: int) -> bytes:
    """Plain JSON data to payload bytes; anything that would not read back as the same value is refused."""
    try:
        payload = orjson.dumps(value, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    except TypeError as exc:
        raise CodecError(
            f"value is not plain JSON data ({exc}); convert it to dicts/lists/str/numbers before caching"
        ) from None
    # orjson's buffer keeps its growth headroom (~16 KB held for a 2 KB payload): copy to an exact-size object,
    # or the memory tier would hold several times the bytes it counts against memory_max_bytes.
    payload = bytes(memoryview(payload))
    if b"null" in payload and _has_non_finite(value):  # orjson writes NaN/Infinity as null: not the same value
        raise CodecError("value holds NaN or Infinity, which JSON cannot carry; it would read back as null")
    if len(payload) > max_bytes:
        raise CodecError(
            f"value is {len(payload)} bytes, over max_value_bytes={max_bytes}; raise "
            "DSPY_TIERED_CACHE_MAX_VALUE_BYTES to cache it"
        )
    return payload


def _has_non_finite(value: Any) -> bool:
    """Walked only when the payload has a ``null``, so ordinary values pay nothing for the check."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def decode_value(payload: bytes) -> Any:
    """A fresh object on every call, so callers may mutate what they get."""
    return orjson.loads(payload)


class MissingDictionary(CorruptEntry):
    """The frame was compressed with a dictionary this codec does not hold (yet): a tier that can fetch stored
    dictionaries (:meth:`FrameCodec.add_dictionary`) retries once; otherwise the entry is a miss."""

    def __init__(self, number: int) -> None:
        super().__init__(f"the value was compressed with zstd dictionary {number:#x}, which this process does not have")
        self.number = number


class FrameCodec:
    """Frames entries for shared tiers. One instance per secret, encryption keys and compression setting.

    Payloads of at least ``compression_threshold`` bytes are compressed with zstd and the write dictionary (the
    shipped one unless a trained one is adopted), and kept compressed only where that makes them smaller.
    With encryption keys, the (possibly compressed) payload is sealed with AES-256-GCM under the first key, the
    frame header as associated data; any listed key opens it, so keys can be rotated by prepending the new one.
    """

    __slots__ = ("_aeads", "_compression_threshold", "_dictionaries", "_max_bytes", "_plain", "_secret", "_writing")

    def __init__(
        self,
        *,
        secret: bytes | None,
        compression_threshold: int,
        max_bytes: int,
        encryption_keys: Sequence[bytes] = (),
        dictionary: Dictionary | bool | None = True,
    ) -> None:
        """``dictionary``: True for the shipped one, a :class:`Dictionary` to write with, None/False for none."""
        self._secret = secret or None
        self._compression_threshold = compression_threshold
        self._max_bytes = max_bytes
        self._dictionaries: dict[int, Dictionary] = {}
        shipped_one = shipped(SHIPPED_ID)
        if shipped_one is not None:
            self._dictionaries[shipped_one.id] = shipped_one
        self._writing: Dictionary | None = shipped_one if dictionary is True else (dictionary or None)
        if self._writing is not None:
            self._dictionaries[self._writing.id] = self._writing
        self._aeads: list[tuple[bytes, Any]] = []
        if encryption_keys:
            try:
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            except ImportError:  # pragma: no cover - depends on the install
                raise CodecError(
                    "encryption_keys are set but the 'cryptography' package is missing: "
                    "pip install 'dspy-tiered-cache[encryption]'"
                ) from None
            for raw in encryption_keys:
                key = hashlib.sha256(b"dspy_tiered_cache/aes-gcm/" + raw).digest()
                self._aeads.append((hashlib.sha256(key).digest()[:4], AESGCM(key)))
        #: Neither signed nor sealed: format 3 frames take the hot path of :meth:`loads`.
        self._plain = self._secret is None and not self._aeads

    @property
    def write_dictionary(self) -> Dictionary | None:
        """The dictionary new frames are compressed with (None: plain zstd)."""
        return self._writing

    def add_dictionary(self, dictionary: Dictionary, *, adopt: bool = False) -> None:
        """Read frames compressed with ``dictionary`` from now on; with ``adopt``, also write with it."""
        self._dictionaries[dictionary.id] = dictionary
        if adopt:
            self._writing = dictionary

    def adopt(self, number: int) -> None:
        """Write with dictionary ``number`` (one this codec holds) from now on."""
        self._writing = self._dictionaries[number]

    def has_dictionary(self, number: int) -> bool:
        return number in self._dictionaries

    def _mac(self, data: bytes) -> bytes:
        if self._secret is not None:
            return hmac.digest(self._secret, data, "sha256")[:_MAC_LEN]
        return hashlib.sha256(data).digest()[:_MAC_LEN]

    def dumps(self, entry: Entry) -> bytes:
        body = entry.payload
        flags = 0
        number = 0
        signed = self._secret is not None
        if self._compression_threshold and len(body) >= self._compression_threshold:
            writing = self._writing
            # Format 3 relies on zstd's content checksum; a signed (format 2) frame has its MAC and skips it.
            if writing is not None:
                packed = writing.compress(body, checksum=not signed)
            else:
                packed = _compressor(not signed).compress(body)
            if len(packed) < len(body):
                body, flags, number = packed, FLAG_ZSTD, writing.id if writing is not None else 0
        if self._aeads:
            flags |= FLAG_AESGCM
        created = int(entry.created_at * 1000)
        expires = 0 if entry.expires_at is None else max(1, int(entry.expires_at * 1000))
        header = _HEADER_2.pack(
            MAGIC,
            VERSION_2 if signed else VERSION,
            flags,
            number,
            created >> 32,
            created & 0xFFFF_FFFF,
            expires >> 32,
            expires & 0xFFFF_FFFF,
        )
        if self._aeads:
            key_id, aead = self._aeads[0]
            nonce = os.urandom(12)
            body = key_id + nonce + aead.encrypt(nonce, body, header)
        if signed:
            return header + self._mac(header + body) + body
        return header + _crc(header, body, flags).to_bytes(4, "big") + body

    def loads(self, data: bytes) -> Entry:
        # The hot path (every L2 hit of a compressed answer without key_secret or encryption), in one frame:
        # a Python call costs about as much here as the CRC, so the checks are written out inline.
        if (
            self._plain
            and len(data) > _PREFIX_3 + 4
            and data[0] == MAGIC
            and data[1] == VERSION
            and data[2] == FLAG_ZSTD
        ):
            _, _, _, number, c_hi, c_lo, e_hi, e_lo = _HEADER_2.unpack_from(data)
            dictionary = self._dictionaries.get(number) if number else None
            if (
                (dictionary is not None or not number)
                and zlib.crc32(data[_PREFIX_3 : _PREFIX_3 + _BODY_HEAD], zlib.crc32(data[: _HEADER.size]))
                == int.from_bytes(data[_HEADER.size : _PREFIX_3], "big")
                and data.startswith(_ZSTD_MAGIC, _PREFIX_3)
                and data[_PREFIX_3 + 4] & 0x04
            ):
                body = data[_PREFIX_3:]
                try:
                    claimed = zstandard.frame_content_size(body)
                    if 0 <= claimed <= self._max_bytes:
                        try:
                            decompress = _local.by_dictionary[dictionary]
                        except (AttributeError, KeyError):
                            decompress = _bind_decompressor(dictionary)
                        expires_ms = (e_hi << 32) | e_lo
                        return _new_entry(
                            Entry,
                            (
                                decompress(body, self._max_bytes),
                                ((c_hi << 32) | c_lo) / 1000.0,
                                expires_ms / 1000.0 if expires_ms else None,
                            ),
                        )
                except zstandard.ZstdError as exc:
                    raise CorruptEntry(f"compressed payload does not decompress: {exc}") from None
            # Otherwise fall through: the general path names what is wrong.
        if len(data) >= 2 and data[0] == MAGIC and data[1] > VERSION:  # whatever its header length
            raise NewerFormat(f"frame format {data[1]} is newer than this release reads ({VERSION}): upgrade it")
        if len(data) < _PREFIX_3:
            raise CorruptEntry(f"frame of {len(data)} bytes is shorter than the {_PREFIX_3}-byte header")
        if data[0] != MAGIC:
            raise CorruptEntry("not a dspy_tiered_cache frame (bad magic byte): a foreign value under our prefix")
        version = data[1]
        if version == VERSION:
            return self._loads_3(data)
        if len(data) < _PREFIX_LEN:
            raise CorruptEntry(f"frame of {len(data)} bytes is shorter than the {_PREFIX_LEN}-byte header")
        if version == VERSION_2:
            _, _, flags, number, c_hi, c_lo, e_hi, e_lo = _HEADER_2.unpack_from(data)
            created_ms, expires_ms = (c_hi << 32) | c_lo, (e_hi << 32) | e_lo
        elif version == VERSION_1:
            _, _, flags, created_ms, expires_ms = _HEADER.unpack_from(data)
            number = 0
        else:
            raise CorruptEntry(f"frame version {version} is not readable by this version ({VERSION})")
        if flags & ~(FLAG_ZSTD | FLAG_AESGCM):
            raise CorruptEntry(f"unknown frame flags {flags:#x}")
        header = data[: _HEADER.size]
        mac = data[_HEADER.size : _PREFIX_LEN]
        body = data[_PREFIX_LEN:]
        if not hmac.compare_digest(mac, self._mac(header + body)):
            raise CorruptEntry("checksum mismatch: the value was altered, truncated or written with another key_secret")
        if flags & FLAG_AESGCM:
            body = self._open(header, body)
        elif self._aeads:
            raise CorruptEntry("value is not encrypted but encryption_keys are set: refusing plaintext")
        if flags & FLAG_ZSTD:
            body = self._decompress(body, number)
        elif number:
            raise CorruptEntry("frame names a dictionary but is not compressed")
        return Entry(body, created_ms / 1000.0, expires_ms / 1000.0 if expires_ms else None)

    def _loads_3(self, data: bytes) -> Entry:
        """A format 3 frame: the hot path of every hit read from Redis or the disk tier (no copies of the body
        beyond the payload itself, one CRC of 41 bytes, zstd checks the rest)."""
        if self._secret is not None:
            raise CorruptEntry("frame is not signed but a key_secret is set: written without it, or forged")
        _, _, flags, number, c_hi, c_lo, e_hi, e_lo = _HEADER_2.unpack_from(data)
        if flags & ~(FLAG_ZSTD | FLAG_AESGCM):
            raise CorruptEntry(f"unknown frame flags {flags:#x}")
        view = memoryview(data)
        if flags:  # the CRC covers the body's head: zstd's frame header (its checksum flag), or key id + nonce
            crc = zlib.crc32(view[_PREFIX_3 : _PREFIX_3 + _BODY_HEAD], zlib.crc32(view[: _HEADER.size]))
        else:
            crc = zlib.crc32(view[_PREFIX_3:], zlib.crc32(view[: _HEADER.size]))
        if crc != int.from_bytes(data[_HEADER.size : _PREFIX_3], "big"):
            raise CorruptEntry("checksum mismatch: the value was altered or truncated")
        if flags & FLAG_AESGCM:
            opened = self._open(data[: _HEADER.size], data[_PREFIX_3:])
            body: bytes | memoryview = opened
            checksummed = _zstd_checksummed(opened, 0)
        elif self._aeads:
            raise CorruptEntry("value is not encrypted but encryption_keys are set: refusing plaintext")
        else:
            body = view[_PREFIX_3:]
            checksummed = flags == FLAG_ZSTD and _zstd_checksummed(data, _PREFIX_3)
        if flags & FLAG_ZSTD:
            if not checksummed:
                raise CorruptEntry("compressed payload is not a zstd frame with a content checksum")
            payload = self._decompress(body, number)
        elif number:
            raise CorruptEntry("frame names a dictionary but is not compressed")
        else:
            payload = bytes(body)
        expires_ms = (e_hi << 32) | e_lo
        return _new_entry(Entry, (payload, ((c_hi << 32) | c_lo) / 1000.0, expires_ms / 1000.0 if expires_ms else None))

    def _decompress(self, body: bytes | memoryview, number: int) -> bytes:
        dictionary = self._dictionaries.get(number) if number else None
        if number and dictionary is None:
            raise MissingDictionary(number)
        try:
            claimed = zstandard.frame_content_size(body)
            if claimed < 0 or claimed > self._max_bytes:
                raise CorruptEntry(f"compressed payload claims {claimed} bytes, over max_value_bytes")
            if dictionary is not None:
                return dictionary.decompress(body, self._max_bytes)
            return _decompressor().decompress(body, max_output_size=self._max_bytes)
        except zstandard.ZstdError as exc:
            raise CorruptEntry(f"compressed payload does not decompress within the size limit: {exc}") from None

    def _open(self, header: bytes, body: bytes) -> bytes:
        if not self._aeads:
            raise CorruptEntry("value is encrypted but no encryption_keys are set")
        key_id, nonce, sealed = body[:4], body[4:16], body[16:]
        for kid, aead in self._aeads:
            if kid == key_id:
                try:
                    return bytes(aead.decrypt(nonce, sealed, header))
                except Exception:
                    break
        raise CorruptEntry("value is encrypted with a key not in encryption_keys (or was tampered with)")


def _zstd_checksummed(buf: bytes, at: int) -> bool:
    """Whether ``buf[at:]`` starts a zstd frame that ends with its content checksum (frame header flag 0x04)."""
    return buf.startswith(_ZSTD_MAGIC, at) and len(buf) > at + 4 and bool(buf[at + 4] & 0x04)


_new_entry = tuple.__new__  # Entry(...) minus the generated __new__'s Python frame


def _crc(header: bytes, body: bytes, flags: int) -> int:
    """A format 3 frame's CRC-32: the header, then the whole body when it is plain, or its head when zstd's
    checksum (compressed) or AES-GCM's tag (encrypted) covers the rest."""
    return zlib.crc32(body[:_BODY_HEAD] if flags else body, zlib.crc32(header))


_local = threading.local()


def _bind_decompressor(dictionary: Dictionary | None) -> Callable[[Any, int], bytes]:
    """This thread's ``decompress`` for frames compressed with ``dictionary`` (None: none), kept for the next hit:
    a decompressor holds the dictionary digested (zstd's DDict), built once per thread."""
    try:
        table: dict[Dictionary | None, Callable[[Any, int], bytes]] = _local.by_dictionary
    except AttributeError:
        table = _local.by_dictionary = {}
    d = dictionary.decompressor() if dictionary is not None else _decompressor()
    table[dictionary] = decompress = d.decompress
    return decompress


def _compressor(checksum: bool) -> zstandard.ZstdCompressor:
    """Plain zstd (no dictionary), one per thread and checksum setting."""
    name = "zc_sum" if checksum else "zc"
    c: zstandard.ZstdCompressor | None = getattr(_local, name, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=3, write_checksum=checksum)
        setattr(_local, name, c)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    """One per thread: building one costs more than decompressing a typical response, and they are not
    thread-safe."""
    d: zstandard.ZstdDecompressor | None = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = zstandard.ZstdDecompressor()
    return d

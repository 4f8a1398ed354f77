from __future__ import annotations

import contextlib
import os
import pickle
import time
import zlib
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_tiered_cache import dictionary
from dspy_tiered_cache.codec import (
    FLAG_AESGCM,
    FLAG_ZSTD,
    CodecError,
    CorruptEntry,
    Entry,
    FrameCodec,
    MissingDictionary,
    decode_value,
    encode_value,
)
from dspy_tiered_cache.dictionary import SHIPPED_ID, shipped


def codec(secret: bytes | None = None, threshold: int = 64) -> FrameCodec:
    return FrameCodec(secret=secret, compression_threshold=threshold, max_bytes=1024 * 1024)


def test_round_trip_small_and_compressed() -> None:
    for payload in (b'{"a":1}', b'{"text":"' + b"abc" * 5000 + b'"}'):
        e = Entry(payload, 1_700_000_000.123, 1_700_000_100.456)
        framed = codec().dumps(e)
        got = codec().loads(framed)
        assert got.payload == payload
        assert got.created_at == pytest.approx(e.created_at, abs=0.001)
        assert got.expires_at == pytest.approx(e.expires_at, abs=0.001)
    assert len(codec().dumps(Entry(b"a" * 10_000, 0.0))) < 1000  # compression happened


def test_no_expiry_round_trips_as_none() -> None:
    assert codec().loads(codec().dumps(Entry(b"1", time.time(), None))).expires_at is None


@pytest.mark.parametrize("flip", [0, 1, 2, 5, 20, -1])
def test_any_flipped_byte_is_detected(flip: int) -> None:
    framed = bytearray(codec().dumps(Entry(b'{"answer":"yes"}', time.time(), None)))
    framed[flip] ^= 0x01
    with pytest.raises(CorruptEntry):
        codec().loads(bytes(framed))


def test_truncated_and_foreign_values() -> None:
    framed = codec().dumps(Entry(b'{"a":1}', time.time()))
    for bad in (b"", b"\xd7", framed[:-1], b"plain string", pickle.dumps({"a": 1})):
        with pytest.raises(CorruptEntry):
            codec().loads(bad)


def test_value_written_with_another_secret_is_rejected() -> None:
    framed = codec(b"key-one").dumps(Entry(b'{"a":1}', time.time()))
    with pytest.raises(CorruptEntry, match="key_secret"):
        codec(b"key-two").loads(framed)
    with pytest.raises(CorruptEntry):
        codec(None).loads(framed)
    assert codec(b"key-one").loads(framed).payload == b'{"a":1}'


def test_decompression_bomb_is_refused() -> None:
    small_limit = FrameCodec(secret=None, compression_threshold=1, max_bytes=1000)
    big = FrameCodec(secret=None, compression_threshold=1, max_bytes=10**8)
    framed = big.dumps(Entry(b"0" * 5_000_000, time.time()))
    with pytest.raises(CorruptEntry, match="max_value_bytes"):
        small_limit.loads(framed)
    assert zstandard  # the bomb was compressed with zstd


def test_encode_refuses_what_would_not_read_back() -> None:
    import datetime

    with pytest.raises(CodecError, match="plain JSON"):
        encode_value({"when": datetime.datetime.now()}, 1000)
    with pytest.raises(CodecError):
        encode_value({1: "int keys become strings"}, 1000)
    with pytest.raises(CodecError):
        encode_value(object(), 1000)
    with pytest.raises(CodecError):
        encode_value("\ud800 lone surrogate", 1000)
    with pytest.raises(CodecError, match="MAX_VALUE_BYTES"):
        encode_value("x" * 2000, 1000)


def test_decode_gives_fresh_objects() -> None:
    payload = encode_value({"choices": [{"text": "a"}]}, 1000)
    first = decode_value(payload)
    first["choices"].append("mutated")
    assert decode_value(payload) == {"choices": [{"text": "a"}]}


def test_encryption_round_trip_and_rotation() -> None:
    old = FrameCodec(secret=None, compression_threshold=64, max_bytes=10**6, encryption_keys=[b"old-key-0123456789"])
    rotated = FrameCodec(
        secret=None,
        compression_threshold=64,
        max_bytes=10**6,
        encryption_keys=[b"new-key-0123456789", b"old-key-0123456789"],
    )
    payload = b'{"answer":"' + b"secret text " * 50 + b'"}'
    framed = old.dumps(Entry(payload, time.time()))
    assert b"secret text" not in framed  # sealed, not just compressed
    assert rotated.loads(framed).payload == payload  # the old key still decrypts after rotation
    with pytest.raises(CorruptEntry, match="encryption_keys"):
        old.loads(rotated.dumps(Entry(payload, time.time())))  # new key unknown to the old config


def test_encrypted_and_plain_frames_do_not_mix() -> None:
    sealed = FrameCodec(secret=None, compression_threshold=0, max_bytes=10**6, encryption_keys=[b"k" * 20])
    plain = codec()
    with pytest.raises(CorruptEntry, match="plaintext"):
        sealed.loads(plain.dumps(Entry(b"1", time.time())))
    with pytest.raises(CorruptEntry, match="no encryption_keys"):
        plain.loads(sealed.dumps(Entry(b"1", time.time())))


# -- frame format 2: zstd dictionaries ----------------------------------------------------------------
#: Frames written by the code at commit 779bc70 (format 1, before dictionaries), kept as bytes: entries already in
#: users' Redis and SQLite files must keep reading. The second is zstd-compressed (threshold 64), the third is
#: checksummed under key_secret=b"k-779bc70".
OLD_FRAME_SMALL = bytes.fromhex(
    "d701000000018bcfe5687b000000000000000005237e74a7eca0add3678756e0887f8e7b22616e73776572223a22796573227d"
)
OLD_FRAME_ZSTD = bytes.fromhex(
    "d701010000018bcfe5687b000001a3185c51f42b6e8629fc5da9a7f5a5ef2b5761ce4828b52ffd20e0450200f4037b2263686f696365"
    "73223a5b7b226d657373616765223a7b22636f6e74656e74223a226f6c64206672616d6573207374696c6c20726561642e20227d7d5d7d"
    "0100ea516a4201"
)
OLD_FRAME_SECRET = bytes.fromhex(
    "d701000000018bcfe5687b0000000000000000f2c71c5adf4634380a96c9705999c1257b22616e73776572223a22796573227d"
)


def test_frames_from_before_dictionaries_still_read() -> None:
    small = codec().loads(OLD_FRAME_SMALL)
    assert small.payload == b'{"answer":"yes"}'
    assert small.created_at == pytest.approx(1_700_000_000.123, abs=0.001)
    assert small.expires_at is None
    packed = codec().loads(OLD_FRAME_ZSTD)
    assert packed.payload == b'{"choices":[{"message":{"content":"' + b"old frames still read. " * 8 + b'"}}]}'
    assert packed.expires_at == pytest.approx(1_800_000_000.5, abs=0.001)
    assert codec(b"k-779bc70").loads(OLD_FRAME_SECRET).payload == b'{"answer":"yes"}'
    with pytest.raises(CorruptEntry, match="key_secret"):
        codec(b"another").loads(OLD_FRAME_SECRET)


#: Frames written by the code at commit 793b18f (format 2: dictionary number + 16-byte SHA-256 / HMAC), kept as
#: bytes for the same reason: compressed with the shipped dictionary (threshold 64), a small uncompressed one, and
#: a compressed one checksummed under key_secret=b"k-793b18f".
FORMAT2_PAYLOAD = b'{"choices":[{"message":{"content":"' + b"format two frames still read. " * 8 + b'"}}]}'
FORMAT2_ZSTD = bytes.fromhex(
    "d7020100000001019af232b2fa01a3185c51f410c881138d8659019ca7dc3a5e1a5f7a28b52ffd6018000d0100407b2e20227d7d5d7d"
    "08fccf20c743a47e802c22a762b4d9e8d3ddb41d6b504f4e"
)
FORMAT2_SMALL = bytes.fromhex(
    "d7020000000000019af232b2fa000000000000bf1b0787bab5ba0bea7bbf4c2b28bb377b22616e73776572223a22796573227d"
)
FORMAT2_SECRET = bytes.fromhex(
    "d7020100000001019af232b2fa0000000000001d9eda142ddb3e6ac94939492c3832db28b52ffd6018000d0100407b2e20227d7d5d7d"
    "08fccf20c743a47e802c22a762b4d9e8d3ddb41d6b504f4e"
)


def test_format_2_frames_still_read() -> None:
    packed = codec().loads(FORMAT2_ZSTD)
    assert packed.payload == FORMAT2_PAYLOAD
    assert packed.created_at == pytest.approx(1_765_000_000.25, abs=0.001)
    assert packed.expires_at == pytest.approx(1_800_000_000.5, abs=0.001)
    small = codec().loads(FORMAT2_SMALL)
    assert small.payload == b'{"answer":"yes"}' and small.expires_at is None
    assert codec(b"k-793b18f").loads(FORMAT2_SECRET).payload == FORMAT2_PAYLOAD
    with pytest.raises(CorruptEntry, match="key_secret"):
        codec(b"another").loads(FORMAT2_SECRET)
    for flip in (2, 9, 25, 60, -1):  # header, MAC, body: all still checked by the format 2 hash
        damaged = bytearray(FORMAT2_ZSTD)
        damaged[flip] ^= 0x01
        with pytest.raises(CorruptEntry):
            codec().loads(bytes(damaged))


# -- frame format 3: no second hash where zstd (or AES-GCM) already checks ---------------------------------
def _format3(payload: bytes, threshold: int = 64) -> tuple[FrameCodec, bytes]:
    c = FrameCodec(secret=None, compression_threshold=threshold, max_bytes=10**6)
    return c, c.dumps(Entry(payload, 1_765_000_000.25, 1_800_000_000.5))


def test_format_3_is_written_without_a_secret_and_is_smaller() -> None:
    c, framed = _format3(FORMAT2_PAYLOAD)
    assert framed[1] == 3 and framed[2] == 1  # compressed
    assert len(framed) == len(FORMAT2_ZSTD) - 16 + 4 + 4  # CRC-32 instead of 16 bytes; zstd's checksum added
    assert zstandard.get_frame_parameters(framed[23:]).has_checksum
    got = c.loads(framed)
    assert got.payload == FORMAT2_PAYLOAD
    assert (got.created_at, got.expires_at) == (pytest.approx(1_765_000_000.25), pytest.approx(1_800_000_000.5))
    plain_codec, plain = _format3(b'{"answer":"yes"}')
    assert plain[1] == 3 and plain[2] == 0 and plain_codec.loads(plain).payload == b'{"answer":"yes"}'
    signed = codec(b"k").dumps(Entry(FORMAT2_PAYLOAD, 0.0))
    assert signed[1] == 2  # a key_secret keeps the keyed MAC


@pytest.mark.parametrize("payload", [FORMAT2_PAYLOAD, b'{"answer":"yes"}'], ids=["compressed", "plain"])
def test_format_3_every_flipped_bit_or_truncation_is_a_corrupt_entry(payload: bytes) -> None:
    c, framed = _format3(payload)
    for i in range(len(framed)):  # every bit of every byte that carries meaning
        for bit in range(8):
            damaged = bytearray(framed)
            damaged[i] ^= 1 << bit
            try:
                got = c.loads(bytes(damaged))
            except CorruptEntry:
                continue
            # Only bits that cannot change what is read may pass: none, in a frame this shape.
            raise AssertionError(f"byte {i} bit {bit} flipped and the frame still read: {got!r}")
    for cut in range(len(framed)):
        with pytest.raises(CorruptEntry):
            c.loads(framed[:cut])


def test_format_3_refuses_a_zstd_frame_without_its_checksum() -> None:
    c, framed = _format3(FORMAT2_PAYLOAD)
    header = framed[:19]
    unchecked = c._writing.compress(FORMAT2_PAYLOAD, checksum=False)  # type: ignore[union-attr]
    forged = header + zlib.crc32(unchecked[:18], zlib.crc32(header)).to_bytes(4, "big") + unchecked
    with pytest.raises(CorruptEntry, match="content checksum"):
        c.loads(forged)


def test_format_3_is_refused_under_a_key_secret() -> None:
    _, framed = _format3(FORMAT2_PAYLOAD)
    with pytest.raises(CorruptEntry, match="not signed"):
        codec(b"k").loads(framed)


def test_format_3_foreign_dictionary_and_bomb_are_corrupt_entries() -> None:
    c, framed = _format3(FORMAT2_PAYLOAD)
    header = bytearray(framed[:19])
    header[3:7] = (0x8000_1234).to_bytes(4, "big")  # a trained dictionary this process does not hold
    body = framed[23:]
    foreign = bytes(header) + zlib.crc32(body[:18], zlib.crc32(bytes(header))).to_bytes(4, "big") + body
    with pytest.raises(MissingDictionary):
        c.loads(foreign)
    small = FrameCodec(secret=None, compression_threshold=64, max_bytes=100)
    with pytest.raises(CorruptEntry, match="over max_value_bytes"):
        small.loads(framed)


def test_format_3_encrypted_round_trip_and_tamper() -> None:
    pytest.importorskip("cryptography")
    c = FrameCodec(secret=None, compression_threshold=64, max_bytes=10**6, encryption_keys=[b"k1"])
    framed = c.dumps(Entry(FORMAT2_PAYLOAD, 0.0))
    assert framed[1] == 3 and framed[2] == FLAG_ZSTD | FLAG_AESGCM
    assert c.loads(framed).payload == FORMAT2_PAYLOAD
    for i in (5, 30, len(framed) // 2, len(framed) - 1):
        damaged = bytearray(framed)
        damaged[i] ^= 0x01
        with pytest.raises(CorruptEntry):
            c.loads(bytes(damaged))


def _answer(n: int) -> bytes:
    """A stored chat answer of about ``n`` bytes of English (the shape the LiteLLM door stores)."""
    words = ["the", "cache", "keeps", "each", "answer", "small", "enough", "that", "a", "fleet", "of", "workers"]
    text = " ".join(words[(i * 7) % len(words)] for i in range(n // 5))
    return encode_value(
        {"__dtc_litellm__": 1, "r": {"id": "chatcmpl-abc", "object": "chat.completion", "choices": [
            {"finish_reason": "stop", "index": 0, "message": {"content": text, "role": "assistant"}}]}},
        10**6,
    )  # fmt: skip


def test_small_answers_compress_with_the_shipped_dictionary() -> None:
    shipped_one = shipped()
    assert shipped_one is not None and shipped_one.id == SHIPPED_ID
    payload = _answer(400)
    with_dict = FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6)
    without = FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6, dictionary=None)
    framed = with_dict.dumps(Entry(payload, time.time()))
    assert framed[1] == 3 and int.from_bytes(framed[3:7], "big") == SHIPPED_ID  # the frame names its dictionary
    assert len(framed) < len(without.dumps(Entry(payload, time.time())))
    assert len(framed) < len(payload) * 0.6
    assert with_dict.loads(framed).payload == payload
    assert without.loads(framed).payload == payload  # every codec holds the shipped dictionaries


def test_compression_is_kept_only_where_it_makes_the_entry_smaller() -> None:
    c = FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6)
    noise = os.urandom(600)  # incompressible bytes stay as they are
    framed = c.dumps(Entry(noise, 0.0))
    assert framed[2] == 0 and framed.endswith(noise)
    short = b'{"a":"' + b"x" * 100 + b'"}'  # under the threshold: never compressed
    assert c.dumps(Entry(short, 0.0)).endswith(short)


def test_trained_dictionary_round_trip_and_unknown_number_is_a_corrupt_entry() -> None:
    samples = [_answer(300 + 37 * i) for i in range(200)]
    trained = dictionary.train(samples, size=4096)
    assert trained.id >= dictionary.USER_BASE
    assert dictionary.unpack(dictionary.pack(trained), expected=trained.id).raw == trained.raw
    writer = FrameCodec(secret=None, compression_threshold=64, max_bytes=10**6, dictionary=trained)
    framed = writer.dumps(Entry(samples[3], 0.0))
    assert int.from_bytes(framed[3:7], "big") == trained.id
    assert writer.loads(framed).payload == samples[3]
    reader = codec()
    with pytest.raises(MissingDictionary) as missing:  # a CorruptEntry: the core counts a miss
        reader.loads(framed)
    assert isinstance(missing.value, CorruptEntry) and missing.value.number == trained.id
    reader.add_dictionary(dictionary.unpack(dictionary.pack(trained)))
    assert reader.loads(framed).payload == samples[3]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),  # one bit of the dictionary
        lambda blob: b"not a dictionary at all",
        lambda blob: blob[:20],
        lambda blob: blob[:10] + (dictionary.SHIPPED_ID).to_bytes(4, "big") + blob[14:],  # poses as the shipped one
        lambda blob: pickle.dumps(blob),
    ],
)
def test_corrupt_or_foreign_dictionaries_are_refused(mangle: Any) -> None:
    trained = dictionary.train([_answer(300 + 41 * i) for i in range(120)], size=4096)
    with pytest.raises(dictionary.ForeignDictionary):
        dictionary.unpack(mangle(dictionary.pack(trained)), expected=None)


def test_a_dictionary_stored_under_another_number_is_refused() -> None:
    one = dictionary.train([_answer(300 + 41 * i) for i in range(120)], size=4096)
    with pytest.raises(dictionary.ForeignDictionary, match="expected"):
        dictionary.unpack(dictionary.pack(one), expected=one.id ^ 1)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=4000) | st.text(max_size=3000).map(str.encode),
    created=st.floats(min_value=0, max_value=4e9),
    ttl=st.none() | st.floats(min_value=0.001, max_value=1e8),
    threshold=st.sampled_from([0, 1, 256, 2048]),
    secret=st.none() | st.just(b"s3cret"),
)
def test_any_payload_round_trips(
    payload: bytes, created: float, ttl: float | None, threshold: int, secret: bytes | None
) -> None:
    c = FrameCodec(secret=secret, compression_threshold=threshold, max_bytes=10**6)
    expires = None if ttl is None else created + ttl
    got = c.loads(c.dumps(Entry(payload, created, expires)))
    assert got.payload == payload
    assert got.created_at == pytest.approx(created, abs=0.0011)
    assert (got.expires_at is None) == (expires is None)
    if expires is not None:
        assert got.expires_at == pytest.approx(expires, abs=0.0011)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_corrupt_entry(data: bytes) -> None:
    prefix = codec().dumps(Entry(_answer(500), 0.0))[:40]
    for candidate in (data, b"\xd7\x02" + data, b"\xd7\x01" + data, prefix + data):
        with contextlib.suppress(CorruptEntry):  # anything else escaping would fail the test
            codec().loads(candidate)

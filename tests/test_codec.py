from __future__ import annotations

import pickle
import time

import pytest
import zstandard

from dspy_tiered_cache.codec import CodecError, CorruptEntry, Entry, FrameCodec, decode_value, encode_value


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

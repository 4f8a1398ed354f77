"""One ``except CacheError`` catches every error the package raises on purpose, and the old bases still hold."""

from __future__ import annotations

import pytest

import dspy_tiered_cache
from dspy_tiered_cache import CacheCore, CacheError, ConfigError, UncacheableRequest
from dspy_tiered_cache.codec import CodecError, CorruptEntry, FrameCodec


def test_cache_error_is_public() -> None:
    assert "CacheError" in dspy_tiered_cache.__all__
    assert dspy_tiered_cache.CacheError is CacheError


def test_a_bad_setting_is_a_cache_error_and_a_value_error() -> None:
    with pytest.raises(CacheError) as info:
        CacheCore(disk=False, namespace="not a namespace!")
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValueError)


def test_a_request_without_canonical_form_is_a_cache_error() -> None:
    core = CacheCore(disk=False)
    try:
        with pytest.raises(CacheError) as info:
            core.key_for({"model": "m", "messages": [object()]})
        assert isinstance(info.value, UncacheableRequest)
        assert isinstance(info.value, ValueError)
    finally:
        core.close()


def test_codec_errors_are_cache_errors() -> None:
    codec = FrameCodec(secret=None, compression_threshold=1024, max_bytes=64)
    with pytest.raises(CacheError) as corrupt:
        codec.loads(b"\x00")
    assert isinstance(corrupt.value, CorruptEntry)
    assert issubclass(CodecError, CacheError) and issubclass(CodecError, ValueError)


def test_missing_litellm_dependency_is_a_cache_error_and_an_import_error() -> None:
    from dspy_tiered_cache.integrations.litellm import MissingLiteLLMDependency

    assert issubclass(MissingLiteLLMDependency, CacheError)
    assert issubclass(MissingLiteLLMDependency, ImportError)

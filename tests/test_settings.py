from __future__ import annotations

import pytest

from dspy_tiered_cache.settings import CacheSettings, ConfigError, load_settings, mask_url


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_REDIS_URL", "redis://:pw@localhost:6380/1")
    monkeypatch.setenv("DSPY_TIERED_CACHE_NAMESPACE", "prod-v2")
    monkeypatch.setenv("DSPY_TIERED_CACHE_TTL", "3600")
    s = load_settings()
    assert s.redis_url_value == "redis://:pw@localhost:6380/1"
    assert s.namespace == "prod-v2" and s.ttl == 3600
    assert not s.uses_disk  # Redis configured: disk only when asked


def test_code_overrides_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_NAMESPACE", "from-env")
    assert load_settings(namespace="from-code").namespace == "from-code"


def test_disk_is_the_default_without_redis() -> None:
    assert load_settings().uses_disk


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("REDIS_URL", "http://localhost:6379", "DSPY_TIERED_CACHE_REDIS_URL"),
        ("TTL", "-5", "DSPY_TIERED_CACHE_TTL"),
        ("REDIS_TIMEOUT_MS", "soon", "DSPY_TIERED_CACHE_REDIS_TIMEOUT_MS"),
        ("NAMESPACE", "has space", "DSPY_TIERED_CACHE_NAMESPACE"),
    ],
)
def test_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str) -> None:
    monkeypatch.setenv(f"DSPY_TIERED_CACHE_{env}", value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_unknown_argument_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'redis_ulr'"):
        load_settings(redis_ulr="redis://x")


def test_bad_url_message_says_how_to_fix_and_hides_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(redis_url="http://user:hunter2@host")
    assert "rediss://" in str(info.value) and "hunter2" not in str(info.value)


def test_masked_settings_hide_secrets() -> None:
    s = CacheSettings(redis_url="rediss://user:hunter2@host:6380", key_secret="topsecret")
    text = str(s.masked())
    assert "hunter2" not in text and "topsecret" not in text and "user:****@host" in text
    assert "hunter2" not in repr(s)
    assert mask_url("redis://localhost") == "redis://localhost"


def test_encryption_keys_from_env_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_ENCRYPTION_KEYS", "new-key-abcdefghijkl, old-key-abcdefghijkl")
    s = load_settings()
    assert [k.get_secret_value() for k in s.encryption_keys] == ["new-key-abcdefghijkl", "old-key-abcdefghijkl"]
    assert "abcdefghijkl" not in str(s.masked())
    monkeypatch.setenv("DSPY_TIERED_CACHE_ENCRYPTION_KEYS", "short")
    with pytest.raises(ConfigError, match="DSPY_TIERED_CACHE_ENCRYPTION_KEYS"):
        load_settings()

from __future__ import annotations

from pathlib import Path

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


# -- the shared tier's URL: every form checked at construction, through the public constructors ---------------
BAD_URLS = [
    ("redis://localhost:notaport/0", "port 'notaport'"),
    ("redis://localhost:6379/zz", "database in the path is 'zz'"),
    ("http://localhost:6379/0", "scheme 'http' is not supported"),
    ("rediss://cache.example:70000/0", "port '70000'"),
    ("rediss://cache.example:6380/0?db=x", "db= query parameter is 'x'"),
    ("redis://localhost:6379/0/1", "is not a database number"),
    ("redis+sentinel://localhost:26379", "needs the master name"),
    ("redis+sentinel://localhost:26379/mymaster/zz", "database after the master name is 'zz'"),
    ("redis+sentinel://s1:26379,s2:x/mymaster", "port 'x' of host 's2'"),
    ("redis+cluster://n1:7000,n2:oops", "port 'oops' of host 'n2'"),
    ("redis://n1:7000,n2:7001/0", "set redis_cluster=true"),
    ("redis+cluster://n1:7000/3", "Cluster has only database 0"),
    ("unix://", "socket's path"),
    (
        "redis://localhost:6379/0?cluster=true",
        "'cluster' is not a redis-py connection option (a Cluster: redis+cluster://",
    ),
    ("rediss://cache:6380/0?ssl_cert_reqs=none&sockettimeout=1", "'sockettimeout' is not a redis-py connection option"),
]


@pytest.mark.parametrize(("url", "needle"), BAD_URLS)
def test_bad_redis_url_passed_in_code_is_one_line_naming_the_argument(url: str, needle: str) -> None:
    from dspy_tiered_cache import TieredCache

    with pytest.raises(ConfigError) as info:
        TieredCache(redis_url=url)
    message = str(info.value)
    assert "\n" not in message and needle in message and "argument redis_url=" in message
    assert "DSPY_TIERED_CACHE_REDIS_URL" not in message  # it came from the code, so the code's name


@pytest.mark.parametrize(("url", "needle"), BAD_URLS)
def test_bad_redis_url_from_env_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, needle: str
) -> None:
    from dspy_tiered_cache import CacheCore

    monkeypatch.setenv("DSPY_TIERED_CACHE_REDIS_URL", url)
    with pytest.raises(ConfigError) as info:
        CacheCore()
    message = str(info.value)
    assert "\n" not in message and needle in message and "env DSPY_TIERED_CACHE_REDIS_URL=" in message


def test_cluster_seed_list_needs_cluster_mode_and_db_0_from_the_cluster_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_REDIS_CLUSTER", "true")
    assert load_settings(redis_url="redis://n1:7000,n2:7001,[::1]:7002").redis_cluster
    with pytest.raises(ConfigError, match="only database 0, not 2"):
        load_settings(redis_url="redis://n1:7000/2")


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("redis://localhost", "redis://localhost"),
        ("redis://:pw@localhost:6379/15", "redis://:pw@localhost:6379/15"),
        ("rediss://user:pw@cache.example:6380/0?ssl_ca_certs=/etc/ca.pem", None),
        ("redis://[::1]:6379/0", None),
        ("unix:///run/redis.sock?db=2", None),
        ("redis://localhost:6379/0?socket_timeout=0.5&client_name=api&health_check_interval=10", None),
        ("redis+sentinel://s1:26379,s2:26380/mymaster/1", None),
        ("redis+cluster://n1:7000,n2:7001", None),
        ("valkey://localhost:6379/1", "redis://localhost:6379/1"),
        ("valkeys://localhost:6380/0", "rediss://localhost:6380/0"),
    ],
)
def test_good_redis_urls_are_accepted(url: str, stored: str | None) -> None:
    assert load_settings(redis_url=url).redis_url_value == (stored or url)


def test_bad_url_is_shown_with_its_password_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_REDIS_URL", "redis://app:hunter2@cache:6379/zz")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "'redis://app:****@cache:6379/zz'" in str(info.value) and "hunter2" not in str(info.value)


@pytest.mark.parametrize("command", ["config", "health"])
@pytest.mark.parametrize(("url", "needle"), [BAD_URLS[0], BAD_URLS[1], BAD_URLS[9]])
def test_cli_refuses_a_bad_url_instead_of_reporting_ok(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, url: str, needle: str
) -> None:
    from dspy_tiered_cache.cli import main

    monkeypatch.setenv("DSPY_TIERED_CACHE_REDIS_URL", url)
    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert needle in err and "DSPY_TIERED_CACHE_REDIS_URL" in err
    monkeypatch.delenv("DSPY_TIERED_CACHE_REDIS_URL")
    assert main(["--redis-url", url, command]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and "--redis-url" in err


def test_mode_and_endpoints_are_checked_with_the_choices() -> None:
    assert load_settings(mode="Read_Write").mode == "read-write"
    with pytest.raises(ConfigError, match="'read-write', 'replay' or 'refresh'"):
        load_settings(mode="playback")
    with pytest.raises(ConfigError, match=r"argument semantic_embedding_api_base=.*http:// or https://"):
        load_settings(semantic_embedding_api_base="localhost:8000/v1")


def test_a_default_value_is_named_by_its_field_and_variable(tmp_path: Path) -> None:
    (tmp_path / "xdg-cache" / "dspy_tiered_cache" / "cache.sqlite3").mkdir(parents=True)  # the default path
    with pytest.raises(ConfigError, match=r"disk_path \(env DSPY_TIERED_CACHE_DISK_PATH\)=.*is a directory"):
        load_settings(disk=True)


def test_a_disk_path_under_a_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "hostname"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DSPY_TIERED_CACHE_DISK_PATH", str(blocker / "x" / "cache.sqlite3"))
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "env DSPY_TIERED_CACHE_DISK_PATH=" in message and f"{str(blocker)!r} is a file" in message
    assert load_settings(redis_url="redis://localhost:6379/0").redis_url is not None  # no disk tier: not checked


def test_encryption_keys_that_look_like_json_but_are_not_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_ENCRYPTION_KEYS", '["new-key-abcdefghijkl", ')
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS=\\*\\*\\*\\*: starts with '\\[' but is not a JSON list"):
        load_settings()


def test_log_level_sets_our_logger_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import logging

    from dspy_tiered_cache.core import CacheCore

    ours, root = logging.getLogger("dspy_tiered_cache"), logging.getLogger()
    before, root_before = ours.level, root.level
    monkeypatch.setenv("DSPY_TIERED_CACHE_LOG_LEVEL", "DEBUG")
    try:
        with CacheCore(disk_path=str(tmp_path / "c.sqlite3"), fleet=False):
            assert ours.level == logging.DEBUG
            assert root.level == root_before
    finally:
        ours.setLevel(before)

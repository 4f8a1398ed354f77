"""One settings model for every front door, read from ``DSPY_TIERED_CACHE_*`` environment variables.

Settings are validated once, at construction, so a typo in a service's environment fails at start-up with a
message naming the variable and the fix, instead of surfacing later as a silent cache that never hits.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dspy_tiered_cache.errors import CacheError

ENV_PREFIX = "DSPY_TIERED_CACHE_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: URL schemes of the shared tier; Valkey's own names mean the same protocol as redis:// and rediss://.
_REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys", "redis+sentinel", "redis+cluster")
_SCHEME_ALIASES = {"valkey": "redis", "valkeys": "rediss"}
_URL_FORMS = (
    "use redis://host:6379/0, rediss://host:6380/0 (TLS), unix:///path/to/redis.sock, "
    "redis+sentinel://host:26379/mymaster or, for a Cluster, redis://host1:7000,host2:7001"
)
_SECRET_FIELDS = frozenset(
    {"redis_url", "key_secret", "encryption_keys", "semantic_embedding_api_key", "semantic_judge_api_key"}
)


class ConfigError(CacheError, ValueError):
    """A setting a user gave is wrong; the message names the setting, its env var and how to fix it."""


class _FieldError(ValueError):
    """A check that needs several fields (so pydantic gives it no location) but is about one field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_namespace(name: str) -> str:
    """The one rule for namespace names (they become part of Redis keys); raises ValueError saying the fix."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"namespace {name!r} is not valid: use 1-64 characters from letters, digits, '_', '.', '-'")
    return name


def default_disk_path() -> Path:
    """Follow XDG so the cache lands where users expect caches to be, not in the working directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dspy_tiered_cache" / "cache.sqlite3"


class CacheSettings(BaseSettings):
    """Everything a deployment tunes. Field ``x`` is read from env var ``DSPY_TIERED_CACHE_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_assignment=True,
        case_sensitive=False,
        env_ignore_empty=True,
    )

    enabled: bool = Field(True, description="Master switch: when false every lookup is a bypass.")
    memory: bool = Field(True, description="Use the in-process memory tier (L1).")
    memory_max_entries: int = Field(10_000, ge=0, description="L1 bound on entries (0 disables L1).")
    memory_max_bytes: int = Field(128 * 1024 * 1024, ge=0, description="L1 bound on payload bytes.")
    redis_url: SecretStr | None = Field(
        None,
        description="redis://, rediss:// (TLS), unix://, redis+sentinel:// URL; host:port,host:port seeds a Cluster.",
    )
    redis_cluster: bool = Field(False, description="Treat redis_url as one node of a Redis Cluster.")
    redis_connect_timeout_ms: int = Field(250, gt=0, le=60_000)
    redis_timeout_ms: int = Field(150, gt=0, le=60_000, description="Per-operation timeout for Redis.")
    redis_max_connections: int = Field(64, gt=0)
    disk: bool | None = Field(None, description="Use the SQLite tier; None means only when no redis_url is set.")
    disk_path: Path = Field(default_factory=default_disk_path)
    disk_max_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="Soft bound on the SQLite tier size.")
    ttl: float | None = Field(None, gt=0, description="Default lifetime in seconds; unset means no expiry.")
    memory_ttl: float | None = Field(None, gt=0, description="Cap on L1 lifetime (bounds cross-process staleness).")
    redis_ttl: float | None = Field(None, gt=0)
    disk_ttl: float | None = Field(None, gt=0)
    ttl_jitter: float = Field(0.0, ge=0.0, lt=1.0, description="Shorten remote lifetimes by up to this fraction.")
    namespace: str = Field("default", description="Default namespace; invalidating it is O(1).")
    key_prefix: str = Field("dtc", description="Prefix of every key this package writes to a shared tier.")
    key_secret: SecretStr | None = Field(None, description="Keys and checksums become HMACs under this secret.")
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Encrypt values (AES-256-GCM) with the first key; all keys decrypt (rotation). Env: comma-"
        "separated or a JSON list. Needs the [encryption] extra.",
    )
    include_api_base: bool = Field(False, description="Key on the endpoint too (two servers, one model name).")
    compression_threshold: int = Field(256, ge=0, description="Compress payloads at least this large (0 = off).")
    max_value_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Larger values are not stored.")
    write_behind: bool = Field(True, description="Write remote tiers from a background thread.")
    write_queue_size: int = Field(10_000, gt=0)
    single_flight: bool = Field(True, description="Collapse concurrent identical misses into one upstream call.")
    single_flight_timeout: float = Field(120.0, gt=0, description="Longest a follower waits for the leader.")
    distributed_single_flight: bool = Field(True, description="Also collapse misses across processes (a lease).")
    lock_lease_s: float = Field(30.0, gt=0, description="Lease of the cross-process lock; a dead holder's expires.")
    lock_poll_s: float = Field(0.025, gt=0, description="How often a waiting process checks for the answer.")
    invalidation_pubsub: bool = Field(True, description="Tell other instances' memory tiers of invalidations.")
    breaker_failures: int = Field(3, gt=0, description="Consecutive failures that open a tier's breaker.")
    breaker_reset_s: float = Field(2.0, gt=0, description="Seconds before an open breaker lets one probe through.")
    generation_refresh_s: float = Field(1.0, ge=0, description="How often namespace generations are re-read.")
    telemetry: bool = Field(True, description="Emit OpenTelemetry spans and metrics (no-op without an SDK).")
    fleet: bool = Field(True, description="Add this process's hit/miss/savings counts to the shared tier's totals.")
    fleet_flush_s: float = Field(5.0, gt=0, le=3600, description="Seconds between batched fleet counter writes.")
    tenant_scope: Literal["none", "user", "team", "api_key_hash"] = Field(
        "none",
        description="LiteLLM door: keep tenants' entries apart by the request's user, its team (metadata), or a "
        "hash of its API key. A request without that identity is not cached.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = None
    # -- the opt-in semantic tier (LiteLLM door; see dspy_tiered_cache/semantic/) --
    semantic: bool = Field(False, description="After an exact miss, serve a verified near-identical request's answer.")
    semantic_threshold: float | None = Field(
        None,  # the learned verifier's tuned floor for its model, else 0.95 (docs/semantic.md)
        gt=0.0,
        le=1.0,
        description="Cosine similarity a neighbour needs before the verifier looks at it (None: the "
        "learned verifier's tuned floor for the embedding model, else 0.95).",
    )
    semantic_embedding_model: str = Field("text-embedding-3-small", description="Any LiteLLM embedding model.")
    semantic_embedding_api_base: str | None = Field(None, description="Endpoint of the embedding model.")
    semantic_embedding_api_key: SecretStr | None = Field(None, description="Key for the embedding model.")
    semantic_verifier: Literal["learned", "rules", "rules+llm", "none"] = Field(
        "learned",
        description="'learned': a head trained on third-party pairs for the embedding model (the rules for a "
        "model it has no weights for); 'rules': reject neighbours differing in numbers, negation, names...; "
        "'rules+llm': then ask semantic_judge_model too; 'none': trust the threshold (for measurement).",
    )
    semantic_judge_model: str | None = Field(None, description="LiteLLM chat model judging neighbours (rules+llm).")
    semantic_judge_api_base: str | None = Field(None, description="Endpoint of the judge model.")
    semantic_judge_api_key: SecretStr | None = Field(None, description="Key for the judge model.")
    semantic_candidates: int = Field(5, gt=0, le=100, description="Nearest neighbours the verifier examines.")
    semantic_max_rows: int = Field(
        200_000, gt=0, description="Rows the semantic index keeps (shared in Redis, or per machine); oldest go first."
    )
    semantic_max_chars: int = Field(2000, gt=0, description="Longer last user turns are matched exactly only.")
    semantic_max_messages: int = Field(6, gt=0, description="Longer conversations are matched exactly only.")
    semantic_allow_tools: bool = Field(False, description="Also match requests carrying tools/functions.")
    mode: Literal["read-write", "replay", "refresh"] = Field(
        "read-write",
        description="read-write (default); replay: answers only from the cache, a miss raises ReplayMiss and never "
        "goes upstream; refresh: never read, always write (re-record).",
    )
    record_requests: bool = Field(
        False,
        description="Also keep each request's canonical form beside its answer in the shared tier, so exports show "
        "prompts and a replay miss can say how it differs from the closest recorded request.",
    )

    @field_validator("namespace", "key_prefix")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("use 1-64 characters from letters, digits, '_', '.', '-'")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _normalize_mode(cls, value: Any) -> Any:
        """``Replay`` and ``read_write`` mean what they say; the field's choices then name the allowed values."""
        return value.strip().lower().replace("_", "-") if isinstance(value, str) else value

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError(
                        "starts with '[' but is not a JSON list; use a JSON list or comma-separated keys"
                    ) from None
            return [k.strip() for k in text.split(",") if k.strip()]
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(key.get_secret_value()) < 16:
                raise ValueError("each encryption key needs at least 16 characters (use e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        return SecretStr(parse_redis_url(value.get_secret_value().strip()).url)

    @field_validator("semantic_embedding_api_base", "semantic_judge_api_base")
    @classmethod
    def _check_api_base(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value.strip()).scheme.lower() not in ("http", "https"):
            raise ValueError("use an http:// or https:// endpoint, e.g. https://api.openai.com/v1")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _check_consistency(self) -> CacheSettings:
        if self.semantic_verifier == "rules+llm" and not self.semantic_judge_model:
            raise ValueError("semantic_verifier='rules+llm' needs semantic_judge_model (a LiteLLM chat model)")
        if self.uses_disk:
            self._check_disk_path()
        url = self.redis_url_value
        if url is not None:
            parsed = parse_redis_url(url)
            cluster = self.redis_cluster or parsed.cluster
            if len(parsed.hosts) > 1 and not (cluster or parsed.sentinel):
                raise _FieldError(
                    "redis_url",
                    "several hosts name a Redis Cluster's seed nodes: set redis_cluster=true "
                    f"({ENV_PREFIX}REDIS_CLUSTER=true) or use redis+cluster://, or give one host",
                )
            if cluster and parsed.db:
                raise _FieldError(
                    "redis_url", f"a Redis Cluster has only database 0, not {parsed.db}: end the URL in /0"
                )
        return self

    def _check_disk_path(self) -> None:
        """The SQLite file's path can work: it is not a directory, and no part of it is a file (``/etc/hostname/x``
        would otherwise fail later with a bare "File exists" or "Not a directory")."""
        if self.disk_path.is_dir():
            raise _FieldError("disk_path", f"{str(self.disk_path)!r} is a directory; point it at a file")
        parent = self.disk_path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise _FieldError("disk_path", f"{str(parent)!r} is a file, so it cannot hold the cache's file")

    @property
    def uses_disk(self) -> bool:
        """The disk tier is the embedded default: on unless a Redis URL makes it redundant."""
        return self.disk if self.disk is not None else self.redis_url is None

    @property
    def redis_url_value(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url is not None else None

    def masked(self) -> dict[str, Any]:
        """Effective settings safe to print: passwords in URLs and secrets are masked."""
        data = self.model_dump(mode="json")
        data["redis_url"] = mask_url(self.redis_url_value)
        data["key_secret"] = "********" if self.key_secret is not None else None
        data["encryption_keys"] = ["********"] * len(self.encryption_keys)
        data["semantic_embedding_api_key"] = "********" if self.semantic_embedding_api_key is not None else None
        data["semantic_judge_api_key"] = "********" if self.semantic_judge_api_key is not None else None
        return data


def mask_url(url: str | None) -> str | None:
    """Hide the password part of a URL so it can appear in logs, spans and ``config`` output."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class RedisURL:
    """What a shared-tier URL names, checked the way the tier will read it (so a typo fails here, not later)."""

    url: str  #: the URL as the tier takes it (Valkey scheme names mapped to redis:// and rediss://)
    hosts: tuple[tuple[str, int], ...]
    db: int
    sentinel: bool
    cluster: bool  #: the scheme says Cluster (``redis+cluster://``); ``redis_cluster=true`` says so too


def parse_redis_url(raw: str) -> RedisURL:
    """Check every part redis-py would otherwise read loosely: it takes ``/zz`` as database 0 and only fails on
    a bad port at the first command, which the fail-open tier turns into a warning instead of an error."""
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in _REDIS_SCHEMES or "://" not in raw:
        raise ValueError(f"scheme {scheme or '(none)'!r} is not supported; {_URL_FORMS}")
    if scheme in _SCHEME_ALIASES:
        raw = _SCHEME_ALIASES[scheme] + raw[len(scheme) :]
        scheme = _SCHEME_ALIASES[scheme]
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - _connection_options())
    if unknown:  # redis-py hands them to the connection as keywords: a TypeError at every command, read as a miss
        hint = " (a Cluster: redis+cluster://host:7000,... or redis_cluster=true)" if "cluster" in unknown else ""
        raise ValueError(f"query parameter {unknown[0]!r} is not a redis-py connection option{hint}")
    query_db = _database(query["db"][-1], "the db= query parameter") if "db" in query else None
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("a unix:// URL needs the socket's path: unix:///path/to/redis.sock")
        return RedisURL(raw, (), query_db or 0, sentinel=False, cluster=False)
    sentinel = scheme == "redis+sentinel"
    hosts = tuple(_host_port(item, 26379 if sentinel else 6379) for item in _host_list(parts.netloc))
    path = [segment for segment in parts.path.split("/") if segment]
    if sentinel:
        if not path or len(path) > 2:
            problem = "needs the master name" if not path else f"has a path {parts.path!r} of more than master/db"
            raise ValueError(
                f"a redis+sentinel:// URL {problem}: redis+sentinel://host:26379[,host:26379]/mymaster[/db]"
            )
        db = _database(path[1], "the database after the master name") if len(path) > 1 else 0
    else:
        if len(path) > 1:
            raise ValueError(f"the path {parts.path!r} is not a database number; end the URL in /0 (or /1, ...)")
        db = _database(path[0], "the database in the path") if path else 0
    return RedisURL(raw, hosts, query_db if query_db is not None else db, sentinel, scheme == "redis+cluster")


@functools.cache
def _connection_options() -> frozenset[str]:
    """The query parameters a redis URL may carry: those redis-py parses, and its connections' keyword arguments
    (it passes any other as one), read from the installed redis-py."""
    from redis import connection

    names = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    for kind in (connection.ConnectionPool, connection.AbstractConnection, connection.Connection,
                 connection.SSLConnection, connection.UnixDomainSocketConnection):  # fmt: skip
        names.update(inspect.signature(kind.__init__).parameters)
    return frozenset(names - {"self", "args", "kwargs", "connection_kwargs"})


def _host_list(netloc: str) -> list[str]:
    hosts = netloc.rsplit("@", 1)[-1]
    return hosts.split(",") if hosts else [""]


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[ipv6]:port``; the port must be a number from 1 to 65535."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif item.count(":") == 1:
        host, _, port_text = item.partition(":")
    else:
        host, port_text = item, ""
    if not port_text:
        if item.endswith(":"):
            raise ValueError(f"host {item!r} has an empty port; use host:6379")
        return host or "localhost", default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} of host {host or 'localhost'!r} is not a port number (1-65535)")
    return host or "localhost", int(port_text)


def _database(text: str, where: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{where} is {text!r}, not a database number; use 0 (or 1, 2, ...)")
    return int(text)


def _shown_url(value: Any) -> str:
    """The URL with its password masked, so the user sees which URL is meant; ``****`` if that is not sure."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not isinstance(raw, str):
        return "****"
    try:
        password = urlsplit(raw).password
        masked = mask_url(raw) or ""
    except ValueError:
        return "****"
    return "****" if password and password in masked else repr(masked)


def load_settings(settings: CacheSettings | None = None, **overrides: Any) -> CacheSettings:
    """Build settings from env plus overrides, turning pydantic's report into one actionable line."""
    given = set(overrides)
    if settings is not None:
        if not overrides:
            return settings
        merged = settings.model_dump()
        merged.update(overrides)
        overrides = merged
    try:
        return CacheSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, given)) from None


def _explain(exc: ValidationError, given_in_code: set[str]) -> str:
    """One line per run: each bad setting named as the user wrote it (the argument, else the env variable)."""
    problems = []
    for err in exc.errors():
        cause = (err.get("ctx") or {}).get("error")
        field = cause.field if isinstance(cause, _FieldError) else str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting {field!r}: check the spelling against CacheSettings' fields")
            continue
        message = str(cause) if isinstance(cause, ValueError) else err["msg"]
        if not field:
            problems.append(message)
            continue
        env = ENV_PREFIX + field.upper()
        if field in given_in_code:
            origin = f"argument {field}="
        elif any(name.upper() == env for name in os.environ):
            origin = f"env {env}="
        else:
            origin = f"{field} (env {env})="
        value = err.get("input")
        if isinstance(cause, _FieldError) and isinstance(value, dict):  # a model check: show the one field
            value = value.get(field)
        shown = _shown_url(value) if field == "redis_url" else "****" if field in _SECRET_FIELDS else repr(value)
        problems.append(f"{origin}{shown}: {message}")
    return "invalid dspy_tiered_cache settings: " + "; ".join(problems)

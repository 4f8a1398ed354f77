"""``litellm.Cache(...)``'s arguments, given to ``TieredCache(...)``: each one keeps its meaning or is refused.

``litellm.cache = TieredCache(...)`` must take what ``litellm.Cache(...)`` took, so a drop-in replacement is a
rename. Each of LiteLLM's arguments maps onto our settings with the same meaning:

* ``type="local"``: in-process memory only (no disk, no Redis); ``type="disk"`` (LiteLLM's disk backend,
  removed in LiteLLM 1.110, which now rejects the type): memory in front of our disk tier; ``type="redis"``
  with ``host``/``port``/``password`` (and the ``redis.Redis`` keywords ``username``, ``db``, ``ssl``, ``url``)
  or LiteLLM's ``REDIS_*`` environment variables: memory in front of that Redis; ``redis_startup_nodes``: a
  Redis Cluster;
* ``ttl`` (``0`` or less: entries are dead on arrival, so nothing is served, as in LiteLLM; a per-call
  ``cache={"ttl": N}`` still wins), ``namespace``, ``default_in_memory_ttl``, ``default_in_redis_ttl``,
  ``similarity_threshold`` (our semantic tier's threshold), ``disk_cache_dir`` (our disk tier's directory);
* ``mode``, ``supported_call_types``, ``max_messages``: kept by LiteLLM's own ``Cache`` (see the door);
* ``redis_flush_size``: accepted; our remote writes are already batched by the write-behind writer.

The rest is refused with one line naming what to use instead: the S3, GCS and Azure Blob stores, LiteLLM's
semantic stores (Redis, Valkey, Qdrant: use ``semantic=True``), GCP IAM authentication and ``_backend``.
LiteLLM's own defaults for those arguments are accepted silently (they select nothing).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from dspy_tiered_cache.settings import ConfigError

__all__ = ["translate_cache_args"]

#: Arguments of ``litellm.Cache`` whose default selects nothing; any other value selects a store we do not have.
_REFUSED_DEFAULTS: Final[Mapping[str, Any]] = {
    "s3_use_ssl": True,
    "redis_semantic_cache_embedding_model": "text-embedding-ada-002",
    "valkey_semantic_cache_embedding_model": "text-embedding-ada-002",
    "qdrant_semantic_cache_embedding_model": "text-embedding-ada-002",
    "semantic_cache_scope": "key",
}

_REFUSALS: Final = (
    (
        ("s3_",),
        "S3 is not a tier of TieredCache (memory + Redis/Valkey or the disk tier): use litellm.Cache(type='s3')",
    ),
    (
        ("gcs_",),
        "GCS is not a tier of TieredCache (memory + Redis/Valkey or the disk tier): use litellm.Cache(type='gcs')",
    ),
    (
        ("azure_",),
        "Azure Blob is not a tier of TieredCache (memory + Redis/Valkey or the disk tier): "
        "use litellm.Cache(type='azure-blob')",
    ),
    (
        ("redis_semantic_", "valkey_semantic_", "qdrant_", "semantic_cache_"),
        "LiteLLM's semantic stores are not used by TieredCache: pass semantic=True and the semantic_* settings",
    ),
    (("gcp_",), "GCP IAM authentication is not supported by TieredCache: pass redis_url= with the password"),
)

_REDIS_KEYWORDS: Final = frozenset({"username", "db", "ssl", "url"})


def translate_cache_args(args: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """Turn ``litellm.Cache`` keyword arguments (removed from ``args``) into our settings overrides.

    Returns ``(overrides, door_ttl)``: ``door_ttl`` is a lifetime of 0 or less, applied per write the way LiteLLM
    applies ``Cache(ttl=)`` (then nothing is served). Raises ``ConfigError`` with one line for a refused one."""
    overrides: dict[str, Any] = {}
    for name in list(args):
        refusal = next((why for prefixes, why in _REFUSALS if name.startswith(prefixes)), None)
        if refusal is not None or name == "_backend":
            value = args.pop(name)
            if (name in _REFUSED_DEFAULTS and value == _REFUSED_DEFAULTS[name]) or value is None:
                continue
            raise ConfigError(f"{name}=: {refusal or 'TieredCache is its own backend: drop _backend='}")
    kind = args.pop("type", None)
    kind = getattr(kind, "value", kind)
    host, port, password = args.pop("host", None), args.pop("port", None), args.pop("password", None)
    nodes = args.pop("redis_startup_nodes", None)
    redis_keywords = {name: args.pop(name) for name in list(args) if name in _REDIS_KEYWORDS}
    args.pop("redis_flush_size", None)
    if kind in ("redis-semantic", "valkey-semantic", "qdrant-semantic"):
        raise ConfigError(f"type={kind!r}: LiteLLM's semantic stores are not used here: pass semantic=True instead")
    if kind in ("s3", "gcs", "azure-blob"):
        raise ConfigError(f"type={kind!r} is not a tier of TieredCache: use litellm.Cache(type={kind!r})")
    if kind not in (None, "local", "redis", "disk"):
        raise ConfigError(f"type={kind!r} is not a LiteLLM cache type TieredCache knows: use 'local' or 'redis'")
    if kind == "local":
        overrides.update(redis_url=None, disk=False)
    elif kind == "disk":  # LiteLLM's removed disk backend: memory in front of our disk tier
        overrides.update(redis_url=None, disk=True)
    elif kind == "redis" or nodes:
        overrides["redis_url"] = _redis_url(host, port, password, redis_keywords, nodes)
        overrides["redis_cluster"] = bool(nodes)
    elif host is not None or redis_keywords:
        raise ConfigError("host=/port=/password= select Redis only with type='redis' (or pass redis_url=)")
    door_ttl = _lifetimes(args, overrides, local=kind == "local")
    threshold = args.pop("similarity_threshold", None)
    if threshold is not None:
        overrides["semantic_threshold"] = threshold
    directory = args.pop("disk_cache_dir", None)
    if directory is not None:
        overrides.update(disk=True, disk_path=os.path.join(os.fspath(directory), "cache.sqlite3"))
    return overrides, door_ttl


def _lifetimes(args: dict[str, Any], overrides: dict[str, Any], *, local: bool) -> float | None:
    """``ttl``, ``default_in_memory_ttl``, ``default_in_redis_ttl``: a positive one is a setting, 0 or less is
    LiteLLM's "dead on arrival" (returned for the door to apply per write)."""
    door_ttl: float | None = None
    for name, field in (("ttl", "ttl"), ("default_in_memory_ttl", "memory_ttl"), ("default_in_redis_ttl", "redis_ttl")):
        value = args.pop(name, None)
        if value is None:
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}= must be a number of seconds, not {value!r}") from None
        if seconds > 0:
            overrides[field] = seconds
            if local and field == "memory_ttl":  # LiteLLM: the local cache's default_in_memory_ttl is its ttl
                overrides["ttl"] = seconds
        elif field == "ttl" or (local and field == "memory_ttl"):
            door_ttl = seconds
    return door_ttl


def _redis_url(host: Any, port: Any, password: Any, keywords: Mapping[str, Any], nodes: Any) -> str:
    """A redis:// URL from LiteLLM's Redis arguments, its first startup node, or its REDIS_* variables."""
    if keywords.get("url"):
        return str(keywords["url"])
    if nodes:
        first = nodes[0] if isinstance(nodes, list) and nodes and isinstance(nodes[0], Mapping) else None
        if first is None:
            raise ConfigError("redis_startup_nodes= must be a list of {'host': ..., 'port': ...}")
        host, port = first.get("host"), first.get("port")
    if host is None and os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    host = host or os.environ.get("REDIS_HOST")
    port = port or os.environ.get("REDIS_PORT") or 6379
    password = password or os.environ.get("REDIS_PASSWORD")
    if not host:
        raise ConfigError("type='redis' needs host= and port= (or REDIS_HOST / REDIS_URL, or pass redis_url=)")
    user = urllib.parse.quote(str(keywords.get("username") or ""), safe="")
    secret = f":{urllib.parse.quote(str(password), safe='')}" if password else ""
    auth = f"{user}{secret}@" if user or secret else ""
    scheme = "rediss" if keywords.get("ssl") else "redis"
    db = f"/{int(keywords['db'])}" if keywords.get("db") is not None else ""
    return f"{scheme}://{auth}{host}:{int(port)}{db}"

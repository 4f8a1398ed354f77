"""Which tiers a configuration asks for, in cost order."""

from __future__ import annotations

from dspy_tiered_cache.codec import FrameCodec
from dspy_tiered_cache.settings import CacheSettings
from dspy_tiered_cache.tiers.base import Tier
from dspy_tiered_cache.tiers.memory import MemoryTier


def build_tiers(settings: CacheSettings, codec: FrameCodec) -> list[Tier]:
    """Tier order is cost order: memory, then the local disk, then the network."""
    tiers: list[Tier] = []
    if settings.memory and settings.memory_max_entries > 0 and settings.memory_max_bytes > 0:
        tiers.append(
            MemoryTier(
                max_entries=settings.memory_max_entries, max_bytes=settings.memory_max_bytes, ttl=settings.memory_ttl
            )
        )
    if settings.uses_disk:
        from dspy_tiered_cache.tiers.disk import DiskTier

        tiers.append(
            DiskTier(settings.disk_path, codec=codec, ttl=settings.disk_ttl, max_bytes=settings.disk_max_bytes)
        )
    url = settings.redis_url_value
    if url:
        from dspy_tiered_cache.tiers.redis import RedisTier

        tiers.append(
            RedisTier(
                url,
                codec=codec,
                prefix=settings.key_prefix,
                ttl=settings.redis_ttl,
                connect_timeout_ms=settings.redis_connect_timeout_ms,
                timeout_ms=settings.redis_timeout_ms,
                max_connections=settings.redis_max_connections,
                cluster=settings.redis_cluster,
            )
        )
    return tiers

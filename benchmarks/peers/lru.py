"""The LRU policies a memory tier is usually compared with: cachetools' LRUCache and an OrderedDict LRU."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: name -> (get, put, the cache object)
Policy = tuple[Callable[[str], Any], Callable[[str], None], Any]


def policies(cap: int) -> dict[str, Policy]:
    """LRUs bounded by ``cap`` entries."""
    import cachetools

    lru: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=cap)
    od: OrderedDict[str, int] = OrderedDict()

    def od_get(k: str) -> int | None:
        if k in od:
            od.move_to_end(k)
            return od[k]
        return None

    def od_put(k: str) -> None:
        od[k] = 1
        if len(od) > cap:
            od.popitem(last=False)

    return {
        "cachetools_lru": (lru.get, lambda k: lru.__setitem__(k, 1), lru),
        "ordereddict_lru": (od_get, od_put, od),
    }


def bytes_bounded(max_bytes: int, sizes: dict[str, int]) -> Policy:
    """cachetools' LRUCache bounded by bytes (``getsizeof``): each key stored with its size."""
    import cachetools

    from dspy_tiered_cache.codec import ENTRY_OVERHEAD

    blru: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=max_bytes, getsizeof=lambda size: size)
    return blru.get, lambda k: blru.__setitem__(k, sizes[k] + ENTRY_OVERHEAD), blru

"""The floors: what a cache cannot beat — a dict read plus decode, a raw redis-py GET, a raw sqlite3 SELECT, and
plain dicts of objects, JSON bytes or zstd frames for memory. They put every peer's figure in proportion."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import zstandard

from peers.common import HitSetup, traced


# -- hits ------------------------------------------------------------------------------------------------------
def hit_variants(h: HitSetup) -> Callable[[], Awaitable[None]]:
    """dict + orjson decode, redis-py GET + decode (sync and asyncio), sqlite3 SELECT + decode. Returns the
    coroutine that closes the asyncio client (on the run's loop)."""
    import redis

    k_mem, k_disk, raw = h.keys["mem"], h.keys["disk"], h.raw
    plain = {k_mem: raw}
    h.sync_mem["floor_dict"] = lambda: orjson.loads(plain[k_mem])
    rclient = redis.Redis.from_url(h.redis_url)
    h.stack.callback(rclient.close)
    rclient.set("floor", raw)
    h.sync_io["floor_redis"] = lambda: orjson.loads(rclient.get("floor"))  # type: ignore[arg-type]
    aclient = redis.asyncio.Redis.from_url(h.redis_url)

    async def floor_redis_async() -> Any:
        raw_value: Any = await aclient.get("floor")
        return orjson.loads(raw_value)

    h.async_io["floor_redis_async"] = floor_redis_async
    db = sqlite3.connect(h.tmp / "floor.sqlite3", isolation_level=None, check_same_thread=False)
    h.stack.callback(db.close)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB)")
    db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (k_disk, raw))
    sql = "SELECT v FROM t WHERE k = ?"
    h.sync_io["floor_sqlite"] = lambda: orjson.loads(db.execute(sql, (k_disk,)).fetchone()[0])

    async def close() -> None:
        await aclient.aclose()

    return close


# -- throughput ------------------------------------------------------------------------------------------------
def throughput_get(keys: list[str], raw: bytes) -> Callable[[str], Awaitable[Any]]:
    plain = dict.fromkeys(keys, raw)

    async def floor(k: str) -> Any:
        return orjson.loads(plain[k])

    return floor


# -- memory ----------------------------------------------------------------------------------------------------
def memory_per_entry(keys: list[str], raws: list[bytes]) -> dict[str, float]:
    """Bytes per entry (tracemalloc) of plain dicts holding the values: decoded, as orjson returns them, as
    exact-size JSON bytes, as exact-size zstd frames."""
    n = len(keys)
    pairs = list(zip(keys, raws, strict=True))
    out = {"dict_of_objects": traced(lambda: {k: orjson.loads(r) for k, r in pairs})[0] / n}
    out["dict_of_orjson_output"] = traced(lambda: {k: orjson.dumps(orjson.loads(r)) for k, r in pairs})[0] / n
    # Exact-size copies (``bytes(memoryview(b))``): orjson and zstandard return bytes objects whose allocation is
    # several times their length, so these are what JSON bytes and zstd frames cost when stored carefully.
    out["dict_of_json_bytes"] = (
        traced(lambda: {k: bytes(memoryview(orjson.dumps(orjson.loads(r)))) for k, r in pairs})[0] / n
    )
    out["dict_of_zstd_bytes"] = (
        traced(lambda: {k: bytes(memoryview(zstandard.compress(r, 3))) for k, r in pairs})[0] / n
    )
    return out

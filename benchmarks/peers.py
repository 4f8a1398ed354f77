"""Our cache against the caches users would pick instead, on the same values, keys and private Redis.

    python benchmarks/peers.py SECTION [--scale full|quick|smoke] [--json-out FILE]
    python benchmarks/peers.py all --scale quick

Sections (each returns plain JSON data with ``rows`` for the table ``run_all.py`` prints):

* ``hits``        hit latency per tier, 0.5 KB and 8 KB responses: our core ``get``/``aget`` of a key against each
                  peer's get of the same value (LiteLLM InMemoryCache / DualCache / RedisCache / DiskCache, cashews,
                  aiocache, GPTCache) and against the floors (dict + decode, redis-py GET + decode, sqlite3 SELECT).
* ``litellm``     whole ``litellm.completion`` hits for the two LiteLLM caches ``litellm_door.py`` does not cover:
                  ``Cache(type="disk")`` and a ``DualCache`` backend, against ``TieredCache``.
* ``zipf``        memory-tier hit ratio and hit cost on a Zipf(1.0) trace, bounded by entries and by bytes.
* ``stampede``    N concurrent identical misses across processes: upstream calls.
* ``unreachable`` Redis refusing connections or frozen (SIGSTOP): latency added per call.
* ``throughput``  async L1 hits per CPU-second.
* ``memory``      bytes per entry in memory (tracemalloc) and in Redis (INFO used_memory), with and without zstd.

Each section is meant to run in its own process (``run_all.py`` does that), so one peer's threads, imports or
monkey-patches cannot skew another's figures. Peers that are not installed are reported as such, not skipped
silently. Timings use interleaved rounds (``paired_us`` from ``core.py``): a burst of each variant per round,
the median over rounds, so a noisy neighbour on a 2-core machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import itertools
import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download when litellm is imported
# Nothing a peer or an import caches may land in the user's ~/.cache (one shared scratch dir, not one per process).
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(tempfile.gettempdir(), "dtc-peers-xdg"))

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import orjson  # noqa: E402
import zstandard  # noqa: E402
from core import paired_us  # noqa: E402  - the lead's interleaved timing (benchmarks/core.py)

from dspy_tiered_cache import CacheCore  # noqa: E402
from dspy_tiered_cache.codec import ENTRY_OVERHEAD, Entry  # noqa: E402
from dspy_tiered_cache.testing.provider import StandInProvider  # noqa: E402
from dspy_tiered_cache.testing.redis_server import RedisServer, free_port  # noqa: E402
from dspy_tiered_cache.tiers.memory import MemoryTier  # noqa: E402

JSON = dict[str, Any]
MODEL = "openai/gpt-4o-mini"


# -- scale ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """How much of each workload to run; ``full`` is the real benchmark, the others keep the harness honest."""

    name: str
    repeat: int  # interleaved rounds per timing
    mem_number: int  # calls per burst for in-memory variants
    io_number: int  # calls per burst for Redis / disk variants
    zipf_requests: int
    zipf_keys: int
    zipf_capacity: int
    zipf_slow_peers: bool  # LiteLLM InMemoryCache and cashews (several us per request) on the whole trace
    stampede_processes: int
    stampede_threads: int
    stampede_latency: float
    stampede_variants: tuple[str, ...]
    down_calls_ours: int
    down_calls_peer: int
    down_litellm: bool
    down_cap_s: float  # longest we wait for one peer call against a dead Redis
    down_budget_s: float  # longest we spend on one peer variant
    throughput_seconds: float
    throughput_tasks: int
    memory_entries: int
    litellm_hits: int  # whole-call hits per cache in the ``litellm`` section (0 skips it)
    litellm_peers: bool  # LiteLLM's backends as peers (importing LiteLLM alone takes ~7 s on 2 cores)


SCALES: dict[str, Scale] = {
    "full": Scale(
        name="full",
        repeat=7,
        mem_number=4000,
        io_number=400,
        zipf_requests=1_000_000,
        zipf_keys=100_000,
        zipf_capacity=10_000,
        zipf_slow_peers=True,
        stampede_processes=4,
        stampede_threads=25,
        stampede_latency=2.0,  # LLM-like: every request of the burst is in flight before the first answer lands
        stampede_variants=(
            "ours_core",
            "ours_no_single_flight",
            "litellm_redis",
            "ours_litellm_door",
            "aiocache",
            "aiocache_stampede",
            "cashews",
            "cashews_lock",
        ),
        down_calls_ours=30,
        down_calls_peer=3,
        down_litellm=True,
        down_cap_s=8.0,
        down_budget_s=8.0,
        throughput_seconds=1.5,
        throughput_tasks=100,
        memory_entries=10_000,
        litellm_hits=200,
        litellm_peers=True,
    ),
    "quick": Scale(
        name="quick",
        repeat=5,
        mem_number=1500,
        io_number=150,
        zipf_requests=200_000,
        zipf_keys=20_000,
        zipf_capacity=2_000,
        zipf_slow_peers=False,
        stampede_processes=2,
        stampede_threads=10,
        stampede_latency=0.3,
        stampede_variants=("ours_core", "ours_no_single_flight", "aiocache", "cashews"),
        down_calls_ours=10,
        down_calls_peer=1,
        down_litellm=False,
        down_cap_s=3.0,
        down_budget_s=3.0,
        throughput_seconds=0.4,
        throughput_tasks=50,
        memory_entries=2_000,
        litellm_hits=0,
        litellm_peers=True,
    ),
    "smoke": Scale(
        name="smoke",
        repeat=2,
        mem_number=100,
        io_number=20,
        zipf_requests=5_000,
        zipf_keys=1_000,
        zipf_capacity=100,
        zipf_slow_peers=True,
        stampede_processes=2,
        stampede_threads=3,
        stampede_latency=0.1,
        stampede_variants=("ours_core", "ours_no_single_flight", "aiocache"),
        down_calls_ours=3,
        down_calls_peer=1,
        down_litellm=False,
        down_cap_s=0.5,
        down_budget_s=0.5,
        throughput_seconds=0.05,
        throughput_tasks=5,
        memory_entries=200,
        litellm_hits=0,
        litellm_peers=False,
    ),
}


# -- rows ----------------------------------------------------------------------------------------------------
def row(
    section: str,
    comparison: str,
    ours: float | None,
    peer: float | None,
    unit: str,
    *,
    better: str = "lower",
    goal: float | None = None,
    goal_on: str = "ratio",
    note: str = "",
    peer_capped: bool = False,
) -> JSON:
    """One line of the table. ``ratio`` is ours / peer; ``better`` says which way is good for ``goal``.

    ``goal_on="ratio"`` checks the ratio against ``goal``; ``goal_on="ours"`` checks our absolute figure.
    ``peer_capped`` means the peer's figure is a lower bound (we stopped waiting).
    """
    ratio = ours / peer if ours is not None and peer is not None and peer != 0 else None
    met: bool | None = None
    checked = ratio if goal_on == "ratio" else ours
    if goal is not None and checked is not None:
        met = checked <= goal if better == "lower" else checked >= goal
    return {
        "section": section,
        "comparison": comparison,
        "ours": ours,
        "peer": peer,
        "unit": unit,
        "ratio": ratio,
        "better": better,
        "goal": goal,
        "goal_on": goal_on,
        "met": met,
        "note": note,
        "peer_capped": peer_capped,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in (
        "dspy-tiered-cache",
        "dspy",
        "litellm",
        "redis",
        "hiredis",
        "orjson",
        "zstandard",
        "cashews",
        "aiocache",
        "gptcache",
        "cachetools",
        "diskcache",
    ):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


class Skipped(ImportError):
    """A peer left out at this scale (not a failure)."""


def _need_litellm(scale: Scale) -> None:
    if not scale.litellm_peers:
        raise Skipped(f"LiteLLM peers are not run at scale {scale.name!r} (importing LiteLLM takes ~7 s)")


def _missing(name: str, exc: BaseException) -> JSON:
    if isinstance(exc, Skipped):
        return {"status": "skipped", "error": str(exc)}
    return {"status": "not installable here" if name == "gptcache" else "not installed", "error": repr(exc)[:300]}


# -- values --------------------------------------------------------------------------------------------------
def _vocabulary(rng: random.Random, n: int = 3000) -> list[str]:
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [
        12.7,
        9.1,
        8.2,
        7.5,
        7.0,
        6.7,
        6.3,
        6.1,
        6.0,
        4.3,
        4.0,
        2.8,
        2.8,
        2.4,
        2.4,
        2.0,
        2.0,
        1.9,
        1.5,
        1.0,
        0.8,
        0.15,
        0.15,
        0.1,
        0.1,
        0.07,
    ]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(n)]


_VOCAB = _vocabulary(random.Random(1234))
_VOCAB_CUM = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(_VOCAB))))


def _sentences(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < n_chars:
        words = rng.choices(_VOCAB, cum_weights=_VOCAB_CUM, k=rng.randint(6, 18))
        sentence = " ".join(words).capitalize() + rng.choice([". ", ". ", ", ", "? ", ".\n"])
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:n_chars]


_CORPUS: list[str] = []


def text(n_chars: int, seed: int) -> str:
    """Pseudo-English (Zipf word frequencies, sentences): compresses about as well as model output does.

    A window of a 512 KB corpus generated once, so that making 10,000 distinct responses takes milliseconds.
    """
    if not _CORPUS:
        _CORPUS.append(_sentences(512 * 1024, 99))
    corpus = _CORPUS[0]
    if n_chars >= len(corpus):
        return _sentences(n_chars, seed)
    start = random.Random(seed).randrange(len(corpus) - n_chars)
    return corpus[start : start + n_chars]


def response(size: int, seed: int = 0) -> JSON:
    """A chat completion whose JSON is ``size`` bytes (give or take a few)."""
    value: JSON = {
        "id": f"chatcmpl-{seed:012d}",
        "object": "chat.completion",
        "created": 1_700_000_000 + seed,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}],
        "usage": {"prompt_tokens": 420, "completion_tokens": max(1, size // 5), "total_tokens": 420 + size // 5},
    }
    overhead = len(orjson.dumps(value))
    value["choices"][0]["message"]["content"] = text(max(0, size - overhead), seed)
    return value


def request(seed: int | str) -> JSON:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": f"Question {seed}: why does caching LM calls speed up optimization?"},
        ],
        "temperature": 0.0,
    }


def litellm_stored(value: JSON) -> JSON:
    """What ``litellm.Cache.add_cache`` hands its backend for a ModelResponse: a timestamp and the JSON text."""
    return {"timestamp": time.time(), "response": orjson.dumps(value).decode()}


# -- timing helpers ------------------------------------------------------------------------------------------
def paired_async_us(
    loop: asyncio.AbstractEventLoop,
    fns: dict[str, Callable[[], Awaitable[Any]]],
    *,
    repeat: int,
    number: int,
) -> dict[str, float]:
    """``paired_us`` for coroutines: interleaved bursts on one event loop, median microseconds per await."""

    async def burst(fn: Callable[[], Awaitable[Any]], n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await fn()
        return (time.perf_counter() - started) / n * 1e6

    for fn in fns.values():
        loop.run_until_complete(burst(fn, max(1, number // 10)))
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            runs[name].append(loop.run_until_complete(burst(fn, number)))
    return {name: statistics.median(r) for name, r in runs.items()}


def _warm(fns: dict[str, Callable[[], Any]], n: int = 50) -> None:
    for fn in fns.values():
        for _ in range(n):
            fn()


def _check(label: str, got: Any, want: Any) -> None:
    """A benchmark that times a miss or a wrong value is worse than none: every variant must return the value."""
    if got != want:
        raise AssertionError(f"{label} did not return the stored value: {str(got)[:120]!r}")


# -- (a) hit latency per tier --------------------------------------------------------------------------------
#: (comparison, our variant, peer variant, goal on the ratio, note) for the hit-latency table.
HIT_ROWS: list[tuple[str, str, str, float | None, str]] = [
    ("L1 get vs dict lookup + orjson decode (floor)", "ours_l1", "floor_dict", None,
     "ours = key lookup + W-TinyLFU bookkeeping + decode to a fresh object"),
    ("L1 get vs LiteLLM InMemoryCache (Cache type=local)", "ours_l1", "litellm_local", 1.0,
     "peer: backend get + Cache.get_cache_logic (json.loads of the stored text)"),
    ("L1 get (Redis configured) vs LiteLLM DualCache memory hit", "ours_l1_l2", "litellm_dual", 1.0, ""),
    ("L1 get vs GPTCache (exact match, map store) + decode", "ours_l1", "gptcache", 1.0, ""),
    ("L1 aget vs cashews mem://", "ours_l1_async", "cashews_mem", 1.0,
     "cashews returns the stored object itself (no decode, no copy): a caller's mutation changes the cache"),
    ("L1 aget vs aiocache SimpleMemoryCache", "ours_l1_async", "aiocache_mem", 1.0,
     "aiocache returns the stored object itself (no copy)"),
    ("L2 get vs raw redis-py GET + orjson decode (floor)", "ours_l2", "floor_redis", 1.3,
     "ours adds the frame check (sha256), zstd for values >= 2 KB, a breaker and stats"),
    ("L2 get vs LiteLLM RedisCache", "ours_l2", "litellm_redis", 1.0,
     "peer stores str(dict): its get falls back to ast.literal_eval"),
    ("L2 aget vs raw redis.asyncio GET + decode (floor)", "ours_l2_async", "floor_redis_async", 1.3, ""),
    ("L2 aget vs cashews redis://", "ours_l2_async", "cashews_redis", 1.0, ""),
    ("L2 aget vs aiocache RedisCache", "ours_l2_async", "aiocache_redis", 1.0, ""),
    ("disk get vs raw sqlite3 SELECT + decode (floor)", "ours_disk", "floor_sqlite", None, ""),
    ("disk get vs LiteLLM DiskCache (diskcache)", "ours_disk", "litellm_disk", 1.0, ""),
]  # fmt: skip


def section_hits(scale: Scale) -> JSON:
    out: JSON = {"sizes": {}, "peers": {}, "rows": []}
    rows: list[JSON] = out["rows"]
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        for size in (512, 8192):
            label = f"{size / 1024:g} KB"
            value = response(size, seed=size)
            raw = orjson.dumps(value)
            data = _hits_one_size(scale, server, Path(tmp) / str(size), value, raw)
            data["response_bytes"] = len(raw)
            out["sizes"][label] = data
            out["peers"].update(data.pop("peer_status"))
            us = data["us"]
            for comparison, ours, peer, goal, note in HIT_ROWS:
                if ours in us and peer in us:
                    rows.append(row("hits", f"{comparison}, {label}", us[ours], us[peer], "us", goal=goal, note=note))
            if size == 512:
                note = "goal from benchmarks/core.py"
                rows.append(
                    row("hits", "L1 get, 0.5 KB", us["ours_l1"], None, "us", goal=5.0, goal_on="ours", note=note)
                )
    return out


def _hits_one_size(scale: Scale, server: RedisServer, tmp: Path, value: JSON, raw: bytes) -> JSON:
    import redis

    tmp.mkdir(parents=True, exist_ok=True)
    server.flushall()
    status: JSON = {}
    stack = ExitStack()
    sync_mem: dict[str, Callable[[], Any]] = {}
    sync_io: dict[str, Callable[[], Any]] = {}
    async_mem: dict[str, Callable[[], Awaitable[Any]]] = {}
    async_io: dict[str, Callable[[], Awaitable[Any]]] = {}
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    try:
        # ours
        mem = stack.enter_context(CacheCore(disk=False, memory=True))
        l1l2 = stack.enter_context(CacheCore(disk=False, redis_url=server.url, namespace="l1l2"))
        l2 = stack.enter_context(CacheCore(disk=False, memory=False, redis_url=server.url))
        dsk = stack.enter_context(CacheCore(disk=True, memory=False, disk_path=tmp / "ours.sqlite3"))
        keys = {}
        for name, core in (("mem", mem), ("l1l2", l1l2), ("l2", l2), ("disk", dsk)):
            keys[name] = core.key_for(request("hits"))
            core.set(keys[name], value)
            core.flush()
        k_mem, k_l1l2, k_l2, k_disk = keys["mem"], keys["l1l2"], keys["l2"], keys["disk"]
        sync_mem["ours_l1"] = lambda: mem.get(k_mem)
        sync_mem["ours_l1_l2"] = lambda: l1l2.get(k_l1l2)
        sync_io["ours_l2"] = lambda: l2.get(k_l2)
        sync_io["ours_disk"] = lambda: dsk.get(k_disk)
        async_mem["ours_l1_async"] = lambda: mem.aget(k_mem)
        async_io["ours_l2_async"] = lambda: l2.aget(k_l2)

        # floors
        plain = {k_mem: raw}
        sync_mem["floor_dict"] = lambda: orjson.loads(plain[k_mem])
        rclient = redis.Redis.from_url(server.url)
        stack.callback(rclient.close)
        rclient.set("floor", raw)
        sync_io["floor_redis"] = lambda: orjson.loads(rclient.get("floor"))  # type: ignore[arg-type]
        aclient = redis.asyncio.Redis.from_url(server.url)

        async def floor_redis_async() -> Any:
            raw_value: Any = await aclient.get("floor")
            return orjson.loads(raw_value)

        async_io["floor_redis_async"] = floor_redis_async
        db = sqlite3.connect(tmp / "floor.sqlite3", isolation_level=None, check_same_thread=False)
        stack.callback(db.close)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v BLOB)")
        db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (k_disk, raw))
        sql = "SELECT v FROM t WHERE k = ?"
        sync_io["floor_sqlite"] = lambda: orjson.loads(db.execute(sql, (k_disk,)).fetchone()[0])

        # LiteLLM backends, fed what Cache.add_cache feeds them, read the way Cache.get_cache reads them
        try:
            _need_litellm(scale)
            from litellm.caching.caching import Cache as LiteLLMCache
            from litellm.caching.disk_cache import DiskCache
            from litellm.caching.dual_cache import DualCache
            from litellm.caching.in_memory_cache import InMemoryCache
            from litellm.caching.redis_cache import RedisCache
            from litellm.types.caching import LiteLLMCacheType

            logic = LiteLLMCache(type=LiteLLMCacheType.LOCAL).get_cache_logic
            local: Any = InMemoryCache()
            local.set_cache(k_mem, litellm_stored(value))
            sync_mem["litellm_local"] = lambda: logic(local.get_cache(k_mem), None)
            rc: Any = RedisCache(host="127.0.0.1", port=str(server.port))
            rc.set_cache("litellm", litellm_stored(value))
            sync_io["litellm_redis"] = lambda: logic(rc.get_cache("litellm"), None)
            dual = DualCache(in_memory_cache=InMemoryCache(), redis_cache=rc)
            dual.set_cache("litellm-dual", litellm_stored(value))
            sync_mem["litellm_dual"] = lambda: logic(dual.get_cache("litellm-dual"), None)
            dc: Any = DiskCache(disk_cache_dir=str(tmp / "litellm-disk"))
            dc.set_cache("litellm", litellm_stored(value))
            stack.callback(dc.disk_cache.close)
            sync_io["litellm_disk"] = lambda: logic(dc.get_cache("litellm"), None)
            status["litellm"] = {"status": "ok"}
        except ImportError as exc:
            status["litellm"] = _missing("litellm", exc)

        try:
            from gptcache import Cache as GPTCache
            from gptcache.adapter.api import get as gpt_get
            from gptcache.adapter.api import put as gpt_put
            from gptcache.manager import get_data_manager
            from gptcache.processor.pre import get_prompt

            gcache = GPTCache()
            gcache.init(
                pre_embedding_func=get_prompt,
                data_manager=get_data_manager(data_path=str(tmp / "gptcache.txt"), max_size=10_000),
            )
            gpt_put(k_mem, raw.decode(), cache_obj=gcache)
            sync_mem["gptcache"] = lambda: orjson.loads(gpt_get(k_mem, cache_obj=gcache))
            status["gptcache"] = {"status": "ok"}
        except Exception as exc:  # GPTCache drags in optional deps; any failure means "not here"
            status["gptcache"] = _missing("gptcache", exc)

        try:
            from cashews import Cache as Cashews

            cmem = Cashews()
            cmem.setup("mem://?size=10000")
            cred = Cashews()
            cred.setup(server.url)
            loop.run_until_complete(cmem.set(k_mem, value))
            loop.run_until_complete(cred.set("cashews", value))
            async_mem["cashews_mem"] = lambda: cmem.get(k_mem)
            async_io["cashews_redis"] = lambda: cred.get("cashews")
            status["cashews"] = {"status": "ok"}
        except ImportError as exc:
            status["cashews"] = _missing("cashews", exc)

        try:
            from aiocache import RedisCache as AioRedis
            from aiocache import SimpleMemoryCache

            amem = SimpleMemoryCache()
            ared = AioRedis(endpoint="127.0.0.1", port=server.port)
            loop.run_until_complete(amem.set(k_mem, value))
            loop.run_until_complete(ared.set("aiocache", value))
            async_mem["aiocache_mem"] = lambda: amem.get(k_mem)
            async_io["aiocache_redis"] = lambda: ared.get("aiocache")
            status["aiocache"] = {"status": "ok"}
        except ImportError as exc:
            status["aiocache"] = _missing("aiocache", exc)

        for name, fn in {**sync_mem, **sync_io}.items():
            got = fn()
            _check(name, getattr(got, "value", got), value)
        for name, afn in {**async_mem, **async_io}.items():
            got = loop.run_until_complete(afn())
            _check(name, getattr(got, "value", got), value)

        _warm(sync_mem)
        _warm(sync_io)
        us: dict[str, float] = {}
        us.update(paired_us(sync_mem, repeat=scale.repeat, number=scale.mem_number))
        us.update(paired_us(sync_io, repeat=scale.repeat, number=scale.io_number))
        us.update(paired_async_us(loop, async_mem, repeat=scale.repeat, number=scale.mem_number))
        us.update(paired_async_us(loop, async_io, repeat=scale.repeat, number=scale.io_number))
        levels = {
            "l2": l2.stats.snapshot()["tiers"]["l2"]["hits"],
            "disk": dsk.stats.snapshot()["tiers"]["disk"]["hits"],
        }
        if levels["l2"] < scale.io_number or levels["disk"] < scale.io_number:
            raise AssertionError(f"ours L2/disk variants were not served by their tier: {levels}")
        loop.run_until_complete(aclient.aclose())
        return {"us": us, "peer_status": status}
    finally:
        stack.close()


# -- whole litellm.completion hits for the LiteLLM caches litellm_door.py does not cover -----------------------
def section_litellm(scale: Scale) -> JSON:
    if scale.litellm_hits <= 0:
        return {"skipped": f"not run at scale {scale.name!r}", "rows": []}
    import litellm_door
    from litellm.caching.caching import Cache as LiteLLMCache
    from litellm.caching.dual_cache import DualCache
    from litellm.caching.in_memory_cache import InMemoryCache
    from litellm.caching.redis_cache import RedisCache
    from litellm.types.caching import LiteLLMCacheType

    from dspy_tiered_cache.integrations.litellm import TieredCache

    out: JSON = {"hits": scale.litellm_hits, "rows": []}
    with StandInProvider(latency=0.0) as provider, RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        ours_disk = TieredCache(memory=False, disk=True, disk_path=os.path.join(tmp, "ours.sqlite3"))
        theirs_disk = LiteLLMCache(type=LiteLLMCacheType.DISK, disk_cache_dir=os.path.join(tmp, "litellm-disk"))
        out.update(
            litellm_door._compare_hits(
                [("ours_disk", ours_disk), ("litellm_disk", theirs_disk)], provider, scale.litellm_hits
            )
        )
        ours_disk.close()
        ours_l1l2 = TieredCache(redis_url=server.url, disk=False)
        dual = DualCache(
            in_memory_cache=InMemoryCache(), redis_cache=RedisCache(host="127.0.0.1", port=str(server.port))
        )
        theirs_dual = LiteLLMCache(_backend=dual)
        out.update(
            litellm_door._compare_hits(
                [("ours_l1_l2", ours_l1l2), ("litellm_dual", theirs_dual)], provider, scale.litellm_hits
            )
        )
        ours_l1l2.close()
    import litellm

    litellm.cache = None
    for ours, theirs, what in (
        ("ours_disk", "litellm_disk", 'disk: TieredCache(disk) vs Cache(type="disk")'),
        ("ours_l1_l2", "litellm_dual", "L1+Redis: TieredCache vs DualCache backend"),
    ):
        for mode in ("sync", "async", "lookup"):
            out["rows"].append(
                row(
                    "litellm",
                    f"litellm.{'acompletion' if mode == 'async' else 'completion'} hit, {what}"
                    + (" (lookup only: Cache.get_cache)" if mode == "lookup" else ""),
                    out[ours][f"{mode}_ms"] * 1000,
                    out[theirs][f"{mode}_ms"] * 1000,
                    "us",
                    goal=1.0,
                )
            )
    return out


# -- (b) Zipf trace ------------------------------------------------------------------------------------------
def zipf_trace(requests: int, keys: int, seed: int = 7) -> list[str]:
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(keys)))
    names = [f"dtc:default:0:{i:016x}" for i in range(keys)]
    return [names[i] for i in random.Random(seed).choices(range(keys), cum_weights=cum, k=requests)]


def _sizes(keys: int, seed: int = 11) -> dict[str, int]:
    """Variable payload sizes (log-uniform 200 B .. 16 KB), fixed per key, for the byte-bounded trace."""
    rng = random.Random(seed)
    return {f"dtc:default:0:{i:016x}": int(200 * 80 ** rng.random()) for i in range(keys)}


def _simulate(trace: list[str], get: Callable[[str], Any], put: Callable[[str], None]) -> int:
    """Replay a trace through a cache (look up; store on a miss); the number of hits."""
    hits = 0
    for k in trace:
        if get(k) is not None:
            hits += 1
        else:
            put(k)
    return hits


def _ours_tier(cap: int, max_bytes: int = 10**15) -> MemoryTier:
    return MemoryTier(max_entries=cap, max_bytes=max_bytes)


def _lru_policies(cap: int) -> dict[str, tuple[Callable[[str], Any], Callable[[str], None], Any]]:
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


def section_zipf(scale: Scale) -> JSON:
    trace = zipf_trace(scale.zipf_requests, scale.zipf_keys)
    cap = scale.zipf_capacity
    n = len(trace)
    h = sum(1.0 / (i + 1) for i in range(scale.zipf_keys))
    oracle = sum(1.0 / (i + 1) for i in range(cap)) / h  # the top-`cap` keys always resident: the static optimum
    out: JSON = {"requests": n, "keys": scale.zipf_keys, "capacity": cap, "static_optimum": oracle, "policies": {}}
    pol: JSON = out["policies"]
    status: JSON = {}
    out["peer_status"] = status
    entry = Entry(b"{}", 0.0, None)

    def timed(name: str, replay: list[str], run: Callable[[list[str]], int], note: str) -> None:
        gc.collect()
        started = time.perf_counter()
        hits = run(replay)
        elapsed = time.perf_counter() - started
        pol[name] = {"hit_ratio": hits / len(replay), "us_per_request": elapsed / len(replay) * 1e6,
                     "requests": len(replay), "note": note}  # fmt: skip

    tier = _ours_tier(cap)
    timed("ours_wtinylfu", trace, lambda t: _simulate(t, tier.get, lambda k: tier.set(k, entry)), "MemoryTier")
    lrus = _lru_policies(cap)
    for name, (get, put, _) in lrus.items():
        timed(name, trace, lambda t, get=get, put=put: _simulate(t, get, put), name)  # type: ignore[misc]

    # Peers that cost several us per request replay a prefix of the same trace, against ours on that prefix.
    prefix = trace[: min(n, 200_000)]
    if scale.zipf_slow_peers:
        ptier = _ours_tier(cap)
        timed("ours_prefix", prefix, lambda t: _simulate(t, ptier.get, lambda k: ptier.set(k, entry)), "MemoryTier")
        try:
            _need_litellm(scale)
            from litellm.caching.in_memory_cache import InMemoryCache

            llc: Any = InMemoryCache(max_size_in_memory=cap)
            timed("litellm_inmemory", prefix, lambda t: _simulate(t, llc.get_cache, lambda k: llc.set_cache(k, 1)),
                  "LiteLLM InMemoryCache(max_size_in_memory=cap): evicts the earliest expiry")  # fmt: skip
        except ImportError as exc:
            status["litellm_inmemory"] = _missing("litellm", exc)
        try:
            from cashews import Cache as Cashews

            cm = Cashews()
            cm.setup(f"mem://?size={cap}")

            async def cashews_run(replay: list[str]) -> int:
                hits = 0
                get, put = cm.get, cm.set
                for k in replay:
                    if await get(k) is not None:
                        hits += 1
                    else:
                        await put(k, 1)
                return hits

            timed("cashews_mem", prefix, lambda t: asyncio.run(cashews_run(t)), "cashews mem://?size=cap (LRU)")
        except ImportError as exc:
            status["cashews_mem"] = _missing("cashews", exc)
    else:
        status["litellm_inmemory"] = status["cashews_mem"] = {"status": f"not run at scale {scale.name!r}"}
    status["aiocache_mem"] = {"status": "no size bound in aiocache SimpleMemoryCache: no hit ratio to compare"}

    # Hit cost of the tier get (a resident popular key), ours vs the LRUs, interleaved.
    lru_ct, od = lrus["cachetools_lru"][2], lrus["ordereddict_lru"][2]
    hot = next(k for k in trace if tier.get(k) is not None and k in od and k in lru_ct)

    def od_hit() -> Any:
        od.move_to_end(hot)
        return od[hot]

    cost = paired_us({"ours": lambda: tier.get(hot), "cachetools": lambda: lru_ct[hot], "ordereddict": od_hit},
                     repeat=scale.repeat, number=max(scale.mem_number * 5, 1000))  # fmt: skip
    out["hit_cost_us"] = cost

    # Bounded by bytes: same trace, variable sizes, the byte bound binding before the entry bound.
    import cachetools

    sizes = _sizes(scale.zipf_keys)
    mean_size = statistics.fmean(sizes.values()) + ENTRY_OVERHEAD
    max_bytes = int(cap * mean_size / 2)  # about cap/2 average entries fit: bytes bind, entries do not
    payloads: dict[int, bytes] = {}
    entries = {k: Entry(payloads.setdefault(size, b"x" * size), 0.0, None) for k, size in sizes.items()}
    btier = _ours_tier(cap, max_bytes)
    timed("ours_bytes", trace, lambda t: _simulate(t, btier.get, lambda k: btier.set(k, entries[k])),
          f"MemoryTier(max_entries={cap}, max_bytes={max_bytes})")  # fmt: skip
    blru: cachetools.LRUCache[str, int] = cachetools.LRUCache(maxsize=max_bytes, getsizeof=lambda size: size)
    timed("cachetools_lru_bytes", trace,
          lambda t: _simulate(t, blru.get, lambda k: blru.__setitem__(k, sizes[k] + ENTRY_OVERHEAD)),
          f"cachetools.LRUCache(maxsize={max_bytes}, getsizeof=size)")  # fmt: skip
    out["bytes_bound"] = {"max_bytes": max_bytes, "mean_entry_bytes": mean_size,
                          "ours_entries_at_end": btier.entries, "lru_entries_at_end": len(blru)}  # fmt: skip

    rows: list[JSON] = []
    ours_ratio = pol["ours_wtinylfu"]["hit_ratio"]
    shape = f"Zipf(1.0), {n:,} req / {scale.zipf_keys:,} keys, {cap:,} entries"
    # The 0.78 goal is for the full trace (LRU 0.735, Caffeine's W-TinyLFU 0.786 there); smaller traces warm up less.
    full_trace = (n, scale.zipf_keys, cap) == (1_000_000, 100_000, 10_000)
    note = f"static optimum (top-{cap:,} keys) {oracle:.3f}"
    goal = 0.78 if full_trace else None
    rows.append(row("zipf", f"hit ratio vs cachetools LRU, {shape}", ours_ratio, pol["cachetools_lru"]["hit_ratio"],
                    "ratio", better="higher", goal=goal, goal_on="ours", note=note))  # fmt: skip
    rows.append(row("zipf", "hit ratio vs OrderedDict LRU", ours_ratio, pol["ordereddict_lru"]["hit_ratio"], "ratio",
                    better="higher", goal=1.0))  # fmt: skip
    for name, what in (("litellm_inmemory", "LiteLLM InMemoryCache"), ("cashews_mem", "cashews mem:// (LRU)")):
        if name in pol:
            rows.append(row("zipf", f"hit ratio on the first {len(prefix):,} requests vs {what}",
                            pol["ours_prefix"]["hit_ratio"], pol[name]["hit_ratio"], "ratio", better="higher",
                            goal=1.0))  # fmt: skip
    rows.append(row("zipf", "hit ratio, bounded by bytes (sizes 0.2-16 KB) vs cachetools LRU by bytes",
                    pol["ours_bytes"]["hit_ratio"], pol["cachetools_lru_bytes"]["hit_ratio"], "ratio",
                    better="higher", goal=1.0))  # fmt: skip
    rows.append(row("zipf", "tier get of a resident key vs cachetools LRUCache[key]", cost["ours"],
                    cost["cachetools"], "us", goal=1.5, goal_on="ours",
                    note="ours: a dict read + a read-buffer append; the policy catches up in batches"))  # fmt: skip
    rows.append(row("zipf", "tier get of a resident key vs OrderedDict move_to_end + get", cost["ours"],
                    cost["ordereddict"], "us"))  # fmt: skip
    rows.append(row("zipf", "whole trace, us per request (get, set on miss) vs cachetools LRU",
                    pol["ours_wtinylfu"]["us_per_request"], pol["cachetools_lru"]["us_per_request"], "us"))  # fmt: skip
    out["rows"] = rows
    return out


# -- (c) stampede --------------------------------------------------------------------------------------------
STAMPEDE_REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "stampede benchmark"}]}


def _ask(base_url: str) -> JSON:
    body = json.dumps({"model": "gpt-4o-mini", "messages": STAMPEDE_REQUEST["messages"]}).encode()
    req = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _content(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    return str(value["choices"][0]["message"]["content"])


def _stampede_child(
    kinds: tuple[str, ...], redis_url: str, base_url: str, threads: int, ready: Any, gos: dict[str, Any], results: Any
) -> None:
    """One process of the stampede, for every variant in turn: build the cache, report ready, wait for the start
    signal, fire ``threads`` identical requests. One set of processes serves all variants, so each process pays
    its imports (LiteLLM's take seconds) once."""
    for kind in kinds:
        answers: list[str] = []
        errors: list[str] = []
        announced: list[bool] = []

        def announce(kind: str = kind, announced: list[bool] = announced) -> None:
            if not announced:
                announced.append(True)
                ready.put((kind, os.getpid()))

        try:
            if kind in ("cashews", "cashews_lock", "aiocache", "aiocache_stampede"):
                _stampede_async(kind, redis_url, base_url, threads, announce, gos[kind], answers, errors)
            else:
                call = _stampede_sync_call(kind, redis_url, base_url)
                announce()
                gos[kind].wait(180)

                def one(
                    call: Callable[[], str] = call, answers: list[str] = answers, errors: list[str] = errors
                ) -> None:
                    try:
                        answers.append(call())
                    except Exception as exc:
                        errors.append(repr(exc)[:200])

                pool = [threading.Thread(target=one) for _ in range(threads)]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join(180)
        except Exception as exc:
            errors.append(repr(exc)[:300])
            announce()
            gos[kind].wait(180)
        results.put((kind, answers, errors))


def _stampede_sync_call(kind: str, redis_url: str, base_url: str) -> Callable[[], str]:
    if kind in ("ours_core", "ours_no_single_flight"):
        off = kind == "ours_no_single_flight"  # the same cache with single-flight switched off: get, miss, set
        core = CacheCore(redis_url=redis_url, disk=False, single_flight=not off, distributed_single_flight=not off)
        key = core.key_for(STAMPEDE_REQUEST)
        return lambda: _content(core.get_or_compute(key, lambda: _ask(base_url))[0])
    import litellm

    if kind == "ours_litellm_door":
        from dspy_tiered_cache.integrations.litellm import TieredCache

        litellm.cache = TieredCache(redis_url=redis_url, disk=False)
    elif kind == "litellm_redis":
        from litellm.caching.caching import Cache as LiteLLMCache
        from litellm.types.caching import LiteLLMCacheType

        host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        litellm.cache = LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=port)
    else:
        raise ValueError(kind)
    kwargs = {**STAMPEDE_REQUEST, "api_base": base_url, "api_key": "sk-bench", "num_retries": 0}
    litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": "warm up"}], api_base=base_url, api_key="sk-bench"
    )  # import LiteLLM's whole call path before the burst
    return lambda: _content(litellm.completion(**kwargs))


def _stampede_async(
    kind: str,
    redis_url: str,
    base_url: str,
    tasks: int,
    announce: Callable[[], None],
    go: Any,
    answers: list[str],
    errors: list[str],
) -> None:
    """The asyncio peers, each used the way its docs show: a decorated coroutine that calls upstream."""
    from concurrent.futures import ThreadPoolExecutor

    async def upstream() -> JSON:
        return await asyncio.to_thread(_ask, base_url)

    fetch: Callable[[], Awaitable[JSON]]
    if kind.startswith("cashews"):
        from cashews import Cache as Cashews

        cache = Cashews()
        cache.setup(redis_url)
        # protected=True (the default) is cashews' in-process "thunder protection"; lock=True adds a Redis lock.
        fetch = cache(ttl=60, key="stampede", lock=kind == "cashews_lock")(upstream)
        ping: Callable[[], Awaitable[Any]] = cache.ping
    else:
        from aiocache import RedisCache as AioRedis
        from aiocache import cached, cached_stampede

        host, port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        options: JSON = {"ttl": 60, "key": "stampede", "cache": AioRedis, "endpoint": host, "port": int(port)}
        decorator = cached_stampede(lease=5, **options) if kind == "aiocache_stampede" else cached(**options)
        fetch = decorator(upstream)
        probe = AioRedis(endpoint=host, port=int(port))
        ping = lambda: probe.exists("stampede")  # noqa: E731

    async def one() -> None:
        try:
            answers.append(_content(await fetch()))
        except Exception as exc:
            errors.append(repr(exc)[:200])

    async def burst() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(tasks))
        await ping()
        announce()
        await asyncio.to_thread(go.wait, 120)
        await asyncio.gather(*(one() for _ in range(tasks)))

    asyncio.run(burst())


STAMPEDE_NOTES = {
    "aiocache_stampede": "aiocache's RedLock waits on an in-process event: other processes (and late arrivals) "
    "go upstream",
    "cashews": "thunder protection joins concurrent calls within one process only",
    "cashews_lock": "a Redis lock, waited on by polling",
}


def section_stampede(scale: Scale) -> JSON:
    ctx = multiprocessing.get_context("spawn")
    total = scale.stampede_processes * scale.stampede_threads
    out: JSON = {
        "processes": scale.stampede_processes,
        "per_process": scale.stampede_threads,
        "upstream_latency_s": scale.stampede_latency,
        "variants": {},
    }
    # The optional peers (the [bench] extra) may be absent; LiteLLM is a dependency of ours.
    needs = {"aiocache": "aiocache", "aiocache_stampede": "aiocache", "cashews": "cashews", "cashews_lock": "cashews"}
    missing: dict[str, str] = {}
    for kind in scale.stampede_variants:
        if kind in needs:
            try:
                importlib.import_module(needs[kind])
            except ImportError as exc:
                missing[kind] = repr(exc)[:200]
    out["peer_status"] = {kind: {"status": "not installed", "error": err} for kind, err in missing.items()}
    kinds = tuple(k for k in scale.stampede_variants if k not in missing)
    with StandInProvider(latency=scale.stampede_latency) as provider, RedisServer() as server:
        ready, results = ctx.Queue(), ctx.Queue()
        gos = {kind: ctx.Event() for kind in kinds}
        procs = [
            ctx.Process(
                target=_stampede_child,
                args=(kinds, server.url, provider.base_url, scale.stampede_threads, ready, gos, results),
            )
            for _ in range(scale.stampede_processes)
        ]
        for p in procs:
            p.start()
        try:
            waited = time.perf_counter()
            for kind in kinds:
                for _ in procs:
                    got_kind, _pid = ready.get(timeout=180)
                    assert got_kind == kind, (got_kind, kind)
                server.flushall()  # nothing from the previous variant (or the warm-up) may be a hit
                provider.reset()
                started = time.perf_counter()
                gos[kind].set()
                collected = [results.get(timeout=240) for _ in procs]
                elapsed = time.perf_counter() - started
                answers = [a for _, got, _ in collected for a in got]
                errors = [e for _, _, errs in collected for e in errs]
                out["variants"][kind] = {
                    "upstream_calls": provider.request_count,
                    "answers": len(answers),
                    "distinct_answers": len(set(answers)),
                    "errors": errors[:5],
                    "wall_s": elapsed,
                    "setup_s": started - waited,  # from the previous variant's end to every process ready
                }
                waited = time.perf_counter()
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()
    v = out["variants"]
    labels = {
        "ours_no_single_flight": "the same core with single_flight=False (get, miss, set)",
        "litellm_redis": 'LiteLLM Cache(type="redis") via litellm.completion',
        "ours_litellm_door": "ours through the LiteLLM door (TieredCache) via litellm.completion",
        "aiocache": "aiocache @cached(RedisCache)",
        "aiocache_stampede": "aiocache @cached_stampede(RedisCache, lease=5)",
        "cashews": "cashews redis @cache (in-process thunder protection only)",
        "cashews_lock": "cashews redis @cache(lock=True)",
    }
    rows = []
    what = f"{total} identical misses, {scale.stampede_processes} processes: upstream calls"
    for kind, label in labels.items():
        if kind != "ours_litellm_door" and kind in v and "ours_core" in v:
            rows.append(
                row(
                    "stampede",
                    f"{what}: ours (core get_or_compute) vs {label}",
                    v["ours_core"]["upstream_calls"],
                    v[kind]["upstream_calls"],
                    "calls",
                    goal=1,
                    goal_on="ours",
                    note=STAMPEDE_NOTES.get(kind, ""),
                )
            )
    if "ours_litellm_door" in v and "litellm_redis" in v:
        rows.append(
            row(
                "stampede",
                f"{what}: {labels['ours_litellm_door']} vs {labels['litellm_redis']}",
                v["ours_litellm_door"]["upstream_calls"],
                v["litellm_redis"]["upstream_calls"],
                "calls",
                goal=1,
                goal_on="ours",
                note="LiteLLM calls its cache get-then-set: the door cannot join in-flight misses",
            )
        )
    for kind, data in v.items():
        if data["errors"] or data["answers"] != total:
            rows.append(
                row(
                    "stampede",
                    f"{kind}: answers received",
                    data["answers"],
                    total,
                    "calls",
                    goal=1.0,
                    better="higher",
                    note="; ".join(data["errors"])[:200],
                )
            )
    out["rows"] = rows
    return out


# -- (d) Redis unreachable -----------------------------------------------------------------------------------
def _capped_sync(fn: Callable[[], Any], cap: float) -> tuple[float, bool]:
    """Seconds one call took, or ``cap`` and True if it had not returned by then (the thread is abandoned)."""
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except Exception:
            pass
        finally:
            done.set()

    started = time.perf_counter()
    threading.Thread(target=run, daemon=True).start()
    if done.wait(cap):
        return time.perf_counter() - started, False
    return cap, True


def _series(call: Callable[[int], tuple[float, bool]], n: int, budget: float) -> JSON:
    samples: list[float] = []
    capped = False
    started = time.perf_counter()
    for i in range(n):
        seconds, capped = call(i)
        samples.append(seconds * 1000.0)
        if capped or time.perf_counter() - started > budget:
            break
    return {
        "calls": len(samples),
        "first_ms": samples[0],
        "median_ms": statistics.median(samples),
        "max_ms": max(samples),
        "capped": capped,
        "samples_ms": [round(s, 3) for s in samples],
    }


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def _down_clients(scale: Scale, url: str, loop: asyncio.AbstractEventLoop, status: JSON) -> JSON:
    """One lookup function per cache (call ``i`` looks up a fresh key: a miss), each capped at ``down_cap_s``."""
    cap = scale.down_cap_s
    calls: dict[str, Callable[[int], tuple[float, bool]]] = {}
    core = CacheCore(redis_url=url, disk=False, breaker_reset_s=60.0)

    def ours(i: int) -> tuple[float, bool]:
        started = time.perf_counter()
        core.get(core.key_for(request(f"ours-{url}-{i}")))  # the door's path: key (reads the generation) + get
        return time.perf_counter() - started, False

    calls["ours"] = ours
    host, port = _host_port(url)
    if scale.down_litellm:
        try:
            from litellm.caching.caching import Cache as LiteLLMCache
            from litellm.types.caching import LiteLLMCacheType

            lc = LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=str(port))
            calls["litellm"] = lambda i: _capped_sync(lambda: lc.get_cache(**request(f"ll-{url}-{i}")), cap)
        except ImportError as exc:
            status["litellm"] = _missing("litellm", exc)

    async def capped(coro: Awaitable[Any]) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(coro, cap)
        except asyncio.TimeoutError:  # ours (the cap) or the peer's own timeout
            elapsed = time.perf_counter() - started
            return elapsed, elapsed >= cap * 0.99
        except Exception:
            pass
        return time.perf_counter() - started, False

    try:
        from cashews import Cache as Cashews

        cc = Cashews()
        cc.setup(url)
        calls["cashews"] = lambda i: loop.run_until_complete(capped(cc.get(f"c-{url}-{i}")))
    except ImportError as exc:
        status["cashews"] = _missing("cashews", exc)
    try:
        from aiocache import RedisCache as AioRedis

        ac = AioRedis(endpoint=host, port=port)
        calls["aiocache"] = lambda i: loop.run_until_complete(capped(ac.get(f"a-{url}-{i}")))
    except ImportError as exc:
        status["aiocache"] = _missing("aiocache", exc)
    return {"calls": calls, "close": core.close}


def section_unreachable(scale: Scale) -> JSON:
    """Lookups that miss while Redis refuses connections, or hangs (SIGSTOP) after the caches were connected.

    The frozen case builds and warms every client while Redis still answers, then freezes it: what an application
    sees when its Redis hangs under it. The added latency is the median call against a dead Redis minus the
    median against a healthy one; peers are timed for a few calls only (LiteLLM's take seconds each).
    """
    out: JSON = {"cap_s": scale.down_cap_s, "variants": {}, "peer_status": {}}
    v: JSON = out["variants"]
    loop = asyncio.new_event_loop()
    try:
        with RedisServer() as healthy, RedisServer() as frozen:
            targets = {"healthy": healthy.url, "refused": f"redis://127.0.0.1:{free_port()}/0", "frozen": frozen.url}
            for state, url in targets.items():
                clients = _down_clients(scale, url, loop, out["peer_status"])
                calls: dict[str, Callable[[int], tuple[float, bool]]] = clients["calls"]
                if state == "frozen":
                    for call in calls.values():
                        call(-1)  # connected and warm
                    frozen.pause()
                try:
                    for name, call in calls.items():
                        n = scale.down_calls_ours if name == "ours" or state == "healthy" else scale.down_calls_peer
                        budget = 60.0 if name == "ours" or state == "healthy" else scale.down_budget_s
                        v[f"{name}_{state}"] = _series(call, n, budget)
                finally:
                    if state == "frozen":
                        frozen.resume()
                    clients["close"]()
            if scale.down_litellm:  # building a LiteLLM Redis cache while Redis hangs
                frozen.pause()
                try:
                    out["construct_frozen_ms"] = _construct_while_frozen(scale, frozen.url)
                finally:
                    frozen.resume()
    finally:
        loop.close()
    rows = []
    for state, what in (("refused", "connection refused"), ("frozen", "server frozen (SIGSTOP)")):
        ours = v.get(f"ours_{state}")
        if ours is None:
            continue
        ours_added = max(0.0, ours["median_ms"] - v["ours_healthy"]["median_ms"])
        note = f"median {ours['median_ms']:.2f} ms; then the breaker answers (timeouts: connect 250 ms, op 150 ms)"
        rows.append(row("unreachable", f"Redis {what}: our slowest call", ours["max_ms"], None, "ms", goal=400.0,
                        goal_on="ours", note=note))  # fmt: skip
        for peer, label in (
            ("litellm", 'LiteLLM Cache(type="redis").get_cache'),
            ("cashews", "cashews redis get"),
            ("aiocache", "aiocache RedisCache get"),
        ):
            data = v.get(f"{peer}_{state}")
            if data is None:
                continue
            peer_added = max(0.0, data["median_ms"] - v[f"{peer}_healthy"]["median_ms"])
            note = f"peer: {data['calls']} call(s), first {data['first_ms']:,.0f} ms" + (
                f"; we stopped waiting at {scale.down_cap_s:g} s" if data["capped"] else ""
            )
            what_row = f"Redis {what}: added latency per call (median) vs {label}"
            rows.append(row("unreachable", what_row, ours_added, peer_added, "ms", goal=1.0, goal_on="ours",
                            peer_capped=data["capped"], note=note))  # fmt: skip
    built = out.get("construct_frozen_ms")
    if built:
        rows.append(row("unreachable", 'Redis frozen: constructing the cache vs LiteLLM Cache(type="redis")',
                        built["ours"], built["litellm"], "ms", goal=50.0, goal_on="ours",
                        peer_capped=built["litellm_capped"], note="ours connects lazily; LiteLLM's constructor "
                        "talks to Redis with no timeout"))  # fmt: skip
    out["rows"] = rows
    return out


def _construct_while_frozen(scale: Scale, url: str) -> JSON:
    started = time.perf_counter()
    CacheCore(redis_url=url, disk=False).close()
    ours_ms = (time.perf_counter() - started) * 1000
    host, port = _host_port(url)

    def build() -> None:
        from litellm.caching.caching import Cache as LiteLLMCache
        from litellm.types.caching import LiteLLMCacheType

        LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=str(port))

    seconds, capped = _capped_sync(build, scale.down_cap_s)
    return {"ours": ours_ms, "litellm": seconds * 1000, "litellm_capped": capped}


# -- (e) async throughput of L1 hits -------------------------------------------------------------------------
def section_throughput(scale: Scale) -> JSON:
    value = response(512, seed=3)
    out: JSON = {"tasks": scale.throughput_tasks, "seconds_per_round": scale.throughput_seconds, "peer_status": {}}
    core = CacheCore(disk=False)
    keys = [core.key_for(request(i)) for i in range(1000)]
    raw = orjson.dumps(value)
    plain = dict.fromkeys(keys, raw)
    loop = asyncio.new_event_loop()
    gets: dict[str, Callable[[str], Awaitable[Any]]] = {}
    for k in keys:
        core.set(k, value)
    gets["ours_aget"] = core.aget

    async def floor(k: str) -> Any:
        return orjson.loads(plain[k])

    gets["floor_dict"] = floor
    try:
        from cashews import Cache as Cashews

        cm = Cashews()
        cm.setup("mem://?size=10000")
        for k in keys:
            loop.run_until_complete(cm.set(k, value))
        gets["cashews_mem"] = cm.get
    except ImportError as exc:
        out["peer_status"]["cashews"] = _missing("cashews", exc)
    try:
        from aiocache import SimpleMemoryCache

        am = SimpleMemoryCache()
        for k in keys:
            loop.run_until_complete(am.set(k, value))
        gets["aiocache_mem"] = am.get
    except ImportError as exc:
        out["peer_status"]["aiocache"] = _missing("aiocache", exc)

    async def run(get: Callable[[str], Awaitable[Any]], seconds: float) -> tuple[int, float, float]:
        deadline = time.perf_counter() + seconds
        counts = [0] * scale.throughput_tasks

        async def worker(i: int) -> None:
            ks = keys[i % 10 :] + keys[: i % 10]
            while time.perf_counter() < deadline:
                for k in ks[:100]:
                    await get(k)
                counts[i] += 100
                await asyncio.sleep(0)  # let the other tasks run: aget of an L1 hit never suspends by itself

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(scale.throughput_tasks)))
        return sum(counts), time.perf_counter() - wall, time.process_time() - cpu

    rates: dict[str, list[float]] = {name: [] for name in gets}
    wall_rates: dict[str, list[float]] = {name: [] for name in gets}
    rounds = 3
    for get in gets.values():  # warm up
        loop.run_until_complete(run(get, scale.throughput_seconds / 10))
    for _ in range(rounds):
        for name, get in gets.items():
            ops, wall, cpu = loop.run_until_complete(run(get, scale.throughput_seconds / rounds))
            rates[name].append(ops / max(cpu, 1e-9))
            wall_rates[name].append(ops / wall)
    loop.close()
    core.close()
    out["ops_per_cpu_s"] = {name: statistics.median(r) for name, r in rates.items()}
    out["ops_per_wall_s"] = {name: statistics.median(r) for name, r in wall_rates.items()}
    ops = out["ops_per_cpu_s"]
    rows = [
        row(
            "throughput",
            f"async L1 hits per CPU-second ({scale.throughput_tasks} tasks, 0.5 KB) vs dict + decode (floor)",
            ops["ours_aget"],
            ops["floor_dict"],
            "ops/s",
            better="higher",
        )
    ]
    for name, label in (("cashews_mem", "cashews mem://"), ("aiocache_mem", "aiocache SimpleMemoryCache")):
        if name in ops:
            rows.append(
                row(
                    "throughput",
                    f"async L1 hits per CPU-second vs {label}",
                    ops["ours_aget"],
                    ops[name],
                    "ops/s",
                    better="higher",
                    goal=1.0,
                    note="peer returns the stored object (no decode, no copy)",
                )
            )
    out["rows"] = rows
    return out


# -- (f) memory per entry ------------------------------------------------------------------------------------
def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    """Bytes still allocated after ``build()`` (whose result is kept alive while measuring)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    kept = build()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, kept


def _rss() -> int:
    """Resident set size in bytes (Linux), a cross-check on tracemalloc that sees what malloc really kept."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _memory_values(n: int) -> tuple[list[str], list[bytes]]:
    """``n`` distinct ~2 KB responses (1.5-3 KB) as they arrive from the network (JSON bytes), and their keys."""
    rng = random.Random(5)
    raws = [orjson.dumps(response(rng.randint(1536, 3072), seed=i)) for i in range(n)]
    raws = [bytes(memoryview(r)) for r in raws]  # exact-size copies: orjson's own output is over-allocated
    return [f"dtc:default:0:{i:064x}" for i in range(n)], raws


def _child_result(proc: Any, queue: Any, timeout: float) -> Any:
    """The one value a spawned child puts on ``queue``; fails fast (with its exit code) if the child died."""
    import queue as queue_module

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = queue.get(timeout=0.2)
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"child process exited with status {proc.exitcode} before reporting") from None
            continue
        proc.join(30)
        return value
    proc.kill()
    raise TimeoutError(f"child process did not report within {timeout:.0f} s")


def _rss_child(kind: str, n: int, queue: Any) -> None:
    """Resident-set growth per entry in a fresh process, where no freed memory can be reused to hide growth."""
    keys, raws = _memory_values(n)
    gc.collect()
    core = CacheCore(disk=False, memory_max_entries=n + 10) if kind == "ours_l1" else None
    kept: dict[str, Any] = {}
    before = _rss()
    for k, r in zip(keys, raws, strict=True):
        if core is not None:
            core.set(k, orjson.loads(r))
        else:
            kept[k] = orjson.loads(r)
    gc.collect()
    queue.put((_rss() - before) / n)


def section_memory(scale: Scale) -> JSON:
    n = scale.memory_entries
    keys, raws = _memory_values(n)
    compressed = [zstandard.compress(r, 3) for r in raws]
    out: JSON = {
        "entries": n,
        "mean_json_bytes": statistics.fmean(map(len, raws)),
        "mean_zstd_bytes": statistics.fmean(map(len, compressed)),
        "share_over_default_threshold": sum(len(r) >= 2048 for r in raws) / n,
        "memory_bytes_per_entry": {},
        "redis_bytes_per_entry": {},
        "peer_status": {},
    }
    mem: JSON = out["memory_bytes_per_entry"]

    # The cache object itself (its frequency sketch is ~26 B per entry of capacity) is built outside the window
    # and reported apart, so small runs are not dominated by fixed costs.
    fixed, l1core = _traced(lambda: CacheCore(disk=False, memory_max_entries=n + 10))
    out["ours_fixed_bytes"] = fixed

    def ours() -> None:
        for k, r in zip(keys, raws, strict=True):
            l1core.set(k, orjson.loads(r))

    used = _traced(ours)[0]
    assert l1core.memory is not None and l1core.memory.entries == n
    mem["ours_l1"] = used / n
    out["ours_l1_accounted_bytes_per_entry"] = l1core.memory.bytes / n  # what memory_max_bytes is checked against

    def plain() -> Any:
        return {k: orjson.loads(r) for k, r in zip(keys, raws, strict=True)}

    mem["dict_of_objects"] = _traced(plain)[0] / n
    rss: JSON = {}
    out["rss_bytes_per_entry"] = rss
    ctx = multiprocessing.get_context("spawn")
    for kind in ("ours_l1", "dict_of_objects"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_rss_child, args=(kind, n, queue))
        proc.start()
        rss[kind] = _child_result(proc, queue, 60.0)
    pairs = list(zip(keys, raws, strict=True))
    mem["dict_of_orjson_output"] = _traced(lambda: {k: orjson.dumps(orjson.loads(r)) for k, r in pairs})[0] / n
    # Exact-size copies (``bytes(memoryview(b))``): orjson and zstandard return bytes objects whose allocation is
    # several times their length, so these are what JSON bytes and zstd frames cost when stored carefully.
    mem["dict_of_json_bytes"] = (
        _traced(lambda: {k: bytes(memoryview(orjson.dumps(orjson.loads(r)))) for k, r in pairs})[0] / n
    )
    mem["dict_of_zstd_bytes"] = (
        _traced(lambda: {k: bytes(memoryview(zstandard.compress(r, 3))) for k, r in pairs})[0] / n
    )
    try:
        from cashews import Cache as Cashews

        def cashews_mem() -> Any:
            cm = Cashews()
            cm.setup(f"mem://?size={n + 10}")

            async def fill() -> None:
                for k, r in zip(keys, raws, strict=True):
                    await cm.set(k, orjson.loads(r))

            asyncio.run(fill())
            return cm

        mem["cashews_mem"] = _traced(cashews_mem)[0] / n
    except ImportError as exc:
        out["peer_status"]["cashews"] = _missing("cashews", exc)
    try:
        _need_litellm(scale)
        from litellm.caching.in_memory_cache import InMemoryCache

        def litellm_mem() -> Any:
            lc: Any = InMemoryCache(max_size_in_memory=n + 10, max_size_per_item=10_000)
            for k, r in zip(keys, raws, strict=True):
                lc.set_cache(k, litellm_stored(orjson.loads(r)))
            return lc

        mem["litellm_inmemory"] = _traced(litellm_mem)[0] / n
    except ImportError as exc:
        out["peer_status"]["litellm"] = _missing("litellm", exc)
    l1core.close()
    l1core.clear()
    gc.collect()

    # Decompression cost per hit, to weigh what a compressed L1 would cost.
    sample_c, sample_r = compressed[0], raws[0]
    dctx = zstandard.ZstdDecompressor()
    out["decode_us"] = paired_us(
        {"json": lambda: orjson.loads(sample_r), "zstd+json": lambda: orjson.loads(dctx.decompress(sample_c))},
        repeat=scale.repeat,
        number=scale.mem_number,
    )

    red: JSON = out["redis_bytes_per_entry"]
    with RedisServer() as server:
        client = server.client()

        def used_memory() -> int:
            return int(client.info("memory")["used_memory"])

        def redis_fill(name: str, fill: Callable[[], None]) -> None:
            server.flushall()
            time.sleep(0.05)
            before = used_memory()
            fill()
            red[name] = (used_memory() - before) / n

        for name, threshold in (("ours_uncompressed", 0), ("ours_default_threshold", 2048), ("ours_compress_all", 64)):

            def fill_ours(threshold: int = threshold) -> None:
                with CacheCore(
                    redis_url=server.url,
                    disk=False,
                    memory=False,
                    compression_threshold=threshold,
                    telemetry=False,
                    write_queue_size=max(n, 1000),
                ) as c:
                    for k, r in zip(keys, raws, strict=True):
                        c.set(k, orjson.loads(r))
                    c.flush(60.0)

            redis_fill(name, fill_ours)
        try:
            _need_litellm(scale)
            from litellm.caching.redis_cache import RedisCache

            rcache: Any = RedisCache(host="127.0.0.1", port=str(server.port))

            def fill_litellm() -> None:
                for k, r in zip(keys, raws, strict=True):
                    rcache.set_cache(k, litellm_stored(orjson.loads(r)))

            redis_fill("litellm_redis", fill_litellm)
        except ImportError as exc:
            out["peer_status"]["litellm"] = _missing("litellm", exc)
        try:
            from cashews import Cache as Cashews

            cr = Cashews()
            cr.setup(server.url)

            async def cashews_fill() -> None:
                for k, r in zip(keys, raws, strict=True):
                    await cr.set(k, orjson.loads(r))

            redis_fill("cashews_redis", lambda: asyncio.run(cashews_fill()))
        except ImportError as exc:
            out["peer_status"]["cashews"] = _missing("cashews", exc)
        client.close()

    what = f"{n:,} entries of ~{out['mean_json_bytes'] / 1024:.1f} KB"
    accounted = out["ours_l1_accounted_bytes_per_entry"]
    decode = out["decode_us"]
    rows = [
        row("memory", f"L1 bytes per entry ({what}) vs a dict of decoded objects", mem["ours_l1"],
            mem["dict_of_objects"], "B", goal=1.0, note="ours holds JSON bytes, never live objects"),
        row("memory", "L1 bytes per entry vs a dict of exact-size JSON bytes (what L1 should cost)", mem["ours_l1"],
            mem["dict_of_json_bytes"], "B", goal=1.2,
            note=f"memory_max_bytes counts {accounted:,.0f} B per entry"),
        row("memory", "L1 bytes per entry vs a dict of orjson.dumps() results as returned", mem["ours_l1"],
            mem["dict_of_orjson_output"], "B",
            note="orjson's bytes objects keep an allocation several times their length"),
        row("memory", "L1 resident memory (RSS) per entry vs a dict of decoded objects", rss["ours_l1"],
            rss["dict_of_objects"], "B", goal=1.0, note="RSS growth in a fresh process: a cross-check"),
        row("memory", "L1 bytes per entry vs a dict of zstd frames (what compressing L1 would give)", mem["ours_l1"],
            mem["dict_of_zstd_bytes"], "B",
            note=f"L1 does not compress; zstd + decode costs {decode['zstd+json']:.1f} us vs {decode['json']:.1f} us "
            "per hit"),
    ]  # fmt: skip
    for name, label in (("cashews_mem", "cashews mem://"), ("litellm_inmemory", "LiteLLM InMemoryCache")):
        if name in mem:
            rows.append(row("memory", f"L1 bytes per entry vs {label}", mem["ours_l1"], mem[name], "B", goal=1.0))
    rows.append(
        row(
            "memory",
            "Redis bytes per entry: ours (default compression_threshold=2048) vs uncompressed",
            red["ours_default_threshold"],
            red["ours_uncompressed"],
            "B",
            note=f"{out['share_over_default_threshold']:.0%} of these responses reach the threshold",
        )
    )
    rows.append(
        row(
            "memory",
            "Redis bytes per entry: ours compressing everything vs uncompressed",
            red["ours_compress_all"],
            red["ours_uncompressed"],
            "B",
        )
    )
    for name, label in (("litellm_redis", "LiteLLM RedisCache"), ("cashews_redis", "cashews redis (pickle)")):
        if name in red:
            rows.append(
                row(
                    "memory",
                    f"Redis bytes per entry: ours (default) vs {label}",
                    red["ours_default_threshold"],
                    red[name],
                    "B",
                    goal=1.0,
                )
            )
    out["rows"] = rows
    return out


SECTIONS: dict[str, Callable[[Scale], JSON]] = {
    "hits": section_hits,
    "litellm": section_litellm,
    "zipf": section_zipf,
    "stampede": section_stampede,
    "unreachable": section_unreachable,
    "throughput": section_throughput,
    "memory": section_memory,
}


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The peers log every Redis failure at ERROR; the unreachable section provokes hundreds of them."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def run_section(name: str, scale: Scale) -> JSON:
    started = time.perf_counter()
    with _quiet_logs():
        result = SECTIONS[name](scale)
    result["seconds"] = time.perf_counter() - started
    result["scale"] = asdict(scale)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=[*SECTIONS, "all"])
    parser.add_argument("--scale", choices=list(SCALES), default="full")
    parser.add_argument("--json-out", help="write the result here (default: print JSON to stdout)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    names = list(SECTIONS) if args.section == "all" else [args.section]
    result = {name: run_section(name, scale) for name in names}
    doc = result[names[0]] if len(names) == 1 else result
    text_out = json.dumps(doc, indent=2, default=str)
    if args.json_out:
        Path(args.json_out).write_text(text_out)
    else:
        print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

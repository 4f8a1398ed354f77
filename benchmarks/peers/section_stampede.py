"""Section ``stampede``: N concurrent identical misses across processes; how many reach upstream.

Every variant runs in the same spawned processes, in turn: each builds its cache, reports ready, waits for the
start signal, and fires its threads (or asyncio tasks) at once against a slow stand-in provider."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer
from peers import aiocache_cache, cashews_cache, litellm_caches, ours
from peers.common import JSON, Scale, answer_text, ask_upstream, row

#: kind -> the peer module building one synchronous caller of that kind.
SYNC_CALLS: dict[str, Callable[[str, str, str], Callable[[], str]]] = {
    **dict.fromkeys(ours.STAMPEDE_KINDS, ours.stampede_call),
    **dict.fromkeys(litellm_caches.STAMPEDE_KINDS, litellm_caches.stampede_call),
}
#: kind -> the asyncio peer module, used the way its docs show: a decorated coroutine that calls upstream.
ASYNC_PEERS: dict[str, Any] = {
    **dict.fromkeys(cashews_cache.STAMPEDE_KINDS, cashews_cache),
    **dict.fromkeys(aiocache_cache.STAMPEDE_KINDS, aiocache_cache),
}


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
            if kind in ASYNC_PEERS:
                _stampede_async(kind, redis_url, base_url, threads, announce, gos[kind], answers, errors)
            else:
                call = SYNC_CALLS[kind](kind, redis_url, base_url)
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
        return await asyncio.to_thread(ask_upstream, base_url)

    fetch, ping = ASYNC_PEERS[kind].stampede_fetch(kind, redis_url, upstream)

    async def one() -> None:
        try:
            answers.append(answer_text(await fetch()))
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
